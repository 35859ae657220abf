"""``harmonycell plan`` on a real small finished run (the demo's synthetic data through the whole
team): the CLI's outputs, transcript and errors; candidate and gene-set files and an LLM over real
HTTP through ``plan_experiments`` (what the CLI and the chat call), in-process to keep it fast."""

import csv
import json
import shutil
import subprocess
import sys

import pytest

from harmonycell.agents.cli.plan import plan_experiments
from harmonycell.tools.errors import InputError
from harmonycell.tools.record.transcript import verify

from llm_stub import StubServer, load_recording

CLI = [sys.executable, "-m", "harmonycell.agents.cli"]


def cli(*args, **kw):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=900, **kw)


@pytest.fixture(scope="module")
def run_dir(synthetic_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("plan-runs")
    res = cli("run", synthetic_dir / "labA_counts.h5ad", synthetic_dir / "labB_lognorm.h5ad",
              "--task", "unseen-perturbation", "--out", out, "--budget", "1", "--epochs", "1",
              "--backend", "local", env={**__import__("os").environ, "HARMONYCELL_THREADS": "1"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


@pytest.fixture
def run_copy(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


def records(run):
    return [json.loads(line) for line in (run / "transcript.jsonl").read_text().splitlines()]


def perturbed_and_measured(run):
    import anndata

    from harmonycell.tools.planning.candidates import default_candidates, gene_names, perturbed_columns

    a = anndata.read_h5ad(run / "unify" / "unified.h5ad")
    names = gene_names(a)
    return {names[c] for c in perturbed_columns(a)}, set(default_candidates(a).genes)


def test_plan_writes_csv_and_markdown_and_appends_to_the_transcript(run_copy):
    before = (run_copy / "transcript.jsonl").read_text()
    res = cli("plan", run_copy, "--budget", "4")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader((run_copy / "plan.csv").open()))
    assert list(rows[0])[:4] == ["gene", "uncertainty", "rank", "rationale"]
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4]
    perturbed, candidates = perturbed_and_measured(run_copy)
    assert {r["gene"] for r in rows} <= candidates and not {r["gene"] for r in rows} & perturbed
    assert all(float(r["uncertainty"]) > 0 and "uncertainty" in r["rationale"] for r in rows)
    md = (run_copy / "plan.md").read_text()
    assert "bootstrap ridge ensemble: 10" in md and all(r["gene"] in md for r in rows)
    # appended, never rewritten: the old transcript is a prefix of the new one
    after = (run_copy / "transcript.jsonl").read_text()
    assert after.startswith(before)
    last = records(run_copy)[-1]
    assert last["type"] == "plan_experiments" and last["content"]["result"]["picks"] == [r["gene"] for r in rows]
    assert {a["path"] for a in last["artifacts"]} == {"plans/001/plan.md", "plans/001/plan.csv", "plans/001/plan.json"}
    # planning again keeps the first plan's recorded files intact
    plan_experiments(run_copy, 2)
    assert (run_copy / "plans" / "002" / "plan.csv").exists()
    assert len(list(csv.DictReader((run_copy / "plan.csv").open()))) == 2
    check = verify(run_copy)
    assert check.ok, check.reason


def test_unknown_candidate_genes_are_named_and_nothing_is_written(run_copy, tmp_path):
    listed = tmp_path / "genes.txt"
    listed.write_text("SG0010\nNOT_A_GENE  # typo\nALSO_MISSING, SG0011\n")
    before = (run_copy / "transcript.jsonl").read_text()
    res = cli("plan", run_copy, "--budget", "1", "--candidates", listed)
    assert res.returncode == 2
    err = " ".join(res.stderr.split())
    assert "2 candidate gene(s) are not measured by this run's data: NOT_A_GENE, ALSO_MISSING" in err
    assert str(listed) in err and "Traceback" not in res.stderr
    assert not (run_copy / "plan.md").exists() and not (run_copy / "plans").exists()
    assert (run_copy / "transcript.jsonl").read_text() == before


def test_candidate_file_restricts_the_choice(run_copy, tmp_path):
    listed = tmp_path / "genes.txt"
    listed.write_text("sg0010\nSG0011\nSG0012\n")
    plan = plan_experiments(run_copy, 2, candidates=listed)
    genes = [r["gene"] for r in csv.DictReader((run_copy / "plan.csv").open())]
    assert genes == [p.gene for p in plan.picks] and set(genes) <= {"SG0010", "SG0011", "SG0012"}
    assert plan.n_candidates == 3 and plan.candidate_source == str(listed)


def test_gene_sets_cap_the_picks_per_set(run_copy, tmp_path):
    _, candidates = perturbed_and_measured(run_copy)
    genes = sorted(candidates)
    gmt = tmp_path / "sets.gmt"
    gmt.write_text("BIG\tall candidates but two\t" + "\t".join(genes[:-2]) + "\n"
                   f"SMALL\ttwo\t{genes[-2]}\t{genes[-1]}\n")
    plan_experiments(run_copy, 4, gene_sets=gmt, cap=2, shortlist_k=len(genes))
    rows = list(csv.DictReader((run_copy / "plan.csv").open()))
    per_set = {s: sum(s in r["gene_sets"].split(";") for r in rows) for s in ("BIG", "SMALL")}
    assert per_set == {"BIG": 2, "SMALL": 2}
    assert "at most 2 pick(s) per set" in (run_copy / "plan.md").read_text()


def test_an_unfinished_run_is_refused(run_copy):
    status = json.loads((run_copy / "status.json").read_text())
    (run_copy / "status.json").write_text(json.dumps({**status, "state": "running"}))
    with pytest.raises(InputError, match=r"not finished \(state: running\)"):
        plan_experiments(run_copy, 2)


def test_llm_plan_naming_a_gene_outside_the_shortlist_is_re_asked(run_copy, tmp_path):
    _, candidates = perturbed_and_measured(run_copy)
    with StubServer(load_recording("acquisition_outside_then_good")) as server:
        cfg = tmp_path / "llm.json"
        cfg.write_text(json.dumps({"base_url": server.base_url, "model": "recorded-model", "transport_retries": 1}))
        plan = plan_experiments(run_copy, 3, llm=cfg, shortlist_k=len(candidates))
    assert plan.policy == "llm" and plan.llm_attempts == 2 and not plan.fell_back
    assert len(server.requests) == 2
    rows = list(csv.DictReader((run_copy / "plan.csv").open()))
    assert [r["gene"] for r in rows] == ["SG0371", "SG0479", "SG0212"]
    assert rows[2]["rationale"].startswith("Covers a third programme")
    llm = [r for r in records(run_copy) if r["kind"] == "llm_call"][-1]
    assert llm["content"]["rejected"] == ["gene(s) not in the shortlist: SG0357"]
    assert len(llm["content"]["replies"]) == 2
    assert "rejected LLM reply 1" in (run_copy / "plan.md").read_text()


def test_plan_experiments_returns_the_plan_for_the_chat(run_copy):
    from harmonycell.tools.planning.plan import Plan

    plan = plan_experiments(run_copy, 3)
    assert isinstance(plan, Plan) and len(plan.picks) == 3 and plan.policy == "builtin"
    assert plan.ensemble.members == 10 and sum(plan.ensemble.contexts_used.values()) > 0
    assert plan.files["recorded copy"] == "plans/001"
