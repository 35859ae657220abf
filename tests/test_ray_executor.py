"""`--executor ray` on a real local Ray cluster: a head and a second worker node, each started
as its own `ray start` process (its own session, so a test can kill one whole node)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sandbox_helpers import walled_backend_name

ray = pytest.importorskip("ray", reason="the ray extra (pip install 'harmonycell[ray]') is part of the test extra")

CLI = [sys.executable, "-m", "harmonycell.agents.cli"]
RAY = [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()"]
# Ray >= 2.5x turns token authentication on for `ray start --head` once ~/.ray/auth_token exists
# (any earlier local `ray.init()` writes it), and a client given an explicit address must then say
# RAY_AUTH_MODE=token; the test cluster, its probes and the run all agree on no authentication
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_ids(address: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c",
                          "import ray, json; ray.init(address=%r, log_to_driver=False); "
                          "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']]))" % address],
                         capture_output=True, text=True, timeout=120, env=ENV)
    return json.loads(out.stdout.strip().splitlines()[-1])


class Cluster:
    def __init__(self, root: Path):
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp = Path(f"/tmp/hc-ray-{os.getpid()}-{self.port}")  # short: Ray's socket paths
        self.procs: list[subprocess.Popen] = []
        self.log = root

    def _start(self, args: list[str], name: str) -> subprocess.Popen:
        log = open(self.log / f"{name}.log", "w")
        proc = subprocess.Popen([*RAY, "start", *args, "--block", "--disable-usage-stats"],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=ENV)
        self.procs.append(proc)
        return proc

    def up(self) -> None:
        common = ["--num-cpus", "1", "--object-store-memory", str(200 * 2**20)]
        self.head = self._start(["--head", "--port", str(self.port), "--include-dashboard", "false",
                                 "--temp-dir", str(self.temp), *common], "head")
        self._wait_nodes(1)
        self.head_id = _node_ids(self.address)[0]
        self.worker = self._start(["--address", self.address, *common], "worker")
        self._wait_nodes(2)
        self.worker_id = next(n for n in _node_ids(self.address) if n != self.head_id)

    def _wait_nodes(self, n: int) -> None:
        t0 = time.monotonic()
        while True:
            try:
                if len(_node_ids(self.address)) >= n:
                    return
            except (json.JSONDecodeError, IndexError, subprocess.TimeoutExpired):
                pass
            assert time.monotonic() - t0 < 120, f"the Ray cluster never had {n} node(s): see {self.log}"
            time.sleep(1)

    def kill_session(self, proc: subprocess.Popen) -> None:
        """SIGKILL the node's whole session: `ray start`, its raylet, its workers."""
        out = subprocess.run(["pkill", "-9", "-s", str(proc.pid)], capture_output=True)
        assert out.returncode in (0, 1)
        proc.wait(timeout=30)

    def down(self) -> None:
        for proc in reversed(self.procs):  # a graceful `ray stop` waits ~30 s per node for nothing
            subprocess.run(["pkill", "-9", "-s", str(proc.pid)])
            proc.wait(timeout=30)
        subprocess.run(["rm", "-rf", str(self.temp)])


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        c.up()
        yield c
    finally:
        c.down()


def _run(synthetic_dir: Path, out: Path, address: str, budget: int, epochs: int) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "run", str(synthetic_dir / "labB_lognorm.h5ad"), "--out", str(out),
                             "--budget", str(budget), "--epochs", str(epochs), "--backend", walled_backend_name(),
                             "--executor", "ray", "--ray-address", address, "--workers", "2", "--no-kb"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)


def _records(out: Path) -> list[dict]:
    run_dir = next(out.iterdir())
    return [json.loads(line) for line in (run_dir / "transcript.jsonl").read_text().splitlines()]


def _runs(recs: list[dict]) -> list[dict]:
    return [r for r in recs if r["type"] == "sandbox.run_training"]


def test_a_search_on_a_two_node_ray_cluster_uses_both_nodes(cluster, synthetic_dir, tmp_path):
    out = tmp_path / "runs"
    proc = _run(synthetic_dir, out, cluster.address, budget=2, epochs=8)
    log, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log[-3000:]
    runs = _runs(_records(out))
    assert len(runs) == 2
    assert {r["content"]["result"]["where"] for r in runs} == {cluster.head_id, cluster.worker_id}
    assert all(r["content"]["result"]["executor"] == "ray" for r in runs)
    # the predictions came back byte for byte: the host scored them against the worker's sha256
    assert all(r["content"]["result"]["status"] == "ok" for r in runs)


def test_killing_a_ray_worker_mid_node_retries_the_node_elsewhere_once(cluster, synthetic_dir, tmp_path):
    out = tmp_path / "runs"
    proc = _run(synthetic_dir, out, cluster.address, budget=3, epochs=40)
    t0 = time.monotonic()
    while not subprocess.run(["pgrep", "-s", str(cluster.worker.pid), "-f", "train_on_worker"],
                             capture_output=True).stdout.strip():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() - t0 < 300, "no node ever ran on the worker node"
        time.sleep(0.5)
    time.sleep(2)  # the node is training on the worker
    cluster.kill_session(cluster.worker)
    log, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log[-3000:]
    recs = _records(out)
    retried = [r for r in recs if r["type"] == "node_retried"]
    assert len(retried) == 1
    assert retried[0]["content"]["lost"].split()[0].endswith("Error")  # Ray's word for the loss, e.g. NodeDiedError
    node = retried[0]["content"]["node"]
    again = [r for r in _runs(recs) if r["content"]["args"]["node"] == node]
    assert len(again) == 1 and again[0]["content"]["result"]["where"] == cluster.head_id
    assert again[0]["content"]["result"]["retried"]
    run_dir = next(out.iterdir())
    tree = json.loads((run_dir / "tree.json").read_text())
    trained = sorted(n["id"] for n in tree["nodes"].values() if n["status"] in ("ok", "failed"))
    assert sorted(r["content"]["args"]["node"] for r in _runs(recs)) == trained and len(trained) == 3
    assert json.loads((run_dir / "status.json").read_text())["state"] == "complete"


def _raylets() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "ray/raylet/raylet"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def test_without_an_address_a_local_ray_instance_is_started_for_the_run_and_stopped(synthetic_dir, tmp_path):
    before = _raylets()
    out = tmp_path / "runs"
    res = subprocess.run([*CLI, "run", str(synthetic_dir / "labB_lognorm.h5ad"), "--out", str(out),
                          "--budget", "1", "--epochs", "4", "--backend", walled_backend_name(),
                          "--executor", "ray", "--no-kb"], capture_output=True, text=True, timeout=900, env=ENV)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    runs = _runs(_records(out))
    assert len(runs) == 1 and runs[0]["content"]["result"]["executor"] == "ray"
    t0 = time.monotonic()
    while _raylets() - before:  # the run's own instance is gone with it
        assert time.monotonic() - t0 < 60, "the run's local Ray instance outlived the run"
        time.sleep(1)
