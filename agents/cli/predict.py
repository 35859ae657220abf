"""``harmonycell predict RUN --perturbation GENE [--perturbation A+B] [--from FILE] [--context CT]
[--out pred.h5ad] [--no-refit] [--members K] [--cells N]``: the run's selected model answers
perturbations nobody measured.

A thin layer over ``harmonycell.prediction.predict_call`` (the Python API): it parses, calls,
prints a summary and writes the AnnData (and, with ``--cells``, the cells beside it). Refusals
are ``InputError``s: one line and exit code 2, as everywhere.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from harmonycell.prediction import NOTICE, predict as predict_api, predict_call, read_requests
from harmonycell.tools.errors import HarmonyCellError
from harmonycell.tools.record import atomic

TOP_GENES = 5


def predict(
    run_dir: Path = typer.Argument(..., help="a finished run folder (runs/<run-id>)"),
    perturbation: Optional[List[str]] = typer.Option(None, "--perturbation", "-p",
                                                     help="a gene (or alias) or a combination A+B; repeat for more"),
    from_file: Optional[Path] = typer.Option(None, "--from", help="a text file with one perturbation per line"),
    context: Optional[List[str]] = typer.Option(None, "--context",
                                                help="a context the run saw (cell type, or dataset|cell type); "
                                                     "default: every one"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the predictions here (.h5ad)"),
    no_refit: bool = typer.Option(False, "--no-refit", help="use the selected node as trained instead of "
                                  "refitting it on every labelled unit (no spread then)"),
    members: Optional[int] = typer.Option(None, "--members", help="bootstrap refits (resampled perturbation "
                                          "units) whose per-gene standard deviation is layers['spread']; "
                                          "default 5 for a closed-form model, 3 for a network; 1: none"),
    cells: Optional[int] = typer.Option(None, "--cells", help="also N cells per (perturbation, context): "
                                        "sampled from a generative model, else control cells shifted by the "
                                        "predicted delta; written beside --out (pred.h5ad -> pred.cells.h5ad) "
                                        "and kept with the run (the path is printed)"),
) -> None:
    """Predict the response to perturbations nobody measured with the run's selected model."""
    console = Console()
    got = predict_call(run_dir, read_requests(perturbation, from_file), context, refit=not no_refit,
                       members=members, cells=cells)
    result = got.means
    info = result.uns["harmonycell"]
    model = info["model"]
    console.print(f"[bold]{NOTICE}[/]: node {model['node']} ({model['action']}) of run {info['run_id']}, "
                  f"{'refitted on every labelled unit' if model['refit'] else 'as trained'}; "
                  f"run verdict: {info['verdict']['headline']}", highlight=False, soft_wrap=True)
    for note in sorted({n for r in result.obs["resolution"] if r for n in r.split("; ")}):
        console.print(f"alias: {note}", highlight=False)
    table = Table(title=f"top {TOP_GENES} changed genes (prediction - control mean of the context"
                        + (", ± the bootstrap spread)" if "spread" in result.layers else ")"))
    for col in ("perturbation", "context", "source", "top changed genes"):
        table.add_column(col)
    symbols = result.var["gene_symbol"].astype(str).to_numpy() if "gene_symbol" in result.var else result.var_names
    spread = result.layers["spread"] if "spread" in result.layers else None
    for i, (name, row) in enumerate(result.obs.iterrows()):
        delta = result.layers["delta"][i]
        top = np.argsort(-np.abs(delta))[:TOP_GENES]
        table.add_row(row["condition_name"], row["context"], row["source"],
                      ", ".join(f"{symbols[g]} {delta[g]:+.2f}"
                                + (f" ±{spread[i, g]:.2f}" if spread is not None else "") for g in top))
    console.print(table)
    console.print(f"uncertainty: {info['uncertainty']}", highlight=False, soft_wrap=True)
    if out is not None:
        atomic.write_with(out, result.write_h5ad)
        console.print(f"predictions: {out}", highlight=False)
    if got.cells is not None:
        console.print(f"cells: {got.cells.uns['harmonycell']['cells']['what']}", highlight=False, soft_wrap=True)
        where = cells_path(out) if out is not None else got.call_dir / "cells.h5ad"
        if out is not None:
            atomic.write_with(where, got.cells.write_h5ad)
        console.print(f"cells: {where} ({got.cells.n_obs} cells)", highlight=False)


