"""report.html and `harmonycell report / runs`: built from a real run folder, with and without
the optional fields other parts of HarmonyCell add."""

import json
import re

import pytest

from harmonycell.tools.report.html import anchor_status, node_records, render_compare, render_html, tree_figure, tree_layout
from harmonycell.tools.report.rundata import load_run
from report_support import cli, enrich, report_run  # noqa: F401  (session fixture)


@pytest.fixture(scope="module")
def enriched(report_run, tmp_path_factory):  # noqa: F811
    return enrich(report_run, tmp_path_factory.mktemp("enriched") / "run")


def test_run_writes_self_contained_report_html(report_run):  # noqa: F811
    page = (report_run / "report.html").read_text()
    assert (report_run / "report.md").exists()
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=\"(https?:)?//", page)
    assert "Plotly.newPlot" in page and len(page) > 1_000_000  # plotly.js inlined, not fetched
    assert json.loads((report_run / "verdict.json").read_text())["valid"] is True
    assert ">VALID<" in page and 'id="tree"' in page


def test_absent_optional_fields_are_left_out(report_run):  # noqa: F811
    # a run folder without the optional fields (older runs, or runs that had none of them): a real
    # run has them all today, so they are stripped from its data here
    data = load_run(report_run)
    for key in ("useful", "comparisons", "headline", "transcript_head"):
        data.verdict.pop(key, None)
    data.transcript = [r for r in data.transcript if r.get("source") != "Debugger" and not any(
        w in str(r.get("type", "")).lower() for w in ("kb", "knowledge", "retriev", "refinement_trace"))]
    for r in data.transcript:
        if r.get("type") == "TestScored":
            r["content"].pop("comparisons", None)
    page = render_html(data)
    for absent in ("USEFUL", "Comparisons with baselines", "Knowledge base retrieval", "<h4>Refinement",
                   "<h4>Debugger steps", "anchored the verdict"):
        assert absent not in page, absent
    assert "No LLM was called" in page


def test_optional_fields_are_rendered_when_present(enriched):
    data = load_run(enriched)
    page = render_html(data)
    assert "NOT USEFUL" in page and "Valid but not useful: the linear baseline is as good" in page
    assert "[0.220, 0.400]" in page and "[-0.090, 0.050]" in page and 'id="fig-comparisons"' in page
    assert "Knowledge base retrieval" in page and "20261101-000000-abcdef" in page
    assert "1540 tokens in all" in page and "stub-model" in page
    assert "Sandbox of the selected node: <b>bwrap</b>" in page
    n = data.verdict["transcript_head"]["records"]
    assert f"record {n} of this transcript, its last" in page
    assert data.llm_tokens() == 1540


def test_debugger_steps_and_refinement_belong_to_their_node(enriched):
    recs = node_records(load_run(enriched))
    assert [r["type"] for r in recs["n090"] if r["source"] == "Debugger"] == [
        "observe", "think", "act", "debug_fix", "NodeAbandoned"]
    assert any(r["type"] == "refinement_trace" for r in recs["n002"])
    page = render_html(load_run(enriched))
    detail = page[page.index('data-node="n090"'):]
    detail = detail[:detail.index('class="node-detail"')] if 'class="node-detail"' in detail else detail
    assert "Debugger steps" in detail and "lower the learning rate ten-fold" in detail
    assert "class Model:  # the failed node&#x27;s own code" in detail and "RuntimeError: loss is NaN" in detail


def test_tree_is_drawn_as_a_tree_with_failed_and_pruned_marked(enriched):
    data = load_run(enriched)
    pos = tree_layout(data.tree["nodes"])
    assert pos["root"][1] == 0 and pos["n001"][1] == 1 and pos["n090"][1] == 2
    kids = [pos[c][0] for c in data.tree["nodes"]["n001"]["children"]]
    assert min(kids) <= pos["n001"][0] <= max(kids)  # a parent sits above its children
    traces = {t.name: list(t.customdata) for t in tree_figure(data).data if t.customdata is not None}
    assert traces["failed"] == ["n090"] and traces["pruned (not trained)"] == ["n091"]
    assert sum(len(v) for v in traces.values()) == len(data.tree["nodes"])


