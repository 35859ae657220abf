"""Repair corpus: how many broken model files the Debugger's ReAct loop repairs.

Each file in tests/repair_corpus/ is a realistic mistake in generated model code. Every file is
first run as written (static checks, then the sandbox harness on small synthetic task data) to
confirm that it fails; then the same loop the Debugger agent runs (``agents.policies.debugger
.repair``) tries to repair it, once with the builtin catalogue alone and once with the LLM policy,
whose replies are the recorded ones in tests/repair_corpus/llm_replies.json, served over real HTTP
by the local OpenAI-compatible stub server. A file counts as repaired when a patched module or
config trains and writes finite predictions within the loop's step bound.

Usage: python bench/repair.py [--only NAME ...] [--policies builtin llm]
Writes bench/results/repair.json and bench/results/repair.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "repair_corpus"
RESULTS = ROOT / "bench" / "results"
CACHE = RESULTS / "cache" / "repair"
CONFIG = {"seed": 0, "epochs": 3, "batch_size": 64, "lr": 1e-3, "patience": 3, "hparams": {}}
sys.path.insert(0, str(ROOT / "tests"))  # the stub server and the small synthetic task data


def task_data() -> Path:
    from harmonycell.tools.data.taskdata import export_sandbox_data
    from models_support import canonical_unseen_perturbation

    data = CACHE / "data"
    if not (data / "meta.json").exists():
        export_sandbox_data(canonical_unseen_perturbation(), data)
    return data


def runner(data: Path, work: Path):
    from harmonycell.agents.policies.debugger import RunOutcome
    from harmonycell.sandbox.executors import LocalExecutor
    from harmonycell.sandbox.jobs import NodeJob
    from harmonycell.sandbox.local import LocalBackend
    from harmonycell.tools.search.code_checks import check_code

    executor = LocalExecutor(LocalBackend())
    counter = {"runs": 0}

    def run(code: str, config: dict) -> RunOutcome:
        problems = check_code(code)
        if problems:  # never reaches the sandbox, exactly as in a run
            return RunOutcome(ok=False, status="static_check",
                              tail="StaticCheckError: " + "; ".join(problems))
        counter["runs"] += 1
        node = work / f"run{counter['runs']}"
        res, _ = executor.run(NodeJob(node_id=node.name, code=code, config=config, data_dir=data, node_dir=node,
                                      timeout_s=180), worker=0)
        ok = res.ok and all((node / f"pred_{s}.npy").exists() for s in ("val", "test"))
        if ok:
            ok = all(np.isfinite(np.load(node / f"pred_{s}.npy")).all() for s in ("val", "test"))
        return RunOutcome(ok=ok, status=res.status if not res.ok else ("ok" if ok else "error"),
                          tail=res.stderr_tail or res.stdout_tail)

    return run, counter


def repair_one(name: str, policy: str, data: Path) -> dict:
    from harmonycell.agents.policies.debugger import LLMDebugPolicy, observe, repair
    from harmonycell.agents.policies.llm import LLMConfig, LLMSession
    from llm_stub import StubServer, chat_completion

    code = (CORPUS / f"{name}.py").read_text()
    work = CACHE / "runs" / policy / name
    run, counter = runner(data, work)
    t0 = time.time()
    first = run(code, dict(CONFIG))
    row = {"file": name, "policy": policy, "mistake": code.splitlines()[0].removeprefix("# mistake: ")}
    if first.ok:
        return {**row, "fails_as_written": False, "repaired": False, "steps": 0, "rules": "",
                "first_error": "", "seconds": round(time.time() - t0, 1)}
    obs = observe(first.status, first.tail, code, dict(CONFIG), data)
    log: list[tuple[str, dict]] = []
    stub, llm, session = None, None, None
    if policy == "llm":
        replies = json.loads((CORPUS / "llm_replies.json").read_text())[name]
        stub = StubServer([chat_completion(r, i) for i, r in enumerate(replies)]).__enter__()
        session = LLMSession(LLMConfig(base_url=stub.base_url, model="recorded-model", transport_retries=1,
                                       max_asks=2))
        llm = LLMDebugPolicy(session)
    try:
        out = repair(obs, run, data_dir=data, llm=llm, record=lambda k, p: log.append((k, p)))
    finally:
        if stub is not None:
            stub.__exit__(None, None, None)
    fallbacks = sum(1 for k, _ in log if k == "fallback")
    row.update({
        "fails_as_written": True, "first_error": obs.error[:160], "repaired": out.repaired,
        "steps": out.steps, "rules": "+".join(a.rule for a in out.actions),
        "repaired_by_llm_action": out.repaired and bool(out.actions) and out.actions[-1].rule == "llm",
        "fallbacks_to_builtin": fallbacks, "last_error": out.last_error[:160],
        "sandbox_runs": counter["runs"], "seconds": round(time.time() - t0, 1),
    })
    if session is not None:
        row["llm_tokens"] = session.usage.tokens
        row["llm_calls"] = session.usage.calls
    return row


def hash_inputs(name: str) -> str:
    """What a cached row depends on: the file, its recorded replies and the Debugger's code."""
    import hashlib

    h = hashlib.sha256((CORPUS / f"{name}.py").read_bytes())
    h.update((CORPUS / "llm_replies.json").read_bytes())
    h.update((ROOT / "agents" / "policies" / "debugger.py").read_bytes())
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="corpus file names (without .py)")
    ap.add_argument("--policies", nargs="*", default=["builtin", "llm"])
    args = ap.parse_args()
    os.environ.setdefault("HARMONYCELL_THREADS", "1")  # a 2-core machine shared with others
    names = args.only or sorted(p.stem for p in CORPUS.glob("*.py"))
    data = task_data()
    rows = []
    for policy in args.policies:
        for name in names:
            cached = CACHE / "rows" / f"{policy}-{name}.json"  # a long run survives a stop
            key = hash_inputs(name)
            row = json.loads(cached.read_text()) if cached.exists() else None
            if row is None or row.get("_key") != key:
                row = {**repair_one(name, policy, data), "_key": key}
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_text(json.dumps(row))
            row = {k: v for k, v in row.items() if k != "_key"}
            rows.append(row)
            print(f"{policy:8s} {name:32s} fails={row['fails_as_written']!s:5s} "
                  f"repaired={row['repaired']!s:5s} steps={row['steps']} {row.get('rules', '')}", flush=True)
    summary = {}
    for policy in args.policies:
        mine = [r for r in rows if r["policy"] == policy]
        broken = [r for r in mine if r["fails_as_written"]]
        summary[policy] = {"files": len(mine), "fail_as_written": len(broken),
                           "repaired": sum(r["repaired"] for r in broken)}
        if policy == "llm":
            summary[policy]["repaired_by_llm_action"] = sum(r.get("repaired_by_llm_action", False) for r in broken)
    out = {"corpus": str(CORPUS.relative_to(ROOT)), "config": CONFIG, "summary": summary, "rows": rows,
           "note": "llm replies are recorded (tests/repair_corpus/llm_replies.json), served by a local "
                   "stub server over HTTP; they measure the loop's parsing, checking and re-running, "
                   "not any particular model's skill"}
    if args.only:
        print(json.dumps(summary, indent=1))
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    from harmonycell.tools.record import atomic

    atomic.write_text(RESULTS / "repair.json", json.dumps(out, indent=1))
    keys = ["policy", "file", "mistake", "fails_as_written", "repaired", "steps", "rules",
            "repaired_by_llm_action", "fallbacks_to_builtin", "first_error", "last_error", "seconds"]
    with open(RESULTS / "repair.csv.tmp", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(RESULTS / "repair.csv.tmp", RESULTS / "repair.csv")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
