"""The chat's policies without a terminal: the request read from plain words (builtin, and an LLM
over real HTTP to the stub server), changes of course, the named hold-out honoured by the split,
and answers grounded in a run folder's records (builtin, and an LLM that must cite them)."""

import json

import numpy as np
import pandas as pd
import pytest

from harmonycell.agents.policies import answers, intent as I
from harmonycell.agents.policies.llm import LLMConfig
from harmonycell.tools.data.splits import unseen_cell_context
from harmonycell.tools.errors import InputError
from tests.llm_stub import StubServer, chat_completion


@pytest.mark.parametrize("words, kind", [
    ("I want to predict how an unseen cell type responds to interferon", "unseen-cell-context"),
    ("will it work in a new cell line?", "unseen-cell-context"),
    ("transfer to another donor", "unseen-cell-context"),
    ("hold out B cells", "unseen-cell-context"),
    ("predict the effect of new drugs", "unseen-perturbation"),
    ("what do knockouts we have not screened do", "unseen-perturbation"),
    ("genes that have not been tested", "unseen-perturbation"),
    ("predict combinations of knockouts", "unseen-combination"),
    ("double knockouts", "unseen-combination"),
    ("unseen-combination please", "unseen-combination"),
])
def test_plain_words_map_to_a_task_kind(words, kind):
    got = I.builtin_intent(words)
    assert got.task == kind and got.task_because


def test_options_in_plain_words_become_one_typed_request(synthetic_dir):
    got = I.builtin_intent(f"{synthetic_dir}/*.h5ad new drugs in 20 minutes, 3 nodes, no generative models, "
                           f"without gated mlp")
    assert [p.split("/")[-1] for p in got.files] == ["labA_counts.h5ad", "labB_lognorm.h5ad"]
    assert (got.task, got.time_limit_s, got.budget_nodes) == ("unseen-perturbation", 1200.0, 3)
    assert got.exclude == ["generative", "gated-mlp"] and got.missing() == []
    assert "20 min" in got.understood() and "generative" in got.understood()
    held = I.builtin_intent("hold out B cells for the test")
    assert held.hold_out == ["B cells"] and held.missing() == ["files"]


def test_what_is_missing_is_asked_and_what_is_foreign_is_refused(synthetic_dir, tmp_path):
    assert I.builtin_intent(str(synthetic_dir)).missing() == ["task"]
    assert I.builtin_intent("new drugs").missing() == ["files"]
    with pytest.raises(InputError, match="no 'gnns' to exclude"):
        I.builtin_intent("new drugs, no gnns")
    assert I.builtin_intent("new drugs, no transformers").exclude == ["set-transformer"]  # our only one
    with pytest.raises(InputError, match="file not found"):
        I.builtin_intent(f"{tmp_path}/nope.h5ad new drugs")
    with pytest.raises(InputError, match="matches no file"):
        I.builtin_intent(f"{tmp_path}/*.h5ad new drugs")
    mixed = I.builtin_intent("unseen cell lines and new drugs")
    assert mixed.ambiguous == ["task could also be unseen-perturbation"]


def test_changes_of_course_are_read_and_other_words_are_not():
    inputs = ["/d/labA_counts.h5ad", "/d/labB_lognorm.h5ad"]
    assert I.read_steer("no resnet please", inputs).exclude == ["resnet"]
    s = I.read_steer("drop labB and add 2 nodes", inputs)
    assert s.drop_inputs == ["labB_lognorm"] and s.add_nodes == 2
    assert I.read_steer("set a time budget of 1.5 hours", inputs).time_limit_s == 5400
    assert I.read_steer("hold out LineA", inputs).hold_out == ["LineA"]
    assert I.read_steer("why only 500 genes?", inputs) is None
    assert I.read_steer("yes", inputs) is None


def _obs():
    rows = []
    for ds, ct in (("d1", "B cell"), ("d1", "T cell"), ("d2", "Monocyte")):
        for cond in ("ctrl", "IFNG", "TNF", "IL2"):
            for i in range(3):
                rows.append({"dataset_id": ds, "cell_type": ct, "is_control": cond == "ctrl",
                             "condition_name": cond})
    return pd.DataFrame(rows)


def test_a_named_cell_type_is_the_one_held_out():
    obs = _obs()
    for seed in range(5):  # whatever the seed, the named cell type is the test split
        split, info = unseen_cell_context(obs, np.random.default_rng(seed), hold_out=["B cells"])
        assert info["test_contexts"] == ["d1|B cell"]
        assert set(obs.loc[split == "test", "cell_type"]) == {"B cell"}
        assert "B cell" not in set(obs.loc[split == "train", "cell_type"])
    with pytest.raises(InputError, match="no cell type or context named 'NK cells'.*B cell, Monocyte, T cell"):
        unseen_cell_context(obs, np.random.default_rng(0), hold_out=["NK cells"])


# --- LLM paths, over real HTTP to the stub server ---------------------------------------------