def test_anchor_status_names_a_changed_transcript():
    recs = [{"hash": "a"}, {"hash": "b"}, {"hash": "c"}]
    assert anchor_status(recs, {"hash": "b", "records": 2}) == "record 2 of this transcript, followed by 1 later record(s)"
    assert "the file changed" in anchor_status(recs, {"hash": "x", "records": 2})
    assert "not found" in anchor_status(recs, {"hash": "x", "records": 9})


def test_compare_page_has_every_run_and_their_intervals(report_run, enriched):  # noqa: F811
    a, b = load_run(report_run), load_run(enriched)
    page = render_compare([a, b])
    assert page.count(a.run_id) >= 2 and 'id="compare-trees"' in page and 'id="compare-intervals"' in page
    assert "train_mean [" in page


def test_cli_report_runs_and_compare(report_run, enriched, tmp_path):  # noqa: F811
    (enriched / "report.html").unlink()
    res = cli("report", enriched)
    assert res.returncode == 0, res.stderr
    assert "NOT USEFUL" in (enriched / "report.html").read_text()
    res = cli("report", enriched, "--mlflow", "--mlflow-uri", tmp_path / "mlruns")
    if res.returncode == 0 or "MLflow is not installed" not in res.stderr:
        assert res.returncode == 0 and "node run(s) logged" in res.stdout, res.stderr
    res = cli("runs", enriched.parent)
    assert res.returncode == 0, res.stderr
    assert "1540" in res.stdout and "INVALID" not in res.stdout and "VALID" in res.stdout
    out = tmp_path / "cmp.html"
    res = cli("runs", "compare", report_run, enriched, "--out", out)
    assert res.returncode == 0, res.stderr
    assert out.exists() and "runs compared" in out.read_text()


def test_cli_report_on_a_non_run_folder_is_one_line_exit_2(tmp_path):
    res = cli("report", tmp_path)
    assert res.returncode == 2
    assert "not a HarmonyCell run folder" in res.stderr and len(res.stderr.strip().splitlines()) <= 2
    assert not (tmp_path / "report.html").exists()
    res = cli("runs", "compare", tmp_path)
    assert res.returncode == 2 and "two or more run folders" in res.stderr


def test_mlflow_export_logs_every_node_with_params_metrics_and_artifacts(enriched, tmp_path):
    mlflow = pytest.importorskip("mlflow", reason="optional extra harmonycell[mlflow] not installed")
    from harmonycell.tools.report.mlflow_export import export_run

    data = load_run(enriched)
    uri, n = export_run(data, (tmp_path / "mlruns").as_uri())
    nodes = [i for i in data.tree["nodes"] if i != "root"]
    assert n == len(nodes)
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("harmonycell")
    runs = client.search_runs([exp.experiment_id])
    by_node = {r.data.tags.get("harmonycell.node"): r for r in runs if "harmonycell.node" in r.data.tags}
    assert sorted(by_node) == sorted(nodes)
    best = by_node[data.best_node]
    assert best.data.params["action"] == data.tree["nodes"][data.best_node]["action"]
    assert best.data.params["config.seed"] == str(data.nodes[data.best_node].config["seed"])
    assert best.data.metrics["reward"] == pytest.approx(data.tree["nodes"][data.best_node]["reward"])
    assert "test_DeltaPCC" in best.data.metrics
    curve = client.get_metric_history(best.info.run_id, "train_loss")
    assert [m.step for m in curve] == [r["epoch"] for r in data.nodes[data.best_node].train_log]
    assert {a.path for a in client.list_artifacts(best.info.run_id)} >= {"model.py", "config.json"}
    assert by_node["n090"].info.status == "FAILED"
    parent = [r for r in runs if "harmonycell.node" not in r.data.tags]
    assert len(parent) == 1 and {a.path for a in client.list_artifacts(parent[0].info.run_id)} >= {"report.html"}
