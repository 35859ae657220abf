"""The sandbox reports the CPU time of the job's process tree (the search's load-independent cost)."""

import sys
import pytest

from harmonycell.sandbox.local import LocalBackend
from harmonycell.sandbox.result import Job

BUSY = "import time\nt=time.process_time()\nwhile time.process_time()-t<{s}: pass\n"


def test_local_cpu_time_counts_busy_work_and_a_grandchild_not_sleep(tmp_path):
    # 0.6 s of busy work in the child, 0.6 s more in a grandchild it waits for, 1 s asleep
    code = (BUSY.format(s=0.6) + "import subprocess, sys\n"
            f"subprocess.run([sys.executable, '-c', {BUSY.format(s=0.6)!r}], check=True)\n"
            "time.sleep(1.0)\n")
    job = Job(command=[sys.executable, "-c", code], workdir=tmp_path / "w", timeout_s=60)
    res = LocalBackend().run(job)
    assert res.ok, res.stderr_tail
    assert res.cpu_s is not None
    assert 1.1 <= res.cpu_s <= 1.1 + 1.0  # both processes' work; interpreter start-up adds a little
    assert res.wall_s >= res.cpu_s - 0.2 + 0.9  # the sleep is in wall time, not in CPU time


@pytest.mark.docker
def test_docker_cpu_time_is_reported_from_the_container_cgroup(tmp_path):
    from harmonycell.sandbox import engine
    from harmonycell.sandbox.docker_backend import DockerBackend
    from harmonycell.tools.errors import SandboxError

    try:
        backend = DockerBackend(client=engine.connect(timeout=30))
    except SandboxError as why:
        pytest.skip(f"no Docker sandbox here: {why.one_line()}")
    script = tmp_path / "busy.py"
    script.write_text(BUSY.format(s=1.5) + "time.sleep(1.0)\n")
    job = Job(command=[], workdir=tmp_path / "node", inputs={"script": script}, timeout_s=120)
    job.command = [backend.python(), backend.input_path(job, "script")]
    res = backend.run(job)
    assert res.ok, res.stderr_tail
    # sampled every poll until the exit: the last ~0.25 s may be missed, the sleep is not counted
    assert res.cpu_s is not None and 1.2 <= res.cpu_s <= 2.5


def test_bwrap_cpu_time_counts_the_namespaced_tree_not_sleep(tmp_path):
    # inside bwrap's pid namespace its own init reaps the job, so os.wait4 on bwrap alone saw ~0 s:
    # the tree is sampled from /proc instead (a grandchild included)
    from harmonycell.sandbox.bwrap import BwrapBackend
    from harmonycell.tools.errors import SandboxError

    try:
        backend = BwrapBackend()
    except SandboxError as why:
        pytest.skip(f"no bubblewrap sandbox here: {why.one_line()}")
    code = (BUSY.format(s=0.8) + "import subprocess, sys\n"
            f"subprocess.run([sys.executable, '-c', {BUSY.format(s=0.8)!r}], check=True)\n"
            "time.sleep(1.0)\n")
    job = Job(command=[backend.python(), "-c", code], workdir=tmp_path / "w", timeout_s=60)
    res = backend.run(job)
    assert res.ok, res.stderr_tail
    assert res.cpu_s is not None
    assert 1.2 <= res.cpu_s <= 1.6 + 1.0  # both processes' work, less at most a poll of each
    assert res.wall_s >= res.cpu_s - 0.2 + 0.9
