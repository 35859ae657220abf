"""A killed run leaves nothing running: children die with the host process, containers are
labelled by run and reaped at `resume`, and no node is trained twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harmonycell.tools.errors import SandboxError

CLI = [sys.executable, "-m", "harmonycell.agents.cli"]
SLEEPER = "import time\nopen('started', 'w').write('1')\nwhile True:\n    time.sleep(0.1)\n"


def descendants(pid: int) -> set[int]:
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parent[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                pass
    out, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - out
        out |= frontier
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids: set[int], timeout: float = 30.0) -> set[int]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        left = {p for p in pids if alive(p)}
        if not left:
            return set()
        time.sleep(0.2)
    return {p for p in pids if alive(p)}


def wait_for(path: Path, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not path.exists():
        assert time.monotonic() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.2)


@pytest.mark.parametrize("backend", ["unsafe-local", "bwrap"])
def test_sandbox_child_dies_with_a_killed_host_process(backend, tmp_path):
    if backend == "bwrap":
        from harmonycell.sandbox.bwrap import BwrapBackend

        try:
            BwrapBackend()
        except SandboxError as why:
            pytest.skip(why.one_line())
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    work = tmp_path / "work"
    host = subprocess.Popen([*CLI, "sandbox", "run", str(script), "--backend", backend,
                             "--workdir", str(work)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(work / "started")
    children = descendants(host.pid)
    assert children
    host.kill()  # SIGKILL: no handler, no finally, nothing of the host runs again
    host.wait()
    assert wait_gone(children) == set(), f"{backend}: the sandbox outlived the host process"


@pytest.mark.docker
def test_containers_of_a_killed_run_are_reaped_by_run_id(tmp_path):
    from harmonycell.sandbox import engine

    try:
        client = engine.connect(timeout=30)
        engine.require_image(client)
    except SandboxError as why:
        if os.environ.get("CI") == "true" or os.environ.get("HARMONYCELL_REQUIRE_DOCKER") == "1":
            pytest.fail(why.one_line())
        pytest.skip(why.one_line())
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    run_id = f"test-reap-{os.getpid()}-{time.time_ns()}"
    host = subprocess.Popen([*CLI, "sandbox", "run", str(script), "--backend", "docker",
                             "--run-id", run_id, "--workdir", str(tmp_path / "work")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    label = {"label": f"{engine.LABEL_RUN}={run_id}"}
    t0 = time.monotonic()
    while not client.containers.list(filters=label):
        assert time.monotonic() - t0 < 120, "no container labelled with the run appeared"
        time.sleep(0.2)
    host.kill()
    host.wait()
    assert client.containers.list(all=True, filters=label)  # left behind by the dead process
    assert engine.reap_run_sandboxes(run_id)
    assert not client.containers.list(all=True, filters=label)


BUDGET = 3


@pytest.mark.slow  # the child's death is also covered by the fast test above
def test_sigkill_mid_node_then_resume_trains_each_node_once(synthetic_dir, tmp_path):
    from harmonycell.sandbox.bwrap import BwrapBackend

    try:
        BwrapBackend()
        backend = "bwrap"
    except SandboxError:
        backend = "unsafe-local"
    out = tmp_path / "runs"
    # the search fits its two closed-form models first (seconds); the third node is a network, whose
    # training gives a kill a node in flight to interrupt
    proc = subprocess.Popen([*CLI, "run", str(synthetic_dir / "labB_lognorm.h5ad"), "--out", str(out),
                             "--budget", str(BUDGET), "--epochs", "30", "--backend", backend],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    while True:
        assert proc.poll() is None, "the run ended before a node could be interrupted"
        assert time.monotonic() - t0 < 300, "the run never started training a node"
        # a node training now: its log is open and the harness has not reported yet
        log = next((p for p in out.glob("*/nodes/*/train_log.jsonl")
                    if not (p.parent / "harness_result.json").exists()), None)
        children = descendants(proc.pid)
        if log is not None and children:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    assert wait_gone(children) == set(), "the sandbox child trained on after the run was killed"
    run_dir = log.parents[2]
    size = log.stat().st_size
    time.sleep(1.0)
    assert log.stat().st_size == size  # nobody writes into the node folder any more

    res = subprocess.run([*CLI, "resume", str(run_dir)], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    recs = [json.loads(line) for line in (run_dir / "transcript.jsonl").read_text().splitlines()]
    runs = [r["content"]["args"]["node"] for r in recs if r["type"] == "sandbox.run_training"]
    tree = json.loads((run_dir / "tree.json").read_text())
    trained = sorted(n["id"] for n in tree["nodes"].values() if n["status"] in ("ok", "failed"))
    # each node of the budget trained (and recorded) exactly once
    assert len(runs) == len(set(runs)) == BUDGET and sorted(runs) == trained
    assert json.loads((run_dir / "status.json").read_text())["state"] == "complete"
    ok = subprocess.run([*CLI, "replay", str(run_dir), "--verify"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout
