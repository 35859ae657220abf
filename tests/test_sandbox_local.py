"""The local backend, backend selection and the sandbox CLI's bad-input messages (no engine needed)."""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harmonycell.agents.cli.sandbox import app
from harmonycell.sandbox.backends import SandboxFallbackWarning, get_backend
from harmonycell.sandbox.local import LocalBackend, parse_bytes
from harmonycell.sandbox.result import Job
from harmonycell.sandbox.training import run_training
from harmonycell.tools.record.atomic import sha256_file
from harmonycell.tools.errors import SandboxError
from sandbox_helpers import BROKEN_MODEL, ENDLESS, HOG_1GIB, TINY_CONFIG, TINY_MODEL, tiny_task, write

CHILD_THEN_LOOP = '''
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
open("child.pid", "w").write(str(child.pid))
while True:
    pass
'''


def job_for(tmp_path: Path, text: str, **kw) -> Job:
    b = LocalBackend()
    script = write(tmp_path / "script.py", text)
    job = Job(command=[], workdir=tmp_path / "node", inputs={"script": script}, **kw)
    job.command = [b.python(), b.input_path(job, "script")]
    return job


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by init) counts as gone
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_ok_run_lists_outputs_with_sha256_and_warns_it_isolates_nothing(tmp_path):
    res = LocalBackend().run(job_for(tmp_path, "open('out.txt', 'w').write('hello')\nprint('done')"))
    assert res.status == "ok" and res.exit_code == 0
    assert res.stdout_tail.strip() == "done"
    assert res.output("out.txt").sha256 == sha256_file(tmp_path / "node" / "out.txt")
    assert any("NO network or file-system isolation" in w for w in res.warnings)


def test_timeout_kills_the_whole_process_group(tmp_path):
    res = LocalBackend().run(job_for(tmp_path, CHILD_THEN_LOOP, timeout_s=3))
    assert res.status == "timeout" and 3 <= res.wall_s < 10
    child = int((tmp_path / "node" / "child.pid").read_text())
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(child)


def test_cancel_kills_the_run(tmp_path):
    cancel, box = threading.Event(), {}
    job = job_for(tmp_path, ENDLESS, timeout_s=60)
    t = threading.Thread(target=lambda: box.setdefault("res", LocalBackend().run(job, cancel=cancel)))
    t.start()
    time.sleep(1.0)
    cancel.set()
    t.join(10)
    assert box["res"].status == "killed" and box["res"].wall_s < 10


def test_memory_limit_gives_oom(tmp_path):
    res = LocalBackend().run(job_for(tmp_path, HOG_1GIB, memory="256m", timeout_s=30))
    assert res.status == "oom"
    assert "MemoryError" in res.stderr_tail


def test_script_error_is_error_with_its_traceback(tmp_path):
    res = LocalBackend().run(job_for(tmp_path, "raise KeyError('nope')"))
    assert res.status == "error" and res.exit_code == 1
    assert "KeyError: 'nope'" in res.stderr_tail and "script.py" in res.stderr_tail


def test_seeded_training_is_reproducible_and_harness_frames_are_trimmed(tmp_path):
    data = tiny_task(tmp_path / "task")
    a = run_training(LocalBackend(), data, TINY_MODEL, TINY_CONFIG, tmp_path / "a", timeout_s=120)
    b = run_training(LocalBackend(), data, TINY_MODEL, TINY_CONFIG, tmp_path / "b", timeout_s=120)
    assert a.status == b.status == "ok", a.stderr_tail
    assert a.output("pred_val.npy").sha256 == b.output("pred_val.npy").sha256
    assert a.output("pred_test.npy").sha256 == b.output("pred_test.npy").sha256
    bad = run_training(LocalBackend(), data, BROKEN_MODEL, TINY_CONFIG, tmp_path / "c", timeout_s=120)
    assert bad.status == "error"
    assert "model.py" in bad.stderr_tail and "in helper" in bad.stderr_tail
    assert "harness.py" not in bad.stderr_tail and "frozen importlib" not in bad.stderr_tail
    assert "harness frames hidden" in bad.stderr_tail


def test_gpu_requested_where_there_is_none(tmp_path):
    if LocalBackend().gpu_available():
        pytest.skip("this host has a CUDA device: the no-GPU message cannot be shown here")
    with pytest.raises(SandboxError, match="no CUDA device"):
        LocalBackend().run(job_for(tmp_path, "print(1)", gpu=True))


