"""The walking skeleton through the real CLI: a run on synthetic two-schema data, replay, bad input."""

import json
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "harmonycell.agents.cli"]


def cli(*args, **kw):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=900, **kw)


@pytest.fixture(scope="module")
def finished_run(synthetic_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    res = cli("run", synthetic_dir / "labA_counts.h5ad", synthetic_dir / "labB_lognorm.h5ad",
              "--task", "unseen-perturbation", "--out", out, "--budget", "1", "--epochs", "4")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir, res


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "transcript.jsonl").read_text().splitlines()]


def test_run_produces_report_and_full_conversation(finished_run):
    run_dir, res = finished_run
    assert "report:" in res.stdout and str(run_dir / "report.md") in res.stdout.replace("\n", "")
    assert json.loads((run_dir / "status.json").read_text())["state"] == "complete"
    speakers = {r["source"] for r in records(run_dir) if r["kind"] == "message"}
    assert {"user", "DataAuditor", "Unifier", "Planner", "Coder", "Evaluator", "Judge"} <= speakers
    report = (run_dir / "report.md").read_text()
    assert "baseline: train_mean" in report and "baseline: linear" in report
    verdict = json.loads((run_dir / "verdict.json").read_text())
    assert {c["name"] for c in verdict["checks"]} >= {"provenance", "split_integrity"}
    # two verdicts, and the last line says both and names the held-out unit
    assert isinstance(verdict["useful"], bool) and verdict["comparisons"]
    assert set(verdict["comparisons"][0]) >= {"baseline", "metric", "n", "mean_diff", "ci_low", "ci_high", "conclusion"}
    last = res.stdout.strip().splitlines()[-1]
    assert last == verdict["headline"] and last.startswith(("VALID, ", "INVALID ("))
    assert "held-out genes" in last and verdict["headline"] in report
    # the split's units, the genes and the rules that made them are in the run folder
    split = json.loads((run_dir / "unify" / "split.json").read_text())
    genes = json.loads((run_dir / "unify" / "genes.json").read_text())
    assert split["test_units"] and split["rule"] and genes["genes"] and genes["rule"]


def test_transcript_message_order_follows_routing(finished_run):
    from harmonycell.agents import messages as m
    from harmonycell.agents.team import ROUTES

    run_dir, _ = finished_run
    msgs = [r for r in records(run_dir) if r["kind"] == "message"]
    by_name = {t.__name__: t for t in m.CONTENT_TYPES}
    for prev, nxt in zip(msgs, msgs[1:]):
        assert ROUTES[by_name[prev["type"]]] == nxt["source"], (prev["type"], nxt["source"])


def test_replay_verifies_and_renders(finished_run):
    run_dir, _ = finished_run
    ok = cli("replay", run_dir, "--verify")
    assert ok.returncode == 0 and "OK" in ok.stdout
    shown = cli("replay", run_dir)
    assert shown.returncode == 0 and "Judge" in shown.stdout and "UnifyDone" in shown.stdout


def test_replay_verify_names_the_edited_record(finished_run, tmp_path):
    import shutil

    run_dir, _ = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    lines = (copy / "transcript.jsonl").read_text().splitlines()
    target = next(i for i, l in enumerate(lines) if '"NodeScored"' in l)
    rec = json.loads(lines[target])
    rec["content"]["reward"] = 0.99  # a flattering edit
    lines[target] = json.dumps(rec, sort_keys=True)
    (copy / "transcript.jsonl").write_text("\n".join(lines) + "\n")
    res = cli("replay", copy, "--verify")
    assert res.returncode == 1
    assert f"record {target}" in res.stdout


def test_replay_verify_catches_swapped_predictions(finished_run, tmp_path):
    import shutil

    import numpy as np

    run_dir, _ = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    pred = next((copy / "nodes").glob("*/pred_test.npy"))
    swapped = np.load(pred)
    np.save(pred, swapped[::-1].copy())  # the same numbers, rows of other perturbations
    res = cli("replay", copy, "--verify")
    assert res.returncode == 1 and "pred_test.npy" in res.stdout, res.stdout


@pytest.mark.parametrize("name", ["model.py", "config.json", "test_scores.json"])
def test_replay_verify_catches_every_edited_node_file(finished_run, tmp_path, name):
    import shutil

    run_dir, _ = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    f = next((copy / "nodes").glob(f"*/{name}"))
    f.write_text(f.read_text() + "\n")
    res = cli("replay", copy, "--verify")
    assert res.returncode == 1 and name in res.stdout, res.stdout


def test_verdict_and_report_carry_the_transcript_head_and_backend(finished_run, tmp_path):
    import shutil

    run_dir, _ = finished_run
    verdict = json.loads((run_dir / "verdict.json").read_text())
    head = verdict["transcript_head"]
    recs = records(run_dir)
    assert recs[head["records"] - 1]["hash"] == head["hash"]
    assert head["hash"] in (run_dir / "report.md").read_text()
    assert verdict["backend"] in ("docker", "bwrap") and verdict["isolated"] is True
    ok = cli("replay", run_dir, "--verify", "--anchor", head["hash"])
    assert ok.returncode == 0 and "anchor" in ok.stdout
    other = cli("replay", run_dir, "--verify", "--anchor", "0" * 64)
    assert other.returncode == 1 and "anchor" in other.stdout


def test_relative_out_and_inputs(synthetic_dir, tmp_path):
    """`--out runs` relative to the current folder, as the README and `make demo` use it."""
    import shutil

    shutil.copy(synthetic_dir / "labB_lognorm.h5ad", tmp_path / "b.h5ad")
    res = cli("run", "b.h5ad", "--out", "runs", "--budget", "1", "--epochs", "2", "--backend", "bwrap",
              cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert cli("replay", run_dir.relative_to(tmp_path), "--verify", cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("make_input, needle", [
    (lambda d: d / "missing.h5ad", "file not found"),
    (lambda d: (d / "cells.csv.h5ad").write_text("cell,gene\nA,1\n") and d / "cells.csv.h5ad", "not an HDF5"),
    (lambda d: d, "not a file"),
])
def test_bad_input_is_one_line_exit_2_and_no_run_folder(tmp_path, make_input, needle):
    out = tmp_path / "runs"
    res = cli("run", make_input(tmp_path), "--out", out)
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_unknown_task_names_the_value_and_choices(synthetic_dir, tmp_path):
    res = cli("run", synthetic_dir / "labA_counts.h5ad", "--task", "unseen-galaxy", "--out", tmp_path / "r")
    assert res.returncode == 2
    assert "unseen-galaxy" in res.stderr and "unseen-perturbation" in res.stderr
    assert not (tmp_path / "r").exists()


def test_failure_during_run_marks_folder_failed(synthetic_dir, tmp_path):
    """An input that is a valid HDF5 file but no AnnData fails inside the run: the folder says so."""
    import h5py

    bogus = tmp_path / "bogus.h5ad"
    with h5py.File(bogus, "w") as f:
        f["x"] = [1, 2, 3]
    out = tmp_path / "runs"
    res = cli("run", bogus, "--out", out)
    assert res.returncode == 2
    dirs = [p for p in out.iterdir() if p.is_dir()] if out.exists() else []
    for d in dirs:
        assert json.loads((d / "status.json").read_text())["state"] == "failed"
        assert not (d / "report.md").exists()
