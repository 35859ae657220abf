"""How a node's training time depends on its thread count and OpenMP's wait policy when the
machine is shared (the usual case on a workstation, and with `--workers N`).

Re-trains one node of a finished run (same code, config and data; a fixed number of epochs, no
early stop) in the unsafe-local backend three ways, with ``--busy`` other CPU-bound processes
running beside it: one thread; two threads with OpenMP's default (spinning) wait policy; two
threads with ``OMP_WAIT_POLICY=PASSIVE`` (what the sandbox now sets for every node).

    python bench/omp_wait.py RUN_DIR [--node n002] [--epochs 8] [--busy 1]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "omp_wait.json"


def _burn() -> None:
    while True:
        pass


def main() -> None:
    from harmonycell.sandbox.executors import LocalExecutor
    from harmonycell.sandbox.jobs import NodeJob
    from harmonycell.sandbox.local import LocalBackend

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--node", default="n002")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--busy", type=int, default=1, help="CPU-bound processes running beside the node")
    args = ap.parse_args()
    node = args.run / "nodes" / args.node
    code = (node / "model.py").read_text()
    config = {**json.loads((node / "config.json").read_text()), "epochs": args.epochs, "patience": 10 ** 6}
    # an empty OMP_WAIT_POLICY is read by libgomp as unset: its default (spin, then sleep)
    cases = [("1 thread", {}, 1.0),
             ("2 threads, OpenMP default wait (spinning)", {"OMP_WAIT_POLICY": ""}, 2.0),
             ("2 threads, OMP_WAIT_POLICY=PASSIVE", {"OMP_WAIT_POLICY": "PASSIVE"}, 2.0)]
    burners = [mp.Process(target=_burn, daemon=True) for _ in range(args.busy)]
    for b in burners:
        b.start()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for label, env, cpus in cases:
                job = NodeJob(node_id=args.node, code=code, config=config, data_dir=args.run / "data" / "sandbox",
                              node_dir=Path(tmp) / f"case{len(rows)}" / "node", timeout_s=3600, cpus=cpus, env=env)
                res, _ = LocalExecutor(LocalBackend()).run(job, worker=0)
                rows.append({"case": label, "status": res.status, "wall_s": res.wall_s, "cpu_s": res.cpu_s})
                print(f"{label}: wall {res.wall_s} s, CPU {res.cpu_s} s ({res.status})", flush=True)
    finally:
        for b in burners:
            b.kill()
    base = rows[0]["wall_s"]
    out = {"what": __doc__.splitlines()[0], "run": str(args.run), "node": args.node, "epochs": args.epochs,
           "busy_processes": args.busy, "rows": [{**r, "wall_over_1_thread": round(r["wall_s"] / base, 2)} for r in rows],
           "machine": platform.platform(), "cpus": os.cpu_count(), "load_after": [round(x, 2) for x in os.getloadavg()]}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["rows"], indent=1))


if __name__ == "__main__":
    main()
