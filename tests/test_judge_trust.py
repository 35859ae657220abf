"""The Judge's trust fields: which backend ran the selected node (from its tree record), provenance,
and the transcript anchor."""

from __future__ import annotations

from harmonycell.agents.context import RunContext
from harmonycell.agents.judge import isolation_check, provenance, trust_lines
from harmonycell.agents import messages as m
from harmonycell.agents.messages import Artifact, NodeAbandoned, NodeScored, TranscriptHead, Verdict
from harmonycell.agents.planner import Planner
from harmonycell.sandbox.local import LocalBackend
from harmonycell.tools.evaluation.metrics import SEARCH_METRIC
from harmonycell.tools.record.runfolder import create_run
from harmonycell.tools.record.transcript import Transcript
from harmonycell.tools.search import tree as T


def test_a_nodes_execution_is_on_its_tree_record_and_the_judge_checks_against_it(tmp_path, synthetic_dir):
    """The Planner writes what the execution said onto the node; the provenance check holds the
    scored file against the sha256 the sandbox recorded there, not against itself."""
    run = create_run(tmp_path, [synthetic_dir / "labA_counts.h5ad"], "unseen-perturbation")
    ctx = RunContext(run=run, config=run.config(), transcript=Transcript(run.root), backend=LocalBackend())
    planner = Planner(ctx)
    tree = ctx.search_tree()
    ok = tree.add(tree.add(T.ROOT, "discriminative").id, "discriminative/resnet")
    bad = tree.add(ok.parent, "discriminative/gated-mlp")
    pred = Artifact(path=f"nodes/{ok.id}/pred_test.npy", sha256="a" * 64)
    planner.apply(tree, NodeScored(node_id=ok.id, metrics={SEARCH_METRIC: 0.2, "wall_s": 3.0, "cpu_s": 2.0},
                                   reward=0.4, backend="bwrap", attempts=2, predictions={"test": pred}))
    planner.apply(tree, NodeAbandoned(node_id=bad.id, action=bad.action, reason="CUDA error: out of memory",
                                      attempts=3))
    assert ctx.search_tree() is tree  # one copy for the run
    node = tree.nodes[ok.id]
    assert (node.backend, node.attempts, node.predictions) == ("bwrap", 2, {"test": "a" * 64})
    assert node.metrics == {SEARCH_METRIC: 0.2} and (node.wall_s, node.cpu_s) == (3.0, 2.0)
    assert tree.nodes[bad.id].attempts == 3 and "out of memory" in tree.nodes[bad.id].error_tail
    scored = m.TestScored(node_id=ok.id, predictions=pred, baselines={}, n_queries=3)
    assert provenance(scored, node.predictions["test"], "a" * 64).passed
    swapped = provenance(scored.model_copy(update={"predictions": Artifact(path=pred.path, sha256="b" * 64)}),
                         node.predictions["test"], "b" * 64)
    assert not swapped.passed and "sandbox wrote aaaa" in swapped.detail


def test_unisolated_node_is_marked_in_the_check_and_the_report():
    head = TranscriptHead(hash="ab" * 32, records=12)
    bad = isolation_check("unsafe-local")
    assert not bad.passed and "UNISOLATED" in bad.detail
    assert "**UNISOLATED**" in trust_lines("unsafe-local", head)
    good = isolation_check("bwrap")
    assert good.passed and "UNISOLATED" not in trust_lines("bwrap", head)
    assert f"--anchor {head.hash}" in trust_lines("bwrap", head)
    v = Verdict(valid=True, checks=[bad], backend="unsafe-local", isolated=False, transcript_head=head)
    assert v.model_dump()["transcript_head"] == {"hash": head.hash, "records": 12}
