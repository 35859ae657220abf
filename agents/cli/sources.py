"""``harmonycell run A B --compare-sources``: is the union better than each source alone?

The paper's Figure 3 question. After the run, the selected architecture (the best node's action
path) is trained again on each source alone: the unified data restricted to that source's cells,
with the very same split, genes and test queries. On each source's own test queries the
union-trained model (its per-query scores from the run) and the single-source model (carried as
one node in ``sources/<source>/``, the way the search carries a node) are compared pairwise per query, with the paired test of ``tools.evaluation.compare``.
Deltas and the shift-corrected reference are per context (dataset | cell type), so restricting
the cells to one source leaves that source's targets unchanged.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import anndata as ad
from pydantic import BaseModel, Field

from harmonycell.tools.errors import InputError
from harmonycell.tools.evaluation.compare import COMPARED_METRICS, Comparison, compare, per_query
from harmonycell.tools.record import atomic
from harmonycell.tools.record.runfolder import RunFolder
from harmonycell.tools.report.markdown import comparisons_table
from harmonycell.tools.search.tree import Tree


class SourceComparison(BaseModel):
    source: str
    action: str
    status: str
    n_queries: int
    comparisons: list[Comparison] = Field(default_factory=list)  # union minus single-source
    note: str = ""


def compare_sources(run: RunFolder) -> list[SourceComparison]:
    from harmonycell.agents.cli.train import train_node

    cfg = run.config()
    if len(cfg.inputs) < 2:
        raise InputError("--compare-sources needs two or more inputs", where="--compare-sources",
                         fix="pass several .h5ad files, or drop --compare-sources")
    scores = sorted(run.nodes_dir.glob("*/test_scores.json"))
    if not scores:
        raise InputError("no node was scored on the test split: nothing to compare", where=str(run.root),
                         fix="look at report.md for why the search found no working node")
    best = scores[-1].parent.name
    action = Tree.load(run.tree_json).nodes[best].action
    union_rows = json.loads(scores[-1].read_text())["per_perturbation"]
    adata = ad.read_h5ad(run.unified)
    out = []
    for source in sorted(adata.obs["dataset_id"].astype(str).unique()):
        mine = [r for r in union_rows if r["context"].split("|")[0] == source]
        if not mine:
            out.append(SourceComparison(source=source, action=action, status="skipped", n_queries=0,
                                        note="no test query in this source"))
            continue
        sub = adata[(adata.obs["dataset_id"].astype(str) == source).to_numpy()].copy()
        folder = run.root / "sources" / source
        shutil.rmtree(folder, ignore_errors=True)  # a resumed run's half-trained one is trained again
        rep = train_node(sub, action, folder, backend=cfg.backend, seed=cfg.seed,
                         epochs=cfg.epochs, gene_sets=Path(cfg.gene_sets) if cfg.gene_sets else None)
        if rep.status != "ok" or rep.predictions_sha256 is None:
            out.append(SourceComparison(source=source, action=action, status=rep.status, n_queries=len(mine),
                                        note=(rep.error_tail or "")[-300:]))
            continue
        scored = json.loads((Path(rep.node_dir) / "test_scores.json").read_text())
        single = scored["per_perturbation"]
        by_key = {(r["condition"], r["context"]): r for r in single}
        paired = [r for r in mine if (r["condition"], r["context"]) in by_key]
        other = [by_key[(r["condition"], r["context"])] for r in paired]
        comps = [compare(per_query(paired, m), per_query(other, m), m, f"{source} alone") for m in COMPARED_METRICS]
        out.append(SourceComparison(source=source, action=action, status="ok", n_queries=len(paired),
                                    comparisons=comps))
    atomic.write_text(run.root / "sources.json",
                      json.dumps([s.model_dump() for s in out], indent=2))
    lines = ["", "## Union vs each source alone (--compare-sources)", "",
             f"The selected architecture `{action}` trained on each source alone (same split, genes and "
             "test queries), compared per query with the union-trained model on that source's own test "
             "queries: union minus single-source, exact sign-flip test per query.", ""]
    for s in out:
        if s.status != "ok":
            lines.append(f"- {s.source}: {s.status} ({s.note})")
    rows = [c.model_dump() for s in out for c in s.comparisons]
    if rows:
        lines += [comparisons_table(rows).replace("| baseline |", "| trained on |")
                  .replace("model - baseline", "union - single"), ""]
    atomic.write_text(run.report_md, run.report_md.read_text() + "\n".join(lines) + "\n")
    return out