def cells_path(out: Path) -> Path:
    """Where ``--cells`` writes beside ``--out``: pred.h5ad -> pred.cells.h5ad."""
    return out.with_name(out.name[: -len(".h5ad")] + ".cells.h5ad" if out.name.endswith(".h5ad")
                         else out.name + ".cells.h5ad")


# --- the chat's route: "what would knocking out JAK2 do?" after a run ---------------------------
ASKS_FOR_PREDICTION = re.compile(
    r"\b(knock(ing|ed|s)?[\s-]*(out|down)|knockouts?|knockdowns?|predict(ion|ed)?|silenc\w*|perturb(ing|ed)?|"
    r"what (would|if|happens)\b.*\b(crispr|delet\w*|loss of|inhibit\w*|activat\w*))", re.IGNORECASE)
# words in capitals that are not genes
NOT_GENES = {"CRISPR", "CRISPRI", "CRISPRA", "KO", "KD", "I", "A", "DNA", "RNA", "WHAT", "IF", "THE", "AND", "OR"}


def asked_genes(said: str, cell_types: set[str]) -> list[str]:
    """Gene-like words (symbols are written in capitals; ``A+B`` stays one combination) that are not
    one of the run's cell types."""
    words = re.findall(r"[A-Za-z0-9][A-Za-z0-9\-]*(?:\+[A-Za-z0-9][A-Za-z0-9\-]*)*", said)
    out = []
    for w in words:
        w = w.strip("-")
        if w.lower() in cell_types or w.upper() in NOT_GENES or not re.search(r"[A-Z]", w):
            continue
        if w == w.upper() and len(w) >= 2 and w not in out:
            out.append(w)
    return out


def answer_prediction(conv, said: str) -> bool:
    """Answer a request for a prediction from ``harmonycell.predict`` (said to be a prediction, with
    the model that made it), on the run's record as a Question; False when ``said`` asks none."""
    from harmonycell.agents.messages import Question
    from harmonycell.prediction import open_run
    import anndata

    if conv.run is None or not ASKS_FOR_PREDICTION.search(said):
        return False
    run = open_run(conv.run.root)
    contexts = list(anndata.read_h5ad(run.unified, backed="r").obs["cell_type"].astype(str).unique())
    genes = asked_genes(said, {c.lower() for c in contexts})
    if not genes:
        return False
    wanted = [c for c in contexts if re.search(rf"\b{re.escape(c)}\b", said, re.IGNORECASE)] or None
    try:
        # a chat answer names the top genes only: it skips the bootstrap members' refits
        result = predict_api(run.root, genes, wanted, members=1)
    except HarmonyCellError as exc:
        text = f"I cannot predict that: {exc.one_line()}"
        sources = []
    else:
        info = result.uns["harmonycell"]
        model = info["model"]
        lines = [f"{NOTICE}: node {model['node']} ({model['action']}) of this run, "
                 f"{'refitted on every labelled unit' if model['refit'] else 'as trained'}, predicts "
                 f"(change from the context's control mean, top {TOP_GENES} genes):"]
        symbols = result.var["gene_symbol"].astype(str).to_numpy() if "gene_symbol" in result.var else result.var_names
        for i, row in enumerate(result.obs.itertuples()):
            delta = result.layers["delta"][i]
            top = np.argsort(-np.abs(delta))[:TOP_GENES]
            lines.append(f"- {row.condition_name} in {row.cell_type}: "
                         + ", ".join(f"{symbols[g]} {delta[g]:+.2f}" for g in top))
        lines += [f"({n})" for n in sorted({n for r in result.obs["resolution"] if r for n in r.split("; ")})]
        lines.append(f"How far to trust it: the run's verdict was '{info['verdict']['headline']}'; "
                     f"no uncertainty is given here (one fit). `harmonycell predict {run.root} -p GENE --out FILE` "
                     "writes it with a spread over bootstrap refits.")
        text = "\n".join(lines)
        sources = [r["artifacts"][0]["path"] for r in _last_predict_record(run.root)]
    conv.record(Question(said=said, answer=text, topic="prediction", sources=sources, by="predict"))
    return True


def _last_predict_record(root: Path) -> list[dict]:
    from harmonycell.tools.record.transcript import read_records

    recs = [r for r in read_records(root / "transcript.jsonl") if r.get("type") == "predict"]
    return recs[-1:]
