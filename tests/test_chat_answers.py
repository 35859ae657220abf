"""`harmonycell chat` answers a biologist's questions from the run's records (issue 29): ten
questions of different kinds, asked at the prompt in plain words (one riding along with the
request, before any run exists), each answer's facts checked against the run folder."""

import json
import re

import anndata as ad

from test_chat import quit_chat, records, said, spawn


def answers_on_record(run_dir) -> dict[str, dict]:
    return {r["content"]["said"]: r["content"] for r in records(run_dir)
            if r["source"] == "User" and r["type"] == "Question"}


def test_ten_questions_answered_from_the_records(synthetic_dir, tmp_path):
    labA = ad.read_h5ad(synthetic_dir / "labA_counts.h5ad", backed="r")
    top_label = labA.obs["guide_target"].astype(str).value_counts().drop("non-targeting").index[0]
    out = tmp_path / "runs"
    child = spawn(out)
    child.logfile_read = open(tmp_path / "session.txt", "w")
    child.expect(said("What would you like to predict"))
    # the request and a question in one breath: the task is read from the words, the question is
    # answered from the audits of the files named (no run folder exists yet)
    child.sendline(f"{synthetic_dir} predict knockouts of genes nobody tested, in 1 node, no generative models, "
                   f"no simple models. Which cells count as controls, and how many are there?")
    child.expect(r"control cells of labA_counts: (\d+) cells")
    pre_run_controls_a = int(child.match.group(1))
    child.expect(said("I understood: 2 input"))
    child.expect("unseen-perturbation")
    child.expect(said("Start the model search with 1 node"))
    mid = ["what was the control label mapped to?",
           "how many genes will the model see?",
           "which knockouts are held out for testing?",
           "how many cells were in labA before anything was removed?",
           f"how many cells carry the {top_label} knockout in labA?",
           "what is the favourite colour of the lab's cat?"]
    for q in mid:
        child.sendline(q)
        child.expect(said("Start the model search"))
    child.sendline("y")
    child.expect(said(r"Test (n\d+) on the held-out split now"))
    child.sendline("y")
    after = ["which model won?", "how did the baselines do?", "how many perturbed cells does labB have?"]
    for q in after:
        child.expect(said("Ask about the result"))
        child.sendline(q)
    child.expect(said("Ask about the result"))
    run_dir = quit_chat(child, out)
    rep = json.loads((run_dir / "unify" / "unify_report.json").read_text())
    inp = {i["dataset_id"]: i for i in rep["inputs"]}
    a, b = inp["labA_counts"], inp["labB_lognorm"]
    intent = next(r["content"] for r in records(run_dir) if r["type"] == "RunIntent")
    assert intent["task"] == "unseen-perturbation" and "nobody tested" in intent["task_because"]
    session = (tmp_path / "session.txt").read_text()
    assert pre_run_controls_a == a["controls"]  # the audit-time count is the one the run used
    assert re.search(said(f"control cells of labB_lognorm: {b['controls']} cells"), session)
    got = answers_on_record(run_dir)
    assert set(got) == set(mid + after)
    assert all(got[q]["sources"] for q in mid + after if q != "what is the favourite colour of the lab's cat?")

    ctl = got["what was the control label mapped to?"]["answer"]
    assert f"labA_counts: {a['controls']} control cells" in ctl and "'non-targeting'" in ctl
    assert f"labB_lognorm: {b['controls']} control cells" in ctl and "'ctrl'" in ctl
    assert f"{rep['n_genes']} genes" in got["how many genes will the model see?"]["answer"]
    held = got["which knockouts are held out for testing?"]["answer"]
    assert all(u in held for u in rep["split_info"]["test_units"])
    assert f"{a['n_cells_in']} cells" in got["how many cells were in labA before anything was removed?"]["answer"]
    note = next(n for n in a["labels"] if n["label"] == top_label)
    carry = got[f"how many cells carry the {top_label} knockout in labA?"]
    assert f"label '{top_label}' of labA_counts is a knockout/guide target of gene {top_label}; {note['cells']} cells" \
        in carry["answer"] and carry["topic"] == "facts"
    cat = got["what is the favourite colour of the lab's cat?"]
    assert cat["answer"].startswith("I found nothing in this run's records") and cat["sources"] == []

    tree = json.loads((run_dir / "tree.json").read_text())
    picked = next(r["content"]["best_node"] for r in records(run_dir) if r["type"] == "SearchDone")  # sent to the test
    assert got["which model won?"]["answer"].startswith(f"{picked} ({tree['nodes'][picked]['action']}) won: it is the run's pick")
    base = json.loads((run_dir / "baselines.json").read_text())["baselines"]
    ans = got["how did the baselines do?"]["answer"]
    shown = {name: "n/a" if v.get("DeltaPCC") is None else f"{v['DeltaPCC']:.3f}" for name, v in base.items()}
    assert base and all(f"{name} DeltaPCC {x}" in ans for name, x in shown.items())
    assert f"labB_lognorm: {b['controls']} control cells and {b['perturbed']} perturbed cells" in \
        got["how many perturbed cells does labB have?"]["answer"]
