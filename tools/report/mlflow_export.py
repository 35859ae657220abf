"""Export a run to MLflow (optional extra ``harmonycell[mlflow]``): one parent run per HarmonyCell
run, one child run per search node with its parameters, metrics (the training curve by epoch)
and artifacts, for labs that already track experiments there."""

from __future__ import annotations

import os
import time
from pathlib import Path

from harmonycell.tools.errors import InputError
from harmonycell.tools.report.rundata import RunData

EXPERIMENT = "harmonycell"
NODE_FILES = ("model.py", "config.json", "train_log.jsonl", "stdout.log", "stderr.log", "test_scores.json")
RUN_FILES = ("report.html", "report.md", "verdict.json", "tree.json", "task.yaml")


def _flat(prefix: str, value, out: dict[str, str]) -> dict[str, str]:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif value is not None:
        out[prefix] = str(value)[:500]
    return out


def _numbers(prefix: str, values: dict) -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in (values or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def export_run(data: RunData, uri: str | None = None) -> tuple[str, int]:
    """Log ``data`` to the tracking store at ``uri`` (default: ./mlruns, a local file store).
    Returns the store's URI and the number of node runs logged."""
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise InputError("MLflow is not installed", fix="pip install 'harmonycell[mlflow]'") from None
    uri = uri or "mlruns"
    if "://" not in uri:  # a plain path: a local file store there
        uri = Path(uri).resolve().as_uri()
    if uri.startswith("file:"):
        # MLflow 3 refuses its file store unless asked; a local file store is what we were asked
        # for, and the skinny client has no database backend
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp else client.create_experiment(EXPERIMENT)
    root = Path(data.root)
    now = int(time.time() * 1000)
    v = data.verdict or {}
    parent = client.create_run(exp_id, run_name=data.run_id, tags={
        "harmonycell.run_id": data.run_id, "harmonycell.task": str(data.task.get("task")),
        "harmonycell.valid": str(v.get("valid")), "harmonycell.useful": str(v.get("useful")),
        "harmonycell.best_node": str(data.best_node), "harmonycell.selected_path": str(data.selected_path)})
    pid = parent.info.run_id
    params = {k: data.task.get(k) for k in ("task", "seed", "budget_nodes", "epochs", "backend")}
    params["inputs"] = ", ".join(Path(str(i.get("path"))).name for i in data.task.get("inputs") or [])
    test = data.last_content("TestScored") or {}
    metrics = _numbers("test_", test.get("metrics") or {})
    for name, vals in (test.get("baselines") or {}).items():
        metrics.update(_numbers(f"baseline_{name}_", vals))
    client.log_batch(pid, metrics=[Metric(k, x, now, 0) for k, x in metrics.items()],
                     params=[Param(k, str(x)) for k, x in params.items() if x is not None])
    for f in RUN_FILES:
        if (root / f).exists():
            client.log_artifact(pid, str(root / f))
    n = 0
    for nid, node in data.tree.get("nodes", {}).items():
        if nid == "root":
            continue
        run = client.create_run(exp_id, run_name=f"{data.run_id}/{nid}", tags={
            "mlflow.parentRunId": pid, "harmonycell.node": nid, "harmonycell.status": str(node.get("status")),
            "harmonycell.selected": str(nid in data.selected)})
        rid = run.info.run_id
        files = data.nodes.get(nid)
        params = _flat("", {"action": node.get("action"), "parent": node.get("parent")}, {})
        if files and files.config:
            _flat("config", files.config, params)
        node_metrics = [Metric(k, x, now, 0) for k, x in _numbers("", {
            "val_metric": node.get("val_metric"), "reward": node.get("reward"), "wall_s": node.get("wall_s"),
            "visits": node.get("visits")}).items()]
        for rec in files.train_log if files else []:
            step = int(rec.get("epoch", 0))
            node_metrics += [Metric(k, x, now, step) for k, x in _numbers("", {
                k: rec.get(k) for k in ("train_loss", "stop_loss")}).items()]
        if nid == data.best_node:
            node_metrics += [Metric(k, x, now, 0) for k, x in metrics.items() if k.startswith("test_")]
        for i in range(0, len(node_metrics), 900):  # MLflow takes at most 1000 metrics a batch
            client.log_batch(rid, metrics=node_metrics[i:i + 900],
                             params=[Param(k, x) for k, x in params.items()] if i == 0 else [],
                             tags=[RunTag("harmonycell.action", str(node.get("action")))] if i == 0 else [])
        if not node_metrics:
            client.log_batch(rid, params=[Param(k, x) for k, x in params.items()])
        for f in NODE_FILES:
            path = root / "nodes" / nid / f
            if path.exists():
                client.log_artifact(rid, str(path))
        client.set_terminated(rid, "FINISHED" if node.get("status") == "ok" else "FAILED")
        n += 1
    client.set_terminated(pid, "FINISHED" if v.get("valid") else "FAILED")
    return uri, n