def _llm(stub) -> LLMConfig:
    return LLMConfig(base_url=stub.base_url, model="stub", max_asks=2, transport_retries=1)


def test_llm_intent_is_validated_reasked_and_used(synthetic_dir):
    bad = {"task": "unseen-cell-context", "exclude": ["transformer"], "hold_out": ["LineA"]}
    good = {**bad, "exclude": ["generative"], "task_because": "a new cell line", "time_limit_s": 600}
    with StubServer([chat_completion(json.dumps(bad)), chat_completion(f"```json\n{json.dumps(good)}\n```", 1)]) as stub:
        got, call = I.read_intent(f"{synthetic_dir} does this carry over to a new cell line? skip the VAEs", _llm(stub))
    assert got.by == "llm" and got.task == "unseen-cell-context" and got.exclude == ["generative"]
    assert got.time_limit_s == 600 and len(got.files) == 2  # files are always read by the builtin policy
    assert call["outcome"] == "accepted" and call["attempts"] == 2 and "transformer" in call["rejected"][0]
    # the re-ask carried the reason back to the model
    assert "not in the action space" in stub.requests[1]["messages"][-1]["content"]


def test_llm_intent_that_never_validates_falls_back_to_builtin(synthetic_dir):
    with StubServer([chat_completion("I think you want a model."), chat_completion("{not json", 1)]) as stub:
        got, call = I.read_intent(f"{synthetic_dir} predict new drugs", _llm(stub))
    assert got.by == "builtin (llm fallback)" and got.task == "unseen-perturbation"
    assert call["outcome"] == "fell back to builtin" and len(stub.requests) == 2


@pytest.fixture(scope="module")
def unified_run(synthetic_dir, tmp_path_factory):
    """A run folder with its audit and unify records written by the real tools (no training)."""
    from harmonycell.tools.data.audit import audit_h5ad
    from harmonycell.tools.data.unify import unify, write_unify_outputs
    from harmonycell.tools.record.runfolder import create_run

    files = sorted(synthetic_dir.glob("*.h5ad"))
    run = create_run(tmp_path_factory.mktemp("runs"), files, "unseen-cell-context", exclude=["cvae"])
    run.audit_dir.mkdir()
    for f in files:
        (run.audit_dir / f"{f.stem}.json").write_text(audit_h5ad(f).model_dump_json())
    write_unify_outputs(unify(files, task="unseen-cell-context", hold_out=["LineA"]), run.unify_dir)
    return run


@pytest.mark.parametrize("question, topic, expect", [
    ("what did the audit find in labB?", "audit", "log-normalised"),
    ("what was the cell_line column mapped to and why?", "mapping", "cell_type <- column 'cell_line'"),
    ("why only 500 genes?", "genes", "intersection"),
    ("which cell type is held out?", "held_out", "cell type LineA (labA_counts)"),
    ("how many cells were dropped and why?", "dropped", "unknown perturbation"),
    ("what will the search try and how long?", "search", "Excluded: cvae"),
])
def test_builtin_answers_read_the_records(unified_run, question, topic, expect):
    ans = answers.builtin_answer(unified_run, question)
    assert ans.topic == topic and expect in ans.text and ans.sources


def test_llm_answer_must_cite_the_records_it_was_given(unified_run):
    uncited = json.dumps({"answer": "Because of the intersection.", "sources": []})
    cited = json.dumps({"answer": "500 genes are shared by both files.", "sources": ["unify/unify_report.json"]})
    with StubServer([chat_completion(uncited), chat_completion(cited, 1)]) as stub:
        ans, call = answers.answer(unified_run, "why 500 genes?", _llm(stub))
    assert ans.by == "llm" and ans.sources == ["unify/unify_report.json"] and call["attempts"] == 2
    # the model was grounded: the records' text went in the request
    assert '"genes_common"' in stub.requests[0]["messages"][-1]["content"]
    with StubServer([chat_completion(json.dumps({"answer": "x", "sources": ["my memory"]}))] * 2) as stub:
        ans, call = answers.answer(unified_run, "why 500 genes?", _llm(stub))
    assert ans.by == "builtin (llm fallback)" and "intersection" in ans.text


def test_a_new_run_request_carries_the_changes_and_keeps_the_rest(synthetic_dir):
    from harmonycell.agents.cli.chat import apply_steer, run_options

    files = sorted(str(p) for p in synthetic_dir.glob("*.h5ad"))
    base = I.builtin_intent(f"{synthetic_dir} new drugs, no cvae, 2 nodes")
    steer = I.read_steer("drop labB, hold out LineA and 30 minutes", files)
    new = apply_steer(base, [steer])
    assert [p.split("/")[-1] for p in new.files] == ["labA_counts.h5ad"]
    assert new.task == "unseen-cell-context" and new.hold_out == ["LineA"]
    assert new.exclude == ["cvae"] and new.time_limit_s == 1800 and new.budget_nodes == 2
    assert run_options(new, 5) == {"budget_nodes": 2, "hold_out": ["LineA"], "exclude": ["cvae"],
                                   "time_limit_s": 1800.0}
