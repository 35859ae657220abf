"""Scripts, a tiny task and a tiny model shared by the sandbox tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

PROBE = '''
import json, os, socket
r = {"uid": os.getuid(), "net": sorted(os.listdir("/sys/class/net")), "writes": {}}
for p in ("/etc/hc_probe", "/usr/hc_probe", "/hc_probe", "/inputs/script/hc_probe", "node.txt", "/tmp/hc_probe"):
    try:
        with open(p, "w") as fh:
            fh.write("written by the probe")
        r["writes"][p] = "ok"
    except OSError as e:
        r["writes"][p] = e.strerror
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
r["cap_eff"] = status["CapEff"].strip()
r["no_new_privs"] = status["NoNewPrivs"].strip()
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2)
    r["connect"] = "ok"
except OSError as e:
    r["connect"] = e.strerror
print(json.dumps(r))
'''

HOG_1GIB = 'x = b"x" * (1 << 30)  # touched, so it is really resident\nprint(len(x))\n'
ENDLESS = "while True:\n    pass\n"
FORK_BOMB = '''
import os, sys, time
n = 0
try:
    while True:
        if os.fork() == 0:  # every child stays alive, holding a pid
            time.sleep(120)
            os._exit(0)
        n += 1
except OSError as e:
    with open("bomb.txt", "w") as fh:
        fh.write(f"{n} {e.errno}")
    sys.exit(3)
'''

TINY_MODEL = '''
import torch

class Shift(torch.nn.Module):
    def __init__(self, info):
        super().__init__()
        self.effect = torch.nn.Linear(info["n_perts"], info["n_genes"])

    def forward(self, x_ctrl, pert):
        return x_ctrl + self.effect(pert["mask"] * pert["dose"])

def build_model(info):
    return Shift(info)
'''

BROKEN_MODEL = '''
def helper():
    raise ValueError("the generated model is broken here")

def build_model(info):
    helper()
'''

TINY_CONFIG = {"seed": 3, "epochs": 4, "batch_size": 32, "lr": 1e-2, "patience": 10}


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def tiny_task(out: Path) -> Path:
    """A sandbox-visible task folder exported from a small canonical AnnData."""
    from metrics_data import make_canonical

    from harmonycell.tools.data.taskdata import export_sandbox_data

    export_sandbox_data(make_canonical(n_genes=30, n_perts=10, cells_per=12, n_ctrl=60), out)
    return out


def walled_backend_name() -> str:
    """bwrap where it can make a sandbox here, else unsafe-local (tests of the search, not the wall)."""
    from harmonycell.sandbox.bwrap import BwrapBackend
    from harmonycell.tools.errors import SandboxError

    try:
        BwrapBackend()
        return "bwrap"
    except SandboxError:
        return "unsafe-local"