def test_parse_bytes():
    assert parse_bytes("256m") == 256 << 20 and parse_bytes("1g") == 1 << 30
    assert parse_bytes("1GiB") == 1 << 30 and parse_bytes("1.5k") == 1536
    for bad in ("lots", "-1g", "0"):
        with pytest.raises(SandboxError, match="--memory"):
            parse_bytes(bad)


def bwrap_works() -> bool:
    from harmonycell.sandbox.bwrap import BwrapBackend

    try:
        BwrapBackend()
        return True
    except SandboxError:
        return False


def test_no_engine_docker_errors_and_auto_uses_bwrap(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(SandboxError, match="no Docker engine answers.*dockerd"):
        get_backend("docker")
    if not bwrap_works():
        pytest.skip("bubblewrap cannot run here")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a wall: nothing to warn about
        assert get_backend("auto").name == "bwrap"
    with pytest.raises(SandboxError, match="unknown sandbox backend"):
        get_backend("podman")


def test_without_any_wall_auto_stops_naming_both_unless_builtin_code_may_fall_back(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.setenv("HARMONYCELL_BWRAP", "/nonexistent/bwrap")
    with pytest.raises(SandboxError, match="docker: no Docker engine.*bwrap: bubblewrap.*--backend unsafe-local"):
        get_backend("auto")
    with pytest.warns(SandboxFallbackWarning, match="no isolating sandbox.*NO network"):
        assert get_backend("auto", allow_unwalled=True).name == "unsafe-local"
    with pytest.warns(SandboxFallbackWarning, match="UNSAFE-LOCAL"):
        assert get_backend("local").name == "unsafe-local"  # the old name still means the same


def test_cli_run_missing_script_says_what_to_do(tmp_path):
    out = CliRunner().invoke(app, ["run", str(tmp_path / "nope.py")])
    assert out.exit_code == 2
    assert "no such script" in out.output and "existing .py file" in out.output


def test_cli_run_no_engine_with_docker_says_start_one(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    script = write(tmp_path / "s.py", "print(1)")
    out = CliRunner().invoke(app, ["run", str(script), "--backend", "docker"])
    assert out.exit_code == 2 and "no Docker engine" in out.output and "--backend bwrap" in out.output


def test_cli_run_local_json_and_warning(tmp_path):
    script = write(tmp_path / "s.py", "import os\nprint(os.getcwd())\nopen('f.txt', 'w').write('x')")
    work = tmp_path / "work"
    out = CliRunner().invoke(app, ["run", str(script), "--backend", "unsafe-local", "--json", "--workdir", str(work)])
    assert out.exit_code == 0, out.output
    assert "WARNING: UNSAFE-LOCAL backend" in out.stderr
    res = json.loads(out.stdout)
    assert res["status"] == "ok" and res["stdout_tail"].strip() == str(work) and res["isolated"] is False
    assert [o["path"] for o in res["outputs"]] == ["f.txt"]
    failing = write(tmp_path / "bad.py", "raise SystemExit(4)")
    out = CliRunner().invoke(app, ["run", str(failing), "--backend", "unsafe-local", "--json"])
    assert out.exit_code == 1 and json.loads(out.stdout)["exit_code"] == 4


def test_cli_check_without_engine_points_to_the_fix(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    out = CliRunner().invoke(app, ["check", "--json"])
    assert out.exit_code == 0
    rep = json.loads(out.stdout)
    assert rep["backend"] == ("bwrap" if bwrap_works() else "none")
    assert not rep["engine_ok"] and "dockerd" in rep["fix"]
    monkeypatch.setenv("HARMONYCELL_BWRAP", "/nonexistent/bwrap")
    none = CliRunner().invoke(app, ["check", "--json"])
    assert json.loads(none.stdout)["backend"] == "none" and "no isolating sandbox" in none.stderr
    strict = CliRunner().invoke(app, ["check", "--require-docker"])
    assert strict.exit_code == 2


def test_owner_label_liveness():
    import socket

    from harmonycell.sandbox.engine import owner_alive, owner_label

    assert owner_alive(owner_label())
    assert not owner_alive(f"{socket.gethostname()}:999999999:1")
    assert not owner_alive("garbage")
    assert owner_alive("some-other-host:1:1")  # another machine's run is not ours to judge
