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


def test_resume_continues_chain_and_drops_torn_line(tmp_path):
    path = make_run(tmp_path, n=3)
    with open(path, "a") as fh:
        fh.write('{"seq": 3, "trunc')  # a kill mid-write
    t = Transcript(tmp_path)
    t.append("event", "x", "resumed")
    res = verify(tmp_path)
    assert res.ok and res.n_records == 4
