"""Time of `harmonycell replay RUN --rerun` against the run it re-executes (the demo by default).

Runs `harmonycell demo` (or takes a finished run folder), then `replay --rerun` on it, and
writes both wall times, their ratio and the comparison's outcome to bench/results/rerun.json.
Both are measured in the same session on the same machine; the load average is recorded
because on a shared machine it moves both numbers.

    python bench/rerun.py [--out /tmp/hc-bench-rerun] [--run RUN_DIR] [--backend auto]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "rerun.json"
CLI = [sys.executable, "-m", "harmonycell.agents.cli"]


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return time.monotonic() - t0, proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/hc-bench-rerun"))
    ap.add_argument("--run", type=Path, default=None, help="a finished run folder (default: run the demo)")
    ap.add_argument("--backend", default="auto")
    args = ap.parse_args()
    load0 = [round(x, 2) for x in os.getloadavg()]
    run_s = None
    if args.run is None:
        run_s, proc = timed([*CLI, "demo", "--out", str(args.out), "--backend", args.backend])
        if proc.returncode != 0:
            sys.exit(f"demo failed: {proc.stderr[-2000:]}")
        args.run = max((p for p in args.out.iterdir() if p.is_dir() and (p / "task.yaml").exists()),
                       key=lambda p: p.stat().st_mtime)
    if run_s is None:  # a given run: its recorded wall time, first transcript record to last
        from harmonycell.agents.cli.replay import recorded_duration_s
        from harmonycell.tools.record.transcript import read_records

        run_s = recorded_duration_s(list(read_records(args.run / "transcript.jsonl")))
    rerun_s, proc = timed([*CLI, "replay", str(args.run), "--rerun", "--out", str(args.out / "reruns")])
    verdict = "SAME" if proc.returncode == 0 else "DIVERGED"
    line = next((ln for ln in proc.stdout.splitlines() if "SAME" in ln or "DIVERGED" in ln), proc.stdout[-500:])
    result = {
        "what": "wall time of `replay --rerun` vs the recorded run (demo), same machine, same session",
        "run": str(args.run), "run_s": round(run_s, 1) if run_s else None, "rerun_s": round(rerun_s, 1),
        "rerun_over_run": round(rerun_s / run_s, 2) if run_s else None,
        "outcome": verdict, "line": line.strip(),
        "machine": platform.platform(), "cpus": os.cpu_count(),
        "loadavg_start": load0, "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
