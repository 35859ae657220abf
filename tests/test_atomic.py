import os

import pytest

from harmonycell.tools.record import atomic


def test_write_replaces_whole_file(tmp_path):
    p = tmp_path / "a" / "f.json"
    atomic.write_json(p, {"x": 1})
    atomic.write_json(p, {"x": 2})
    assert p.read_text().strip().endswith("}") and '"x": 2' in p.read_text()
    assert [f.name for f in p.parent.iterdir()] == ["f.json"]


def test_failed_write_keeps_old_content_and_leaves_no_temp(tmp_path):
    p = tmp_path / "f.txt"
    atomic.write_text(p, "old")

    def boom(tmp):
        tmp.write_text("half-writ")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic.write_with(p, boom)
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_sha256_file(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"abc")
    assert atomic.sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_written_files_get_the_ordinary_mode(tmp_path):
    umask = os.umask(0o022)
    try:
        p = atomic.write_text(tmp_path / "f.txt", "x")
        assert p.stat().st_mode & 0o777 == 0o644  # readable by the sandbox's non-root user
    finally:
        os.umask(umask)
