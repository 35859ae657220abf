import json

import pytest

from harmonycell.tools.record.transcript import Transcript, verify


def make_run(tmp_path, n=5):
    (tmp_path / "artifact.txt").write_text("predictions")
    t = Transcript(tmp_path)
    for i in range(n):
        arts = [t.artifact(tmp_path / "artifact.txt")] if i == 2 else []
        t.append("message", f"Agent{i}", "Thing", {"i": i, "text": f"hello {i}"}, arts)
    return tmp_path / "transcript.jsonl"


def test_clean_chain_verifies(tmp_path):
    make_run(tmp_path)
    res = verify(tmp_path)
    assert res.ok and res.n_records == 5


@pytest.mark.parametrize("field", ["content", "source", "type", "ts", "kind", "prev"])
@pytest.mark.parametrize("seq", [0, 3, 4])
def test_editing_any_field_names_that_record(tmp_path, field, seq):
    path = make_run(tmp_path)
    lines = path.read_text().splitlines()
    rec = json.loads(lines[seq])
    rec[field] = {"tampered": True} if field == "content" else "x" + str(rec[field])
    lines[seq] = json.dumps(rec, sort_keys=True)
    path.write_text("\n".join(lines) + "\n")
    res = verify(tmp_path)
    assert not res.ok
    assert res.first_bad == seq


def test_deleting_a_record_is_caught(tmp_path):
    path = make_run(tmp_path)
    lines = path.read_text().splitlines()
    del lines[1]
    path.write_text("\n".join(lines) + "\n")
    res = verify(tmp_path)
    assert not res.ok and res.first_bad == 1


def test_changed_artifact_is_caught(tmp_path):
    make_run(tmp_path)
    (tmp_path / "artifact.txt").write_text("other predictions")
    res = verify(tmp_path)
    assert not res.ok and res.first_bad == 2 and "artifact.txt" in res.reason


def test_reopening_moves_a_torn_final_line_aside_and_records_it(tmp_path):
    path = make_run(tmp_path, n=3)
    with open(path, "a") as fh:
        fh.write('{"seq": 3, "trunc')  # a kill mid-write
    t = Transcript(tmp_path)
    t.append("event", "x", "resumed")
    res = verify(tmp_path)
    assert res.ok and res.n_records == 5
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["seq"] for r in recs] == [0, 1, 2, 3, 4]  # no complete record was removed
    assert recs[3]["type"] == "torn_tail_moved" and recs[3]["content"]["bytes"] == len('{"seq": 3, "trunc')
    assert (tmp_path / "transcript.jsonl.torn").read_text() == '{"seq": 3, "trunc\n'


def test_reopening_keeps_a_complete_last_record_without_newline(tmp_path):
    path = make_run(tmp_path, n=3)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    Transcript(tmp_path).append("event", "x", "resumed")
    res = verify(tmp_path)
    assert res.ok and res.n_records == 4 and not (tmp_path / "transcript.jsonl.torn").exists()


@pytest.mark.parametrize("damage", ["not json", "edited"])
def test_reopening_refuses_a_damaged_middle_record_and_leaves_the_file_untouched(tmp_path, damage):
    from harmonycell.tools.errors import TranscriptError

    path = make_run(tmp_path, n=5)
    lines = path.read_text().splitlines()
    if damage == "not json":
        lines[2] = lines[2][:40]
    else:
        rec = json.loads(lines[2])
        rec["content"]["text"] = "rewritten"
        lines[2] = json.dumps(rec, sort_keys=True)
    path.write_text("\n".join(lines) + "\n")
    before = path.read_bytes()
    with pytest.raises(TranscriptError, match="line 3" if damage == "not json" else "record 2"):
        Transcript(tmp_path)
    assert path.read_bytes() == before and not (tmp_path / "transcript.jsonl.torn").exists()


def test_a_file_recorded_again_is_checked_against_its_latest_record(tmp_path):
    t = Transcript(tmp_path)
    f = tmp_path / "config.json"
    f.write_text("attempt 1")
    t.append("tool_call", "Coder", "run", None, [t.artifact(f)])
    f.write_text("attempt 2")  # the Debugger re-runs the node with a patched config
    t.append("tool_call", "Debugger", "run", None, [t.artifact(f)])
    assert verify(tmp_path).ok
    f.write_text("swapped")
    res = verify(tmp_path)
    assert not res.ok and res.first_bad == 1 and "config.json" in res.reason


def test_anchor_pins_the_chain(tmp_path):
    make_run(tmp_path, n=4)
    head, n = Transcript(tmp_path).head()
    assert n == 4
    assert verify(tmp_path, anchor=head).ok and verify(tmp_path, anchor=head).anchored_at == 3
    # whoever rewrites a record and re-hashes the chain gets a valid chain with another head
    path = tmp_path / "transcript.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    recs[1]["content"]["text"] = "rewritten"
    rehash_chain(recs)
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in recs))
    assert verify(tmp_path).ok
    res = verify(tmp_path, anchor=head)
    assert not res.ok and "anchor" in res.reason


def rehash_chain(recs):
    from harmonycell.tools.record.transcript import GENESIS, record_hash

    prev = GENESIS
    for r in recs:
        r["prev"] = prev
        r["hash"] = record_hash(r)
        prev = r["hash"]


def test_content_artifacts_finds_every_file_reference():
    from harmonycell.tools.record.transcript import content_artifacts

    sha = "a" * 64
    content = {"code": {"path": "nodes/n1/model.py", "sha256": sha},
               "predictions": {"val": {"path": "nodes/n1/pred_val.npy", "sha256": sha},
                               "test": {"path": "nodes/n1/pred_test.npy", "sha256": sha}},
               "mapping_specs": [{"path": "unify/a.json", "sha256": sha}], "n": 3}
    assert [a.path for a in content_artifacts(content)] == [
        "nodes/n1/model.py", "nodes/n1/pred_val.npy", "nodes/n1/pred_test.npy", "unify/a.json"]


def test_resume_refuses_a_corrupt_middle_record_and_leaves_the_run_untouched(synthetic_dir, tmp_path):
    import subprocess
    import sys

    from harmonycell.tools.record.runfolder import create_run

    run = create_run(tmp_path / "runs", [synthetic_dir / "labB_lognorm.h5ad"], "unseen-perturbation")
    make_run(run.root, n=6)
    run.set_status("failed", "killed")
    path = run.transcript
    lines = path.read_text().splitlines()
    lines[3] = lines[3][:25]  # bytes lost in the middle of the file
    path.write_text("\n".join(lines) + "\n")
    before = {p.name: p.read_bytes() for p in run.root.iterdir() if p.is_file()}
    res = subprocess.run([sys.executable, "-m", "harmonycell.agents.cli", "resume", str(run.root)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "line 4" in res.stderr and "not valid JSON" in res.stderr
    assert {p.name: p.read_bytes() for p in run.root.iterdir() if p.is_file()} == before
