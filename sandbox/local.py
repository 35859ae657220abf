"""Local backend: a child process in its own process group, killed as a group on timeout.

It does NOT isolate the network or the file system; it exists for machines without a Docker
engine and says so when chosen.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harmonycell.sandbox.outputs import collect_outputs, tail
from harmonycell.sandbox.result import ExecutionResult, Job


class LocalBackend:
    name = "local"

    def input_path(self, job: Job, name: str) -> str:
        return str(job.inputs[name])

    def python(self) -> str:
        return sys.executable

    def run(self, job: Job) -> ExecutionResult:
        job.workdir.mkdir(parents=True, exist_ok=True)
        out_path, err_path = job.workdir / "stdout.log", job.workdir / "stderr.log"
        env = {**os.environ, **job.env}
        t0 = time.monotonic()
        status, code = "ok", None
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                job.command, cwd=job.workdir, stdout=out, stderr=err, env=env,
                start_new_session=True,
            )
            try:
                code = proc.wait(timeout=job.timeout_s)
                status = "ok" if code == 0 else "error"
            except subprocess.TimeoutExpired:
                status = "timeout"
                _kill_group(proc)
            except BaseException:
                _kill_group(proc)
                raise
        return ExecutionResult(
            status=status, exit_code=code, wall_s=round(time.monotonic() - t0, 3),
            backend=self.name, stdout_tail=tail(out_path), stderr_tail=tail(err_path),
            outputs=collect_outputs(job.workdir),
        )


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
