"""The evaluation stage: pseudo-bulk, metrics, baselines, host-side scoring."""
