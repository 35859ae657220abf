"""The Docker sandbox against a real engine and the real image.

Locally these skip (with the reason) when no engine runs or the image is not built; with CI=true
or HARMONYCELL_REQUIRE_DOCKER=1 (set by .ci/with-docker.sh) a missing engine or image FAILS them:
CI must exercise the real isolation.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from harmonycell.sandbox import engine
from harmonycell.sandbox.backends import SandboxFallbackWarning, get_backend
from harmonycell.sandbox.local import LocalBackend
from harmonycell.sandbox.result import Job
from harmonycell.sandbox.training import run_training
from harmonycell.tools.record.atomic import sha256_file
from harmonycell.tools.errors import SandboxError
from sandbox_helpers import (BROKEN_MODEL, ENDLESS, FORK_BOMB, HOG_1GIB, PROBE, TINY_CONFIG,
                             TINY_MODEL, tiny_task, write)

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def client():
    try:
        c = engine.connect(timeout=30)
        engine.require_image(c)
    except SandboxError as why:
        if os.environ.get("CI") == "true" or os.environ.get("HARMONYCELL_REQUIRE_DOCKER") == "1":
            pytest.fail(f"CI must run the Docker sandbox tests: {why.one_line()}")
        pytest.skip(f"no Docker sandbox here: {why.one_line()}")
    return c


@pytest.fixture(scope="module")
def docker(client):
    from harmonycell.sandbox.docker_backend import DockerBackend

    return DockerBackend(client=client)


def script_job(backend, tmp_path: Path, text: str, **kw) -> Job:
    script = write(tmp_path / "script.py", text)
    job = Job(command=[], workdir=tmp_path / "node", inputs={"script": script}, **kw)
    job.command = [backend.python(), backend.input_path(job, "script")]
    return job


def gone(client, name: str) -> bool:
    import docker as sdk

    try:
        client.containers.get(name)
    except sdk.errors.NotFound:
        return True
    return False


def wait_for_container(client, owner_pid: int | None = None, timeout: float = 60.0):
    """The first running sandbox container (of a given owner process)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for c in client.containers.list(filters={"label": engine.LABEL}):
            if owner_pid is None or c.labels[engine.LABEL_OWNER].split(":")[1] == str(owner_pid):
                return c
        time.sleep(0.2)
    raise AssertionError("no sandbox container appeared")


def test_isolation_inside_the_container(docker, tmp_path):
    res = docker.run(script_job(docker, tmp_path, PROBE, timeout_s=60))
    assert res.status == "ok", res.stderr_tail
    probe = json.loads(res.stdout_tail.strip().splitlines()[-1])
    assert probe["net"] == ["lo"]  # network_mode none: only loopback
    assert probe["connect"] != "ok"
    assert probe["uid"] != 0
    assert probe["cap_eff"] == "0000000000000000"
    assert probe["no_new_privs"] == "1"
    for system_path in ("/etc/hc_probe", "/usr/hc_probe", "/hc_probe", "/inputs/script/hc_probe"):
        assert probe["writes"][system_path] != "ok", system_path
    assert probe["writes"]["node.txt"] == "ok"
    assert probe["writes"]["/tmp/hc_probe"] == "ok"  # tmpfs
    # the node folder write reached the host, owned by the host user again, and is hashed
    node_file = tmp_path / "node" / "node.txt"
    assert node_file.read_text() == "written by the probe"
    assert node_file.stat().st_uid == os.getuid()
    assert res.output("node.txt").sha256 == sha256_file(node_file)
    assert not (tmp_path / "hc_probe").exists() and not (tmp_path / "script.py.hc_probe").exists()
    assert gone(docker.client, res.sandbox_id)


def test_memory_hog_is_reported_as_oom(docker, tmp_path):
    res = docker.run(script_job(docker, tmp_path, HOG_1GIB, memory="256m", timeout_s=60))
    assert res.status == "oom"
    assert gone(docker.client, res.sandbox_id)


