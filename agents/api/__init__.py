"""HarmonyCell from Python (``import harmonycell as hc``), in the scverse style.

- ``hc.audit(data)``: the DataAuditor's profile of one .h5ad file or AnnData;
- ``hc.run(data, task=...)``: a whole run on .h5ad paths or in-memory AnnData; returns a ``Run``;
- ``hc.load_run(path)``: a finished run: ``.verdict``, ``.comparisons`` and ``.tree`` (pandas),
  ``.predict(...)`` (AnnData);
- ``hc.predict(run, perturbations, ...)``: the run's selected model answers perturbations nobody
  measured (what ``harmonycell predict`` prints and writes): AnnData of predicted means with
  ``layers['spread']`` over bootstrap refits (``members=``), or ``cells=N`` cells per query;
- ``hc.score(task, predictions)``: one's own predictions judged with the run's protocol (what
  ``harmonycell score --compare`` prints).

The command line is a thin layer over these functions; they never import it.
"""

from harmonycell.prediction import NOTICE, PredictionRefused, predict
from harmonycell.runview import Run, audit, load_run, run, score

__all__ = ["NOTICE", "PredictionRefused", "Run", "audit", "load_run", "predict", "run", "score"]
