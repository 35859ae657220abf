"""The bubblewrap backend: the same wall as Docker without an engine (no engine needed)."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from harmonycell.agents.cli.sandbox import app
from harmonycell.sandbox.result import Job
from harmonycell.tools.errors import SandboxError
from sandbox_helpers import PROBE, write

REQUIRED = os.environ.get("CI") == "true" or os.environ.get("HARMONYCELL_REQUIRE_DOCKER") == "1"


@pytest.fixture(scope="module")
def bwrap():
    from harmonycell.sandbox.bwrap import BwrapBackend

    try:
        return BwrapBackend()
    except SandboxError as why:
        if REQUIRED:
            pytest.fail(f"CI must run the bubblewrap tests: {why.one_line()}")
        pytest.skip(why.one_line())


def test_isolation_inside_bwrap(bwrap, tmp_path):
    # no /sys inside bwrap: the interfaces come from the kernel through the socket module
    text = PROBE.replace('"/inputs/script/hc_probe"', '"/inputs/script/probe.py"').replace(
        'sorted(os.listdir("/sys/class/net"))', "sorted(n for _, n in socket.if_nameindex())")
    script = write(tmp_path / "probe.py", text)
    job = Job(command=[], workdir=tmp_path / "node", inputs={"script": script})
    job.command = [bwrap.python(), bwrap.input_path(job, "script")]
    res = bwrap.run(job)
    assert res.ok and res.isolated and res.backend == "bwrap" and not res.warnings, res.stderr_tail
    r = json.loads(res.stdout_tail)
    assert r["connect"] != "ok" and r["net"] == ["lo"]
    assert r["cap_eff"] == "0000000000000000"
    writes = r["writes"]
    assert writes["node.txt"] == "ok" and writes["/tmp/hc_probe"] == "ok"
    for p in ("/etc/hc_probe", "/usr/hc_probe", "/hc_probe", "/inputs/script/probe.py"):
        assert writes[p] != "ok", p
    assert (tmp_path / "node" / "node.txt").exists()
    assert not os.path.exists("/tmp/hc_probe")  # the sandbox's /tmp is its own
    assert script.read_text().startswith("\nimport json")  # the read-only input is intact


def test_cli_sandbox_run_on_bwrap_sees_only_its_folder(bwrap, tmp_path):
    script = write(tmp_path / "s.py", "import os\nprint(sorted(os.listdir('/')))\nprint(os.getcwd())")
    out = CliRunner().invoke(app, ["run", str(script), "--backend", "bwrap", "--json",
                                   "--workdir", str(tmp_path / "work")])
    assert out.exit_code == 0, out.output
    res = json.loads(out.stdout)
    assert res["isolated"] is True and res["backend"] == "bwrap"
    listing, cwd = res["stdout_tail"].strip().splitlines()
    assert cwd == "/node" and "tmp" in listing and str(tmp_path).split("/")[1] not in ("node", "inputs")