def test_fork_bomb_stops_at_the_pids_limit(docker, tmp_path):
    res = docker.run(script_job(docker, tmp_path, FORK_BOMB, pids=64, timeout_s=60))
    assert res.status == "error" and res.exit_code == 3, res.stderr_tail
    n, errno = map(int, (tmp_path / "node" / "bomb.txt").read_text().split())
    assert n < 64 and errno == 11  # EAGAIN from fork once the cgroup holds 64 pids
    assert res.wall_s < 30
    assert gone(docker.client, res.sandbox_id)


def test_endless_loop_times_out_and_the_container_is_gone(docker, tmp_path):
    res = docker.run(script_job(docker, tmp_path, ENDLESS, timeout_s=3))
    assert res.status == "timeout"
    assert 3 <= res.wall_s < 15
    assert gone(docker.client, res.sandbox_id)


def test_cancelling_a_run_removes_its_container(docker, tmp_path):
    cancel, box = threading.Event(), {}
    job = script_job(docker, tmp_path, ENDLESS, timeout_s=120)
    t = threading.Thread(target=lambda: box.setdefault("res", docker.run(job, cancel=cancel)))
    t.start()
    running = wait_for_container(docker.client, owner_pid=os.getpid())
    cancel.set()
    t.join(30)
    assert box["res"].status == "killed"
    assert box["res"].sandbox_id == running.name
    assert gone(docker.client, running.name)


