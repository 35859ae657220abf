"""Per-node sandbox overhead: start + data load + teardown, docker vs local.

Each node runs what every training node does before training: import numpy and torch and load
the sandbox-visible task data (here exported from a real dataset), then exits. The time is the
host-side wall time of ``backend.run`` (container create/start/wait/logs/remove for docker).
Median of N runs per backend, written to bench/results/sandbox.json; the ratio docker/local is
measured in the same run.

    python bench/sandbox.py [--repeats 10] [--dataset papalexi_eccite_lowmoi.h5ad] [--train 3]

``--train N`` also trains the builtin discriminative/resnet model through the harness for 3 epochs,
N times per backend (interleaved), and compares the harness's own training seconds: the cost
of running inside the container once it is up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL = (REPO / ".." / "shared" / "data" / "real").resolve()
OUT = REPO / "bench" / "results" / "sandbox.json"

NODE = '''
import sys, time
t0 = time.time()
import numpy as np, torch
d = sys.argv[1]
arrays = [np.load(f"{d}/{n}") for n in ("train.npz", "controls.npz", "queries.npz")]
n = sum(a[k].size for a in arrays for k in a.files) + np.load(f"{d}/pert_features.npy").size
print(f"{n} values loaded in {time.time() - t0:.3f} s")
'''


def task_data(dataset: str, out: Path) -> dict:
    from harmonycell.tools.data.taskdata import export_sandbox_data
    from harmonycell.tools.data.unify import unify

    outcome = unify([REAL / dataset], task="unseen-perturbation", seed=0)
    meta = export_sandbox_data(outcome.adata, out)
    size = sum(p.stat().st_size for p in out.iterdir())
    return {"dataset": dataset, "cells": int(outcome.adata.n_obs), "genes": int(outcome.adata.n_vars),
            "bytes": size, "n_train_cells": meta["n_train_cells"]}


def measure(backends, data: Path, script: Path, work: Path, repeats: int) -> dict[str, list[float]]:
    """Wall times per backend; runs alternate between backends so drifting machine load (other
    processes on a shared host) hits both alike. One warm-up round is not counted."""
    from harmonycell.sandbox.result import Job

    times: dict[str, list[float]] = {b.name: [] for b in backends}
    for i in range(repeats + 1):
        for backend in backends:
            job = Job(command=[], workdir=work / f"{script.stem}-{backend.name}-{i}",
                      inputs={"data": data, "script": script}, timeout_s=300, memory="4g")
            job.command = [backend.python(), backend.input_path(job, "script"), backend.input_path(job, "data")]
            t0 = time.perf_counter()
            res = backend.run(job)
            dt = time.perf_counter() - t0
            if res.status != "ok":
                raise SystemExit(f"{backend.name} node failed: {res.status}\n{res.stderr_tail}")
            if i:
                times[backend.name].append(dt)
    return times


def measure_training(backends, data: Path, work: Path, repeats: int) -> dict[str, list[float]]:
    from harmonycell.sandbox.executors import LocalExecutor
    from harmonycell.sandbox.jobs import NodeJob
    from harmonycell.tools.search.codegen import generate

    model = generate("discriminative/resnet", data, seed=0)
    code, cfg = model.code, {**model.config, "epochs": 3, "patience": 100}
    times: dict[str, list[float]] = {b.name: [] for b in backends}
    for i in range(repeats):
        for b in backends:
            node = work / f"train-{b.name}-{i}"
            res, _ = LocalExecutor(b).run(NodeJob(node_id=node.name, code=code, config=cfg, data_dir=data,
                                                  node_dir=node, timeout_s=1800, cpus=2), worker=0)
            if res.status != "ok":
                raise SystemExit(f"{b.name} training failed: {res.status}\n{res.stderr_tail}")
            times[b.name].append(json.loads((node / "harness_result.json").read_text())["train_seconds"])
    return times


def summary(t: list[float]) -> dict:
    return {"median_s": round(statistics.median(t), 3), "min_s": round(min(t), 3),
            "max_s": round(max(t), 3), "samples_s": [round(x, 3) for x in t]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--dataset", default="papalexi_eccite_lowmoi.h5ad")
    ap.add_argument("--train", type=int, default=0, help="training repeats per backend (0: skip)")
    args = ap.parse_args()
    load0 = [round(x, 2) for x in os.getloadavg()]
    from harmonycell.sandbox.docker_backend import DockerBackend
    from harmonycell.sandbox.local import LocalBackend

    with tempfile.TemporaryDirectory(prefix="hc-bench-sandbox-") as tmp:
        tmp = Path(tmp)
        data = tmp / "task"
        info = task_data(args.dataset, data)
        script = tmp / "node.py"
        script.write_text(NODE)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            backends = [DockerBackend(), LocalBackend()]
        empty = tmp / "empty.py"
        empty.write_text("pass\n")
        results, bare = {}, {}
        for name, t in measure(backends, data, script, tmp, args.repeats).items():
            results[name] = summary(t)
            print(f"{name:6s} per-node overhead: median {results[name]['median_s']:.3f} s "
                  f"(min {results[name]['min_s']:.3f}, max {results[name]['max_s']:.3f}, n={len(t)})")
        for name, t in measure(backends, data, empty, tmp, args.repeats).items():
            bare[name] = summary(t)
            print(f"{name:6s} empty script (sandbox start/teardown only): median {bare[name]['median_s']:.3f} s")
        training = {}
        if args.train:
            for name, t in measure_training(backends, data, tmp, args.train).items():
                training[name] = summary(t)
                print(f"{name:6s} harness training, 3 epochs resnet: median {training[name]['median_s']:.3f} s")
    ratio = results["docker"]["median_s"] / results["unsafe-local"]["median_s"]
    extra = results["docker"]["median_s"] - results["unsafe-local"]["median_s"]
    print(f"docker/local = {ratio:.2f}x (+{extra:.3f} s per node); data: {info}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "what": "per-node overhead (start + import numpy/torch + load task data + teardown), median",
        "repeats": args.repeats, "data": info, "results": results, "empty_script": bare,
        "training_3_epochs": training,
        "docker_over_local": round(ratio, 3), "docker_extra_s": round(extra, 3),
        "docker_engine": backends[0].info.version, "machine": platform.platform(),
        # other processes on the host matter: under cgroup v1 all containers together compete
        # with each host process as one group, so a busy host slows docker runs more
        "loadavg_start": load0, "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }, indent=2) + "\n")
    print(f"written to {OUT}")


if __name__ == "__main__":
    main()
