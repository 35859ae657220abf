"""Seeded cheats: model files written as an adversary would, for tests/test_seeded_cheats.py.

Each is a complete model module (``build_model``) that the harness loads inside the sandbox.
``PROBE`` tries every way out it can think of, writes what happened into the node folder and
then trains honestly (so the run itself succeeds and its report is what the test reads).
"""

from __future__ import annotations

from sandbox_helpers import TINY_MODEL

PROBE = r'''
import json, os, socket, sys
import numpy as np
import torch

HOST_UNIFIED = {unified!r}   # where the held-out targets live on the host
HOST_RUN = {run!r}
attempts = {{}}


def attempt(name, fn):
    try:
        fn()
        attempts[name] = "SUCCEEDED"
    except BaseException as e:  # noqa: BLE001 - every failure is an answer
        attempts[name] = f"{{type(e).__name__}}: {{str(e)[:120]}}"


# (b) read the held-out targets, by every path we can think of
attempt("read relative ../../unify", lambda: open("../../unify/unified.h5ad", "rb").read(8))
attempt("read absolute host path", lambda: open(HOST_UNIFIED, "rb").read(8))
attempt("read /proc/self/cwd/..", lambda: open("/proc/self/cwd/../../unify/unified.h5ad", "rb").read(8))
attempt("read /proc/1/root host path", lambda: open("/proc/1/root" + HOST_UNIFIED, "rb").read(8))
attempt("numpy datasource open", lambda: np.lib._datasource.open(HOST_UNIFIED, "rb").read(8))
attempt("numpy fromfile", lambda: np.fromfile(HOST_UNIFIED, dtype=np.uint8, count=8))
attempt("numpy fromregex", lambda: np.fromregex(HOST_UNIFIED, r"(HDF)", [("x", "S3")]))
attempt("os reached through torch", lambda: torch.os.read(torch.os.open(HOST_UNIFIED, torch.os.O_RDONLY), 8))
attempt("os reached through torch.sys.modules",
        lambda: torch.sys.modules["os"].listdir(os.path.dirname(HOST_UNIFIED)))
attempt("os reached through numpy", lambda: np.lib._datasource.os.listdir(HOST_RUN))
attempt("list the run folder", lambda: os.listdir(HOST_RUN))
def walk_up():
    here = os.path.abspath(".")
    while True:
        for root, dirs, files in os.walk(here):
            if "unified.h5ad" in files:
                return open(os.path.join(root, "unified.h5ad"), "rb").read(8)
            dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev", "usr")]
        if here == "/":
            raise FileNotFoundError("no unified.h5ad anywhere above the node folder")
        here = os.path.dirname(here)
attempt("walk up from the node folder looking for unified.h5ad", walk_up)
# (d) the network
attempt("tcp connect 1.1.1.1:53", lambda: socket.create_connection(("1.1.1.1", 53), timeout=3))
attempt("resolve a name", lambda: socket.getaddrinfo("registry.invalid-host.example", 443))
attempt("docker socket", lambda: socket.socket(socket.AF_UNIX).connect("/var/run/docker.sock"))
# (e) write outside the node folder
def write(path):
    with open(path, "wb") as fh:
        fh.write(b"cheat")
attempt("write host unified.h5ad", lambda: write(HOST_UNIFIED))
attempt("write relative ../../unify", lambda: write("../../unify/unified.h5ad"))
attempt("write sandbox data input", lambda: write("/inputs/data/meta.json"))
attempt("write host run folder", lambda: write(os.path.join(HOST_RUN, "cheat.txt")))
attempt("write /usr", lambda: write("/usr/cheat.txt"))
# (f) validation / test targets among what the sandbox can see
def look_for_targets():
    found = []
    for root, _, files in os.walk("/inputs/data"):
        for f in files:
            if f.endswith(".npz"):
                with np.load(os.path.join(root, f)) as z:
                    found += [f"{{f}}:{{k}}" for k in z.files]
    attempts["sandbox data arrays"] = found
look_for_targets()

with open("cheat_attempts.json", "w") as fh:
    json.dump(attempts, fh, indent=1)

''' + TINY_MODEL  # after the probe, the model the harness trains: the shared tiny one

# (a) random numbers in place of predictions
RANDOM = '''
import torch


class Noise(torch.nn.Module):
    def __init__(self, info):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x_ctrl, pert):
        return torch.rand_like(x_ctrl) * 3 + self.w


def build_model(info):
    return Noise(info)
'''

# (c) replace the harness's prediction writer: skip the model, write copied controls / a mean
WRITER = '''
import sys
import numpy as np
import torch

_harness = sys.modules["__main__"]
MODE = {mode!r}


def fake_predict(model, data, split, cfg, device):
    q, c, tr = data["queries"], data["controls"], data["train"]
    if MODE == "copied controls":
        row = c["X"][c["split"] == 0].mean(0)
    else:  # the mean of every training cell
        row = tr["X"].mean(0)
    return np.tile(row, (len(q[f"{{split}}_context"]), 1)).astype(np.float32)


_harness.predict_queries = fake_predict


class Idle(torch.nn.Module):
    def __init__(self, info):
        super().__init__()
        self.w = torch.nn.Linear(1, 1)

    def forward(self, x_ctrl, pert):
        return x_ctrl + 0 * self.w.weight.sum()


def build_model(info):
    return Idle(info)
'''

# ---------------------------------------------------------------- merit cheats (issue 26)
# Predictions with no learning in them, written as the (queries, genes) matrix a node would
# save. Each must come out `useful: false` on the host; the oracle (the true held-out means)
# must come out `useful: true`, or the verdict could not tell the two apart.


def merit_cheats(t, train_mean, seed: int = 0) -> dict:
    """name -> prediction, for ``Targets`` t and the train-mean baseline's prediction."""
    import numpy as np

    rng = np.random.default_rng(seed)
    shift = train_mean - t.y_ctrl  # the average training effect of each query's context
    fixed = rng.normal(0, 1, t.y.shape[1])
    out = {}
    trick = train_mean.copy()  # the one-line trick: lower the query's own target gene by 1
    for q, genes in enumerate(t.target_genes):
        trick[q, genes] -= 1.0
    out["target-gene trick"] = trick
    for a in (0.3, 1.0, 2.0):
        out[f"y_ctrl + {a} x train shift"] = t.y_ctrl + a * shift
        out[f"y_ctrl + {a} x fixed vector"] = t.y_ctrl + a * fixed
    out["noise around the training centroid"] = t.pert_mean_train + rng.normal(0, 0.05, t.y.shape)
    other = np.arange(len(t.queries))
    for c in np.unique(t.query_context):  # contexts: another query of the same context
        idx = np.flatnonzero(t.query_context == c)
        other[idx] = np.roll(idx, 1)
    out["another query's true profile"] = t.y[other]
    out["random"] = t.y_ctrl + rng.normal(0, 0.5, t.y.shape)
    return out