def test_ctrl_c_on_the_cli_removes_the_container(client, tmp_path):
    script = write(tmp_path / "loop.py", ENDLESS)
    proc = subprocess.Popen([sys.executable, "-c",
                             "from harmonycell.agents.cli.sandbox import app; app()",
                             "run", str(script), "--backend", "docker", "--timeout", "120"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    running = wait_for_container(client, owner_pid=proc.pid)
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
    assert proc.returncode != 0
    assert gone(client, running.name)


def test_container_of_a_crashed_host_process_stops_and_is_reaped(client, tmp_path):
    script = write(tmp_path / "loop.py", ENDLESS)
    proc = subprocess.Popen([sys.executable, "-c",
                             "from harmonycell.agents.cli.sandbox import app; app()",
                             "run", str(script), "--backend", "docker", "--timeout", "6"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HARMONYCELL_SANDBOX_GRACE_S": "1"})
    running = wait_for_container(client, owner_pid=proc.pid)
    proc.kill()  # SIGKILL: no finally block runs, the container is orphaned
    proc.wait(30)
    assert not gone(client, running.name)
    # nobody enforces the timeout from outside any more: the in-container deadline stops it.
    # (On a shared engine another HarmonyCell process may reap the orphan first: also fine.)
    t0 = time.monotonic()
    while not gone(client, running.name) and running_status(client, running.name) == "running":
        assert time.monotonic() - t0 < 20, "the orphaned container kept running"
        time.sleep(0.2)
    from harmonycell.sandbox.docker_backend import DockerBackend

    DockerBackend(client=client)  # any new backend reaps orphans first
    assert gone(client, running.name)


def test_reaper_removes_only_containers_of_dead_owners(client):
    import socket

    dead = f"{socket.gethostname()}:999999999:1"  # above pid_max: never a live process
    orphan = client.containers.create(engine.image_name(), command=["true"],
                                      labels={engine.LABEL: "1", engine.LABEL_OWNER: dead})
    mine = client.containers.create(engine.image_name(), command=["true"],
                                    labels={engine.LABEL: "1", engine.LABEL_OWNER: engine.owner_label()})
    try:
        engine.reap_orphans(client)
        assert gone(client, orphan.name) and not gone(client, mine.name)
    finally:
        mine.remove(force=True)
        if not gone(client, orphan.name):
            orphan.remove(force=True)


def running_status(client, name: str) -> str:
    import docker as sdk

    try:
        return client.containers.get(name).status
    except sdk.errors.NotFound:
        return "gone"


def test_seeded_harness_gives_the_same_predictions_in_docker_and_local(docker, tmp_path):
    data = tiny_task(tmp_path / "task")
    preds = {}
    for backend in (docker, LocalBackend()):
        node = tmp_path / backend.name
        res = run_training(backend, data, TINY_MODEL, TINY_CONFIG, node, timeout_s=300, cpus=1)
        assert res.status == "ok", res.stderr_tail
        assert res.output("pred_val.npy") and res.output("pred_test.npy")
        assert "harness.py" not in res.stderr_tail
        preds[backend.name] = {s: np.load(node / f"pred_{s}.npy") for s in ("val", "test")}
        assert json.loads((node / "harness_result.json").read_text())["device"] == "cpu"
    for split in ("val", "test"):
        np.testing.assert_allclose(preds["docker"][split], preds["unsafe-local"][split], rtol=0, atol=1e-6)
        assert np.abs(preds["docker"][split]).sum() > 0


def test_harness_frames_are_trimmed_from_a_docker_traceback(docker, tmp_path):
    data = tiny_task(tmp_path / "task")
    res = run_training(docker, data, BROKEN_MODEL, TINY_CONFIG, tmp_path / "node", timeout_s=120)
    assert res.status == "error"
    assert 'File "/work/model.py"' in res.stderr_tail and "in helper" in res.stderr_tail
    assert "ValueError: the generated model is broken here" in res.stderr_tail
    assert "/inputs/harness/harness.py" not in res.stderr_tail
    assert "harness frames hidden" in res.stderr_tail


def test_gpu_request_without_nvidia_runtime_says_what_to_do(docker, tmp_path):
    if docker.info.nvidia:
        pytest.skip("this engine has the NVIDIA runtime: the no-GPU message cannot be shown here")
    with pytest.raises(SandboxError, match="nvidia-container-toolkit"):
        docker.run(script_job(docker, tmp_path, "print(1)", gpu=True))


def test_missing_image_errors_for_docker_and_auto_falls_back_to_bwrap_or_stops(client, monkeypatch):
    missing = "harmonycell-sandbox:no-such-tag"
    with pytest.raises(SandboxError, match="harmonycell sandbox build"):
        get_backend("docker", image=missing)
    monkeypatch.setenv("HARMONYCELL_BWRAP", "/nonexistent/bwrap")
    with pytest.raises(SandboxError, match="no isolating sandbox.*unsafe-local"):
        get_backend("auto", image=missing)
    with pytest.warns(SandboxFallbackWarning, match="NO network or file-system isolation"):
        assert get_backend("auto", image=missing, allow_unwalled=True).name == "unsafe-local"
    monkeypatch.delenv("HARMONYCELL_BWRAP")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the built image: docker, and no warning
        assert get_backend("auto").name == "docker"


def test_build_is_cached_when_inputs_are_unchanged(client):
    from harmonycell.sandbox.image import build_image

    before = engine.require_image(client)
    res = build_image(log=lambda m: None)
    assert res.built is False and res.image_id == before.id
    assert before.labels[engine.LABEL_INPUTS] == res.inputs_hash


def test_check_cli_reports_the_docker_backend(client):
    from typer.testing import CliRunner

    from harmonycell.agents.cli.sandbox import app

    out = CliRunner().invoke(app, ["check", "--json", "--require-docker"])
    assert out.exit_code == 0, out.output
    rep = json.loads(out.stdout)
    assert rep["backend"] == "docker" and rep["engine_ok"] and rep["image_id"]
    assert rep["engine_version"] == engine.engine_info(client).version


def test_build_cli_up_to_date_and_missing_base_says_what_to_do(client):
    from typer.testing import CliRunner

    from harmonycell.agents.cli.sandbox import app

    out = CliRunner().invoke(app, ["build"])
    assert out.exit_code == 0 and "up to date" in out.output, out.output
    out = CliRunner().invoke(app, ["build", "--base", "no-such-base:tag"])
    assert out.exit_code == 2
    assert "no-such-base:tag is not on this engine" in out.output and "docker load" in out.output
