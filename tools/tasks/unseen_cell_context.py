"""``unseen-cell-context``: whole contexts (a cell type within a dataset, ``dataset|cell type``)
are the held-out units: every cell of a test context is test, for perturbations seen elsewhere."""

from __future__ import annotations

import numpy as np

from harmonycell.tools.errors import InputError
from harmonycell.tools.schema import SPLIT, context_labels
from harmonycell.tools.tasks.base import NEVER, VAL_FRACTION, Kind, carve, cut_test, perturbed, split_controls


def unit_key(name: str) -> str:
    """'B cells', 'b cell' and 'B' name the same cell type."""
    key = " ".join(str(name).lower().replace("_", " ").split())
    for tail in (" cells", " cell", "s"):
        if key.endswith(tail) and len(key) > len(tail):
            key = key[: -len(tail)]
            break
    return key


def match_contexts(names: list[str], contexts: list[str]) -> list[str]:
    """Contexts (``dataset|cell type``) that the person's ``names`` pick, by cell type or label."""
    picked = []
    for name in names:
        key = unit_key(name)
        hits = [c for c in contexts if key in {unit_key(c), unit_key(c.split("|", 1)[-1])}]
        if not hits:
            types = sorted({c.split("|", 1)[-1] for c in contexts})
            raise InputError(f"no cell type or context named {name!r} in the data", where="hold out",
                             fix=f"name one of: {', '.join(types)}")
        picked += [c for c in hits if c not in picked]
    return picked


class UnseenCellContext(Kind):
    name = "unseen-cell-context"
    unit = "cell context"
    inner_unit = "context"
    takes_hold_out = True
    description = "responses in a cell type / line / donor not seen in training"
    question = "in a cell type / line / donor not seen in training"
    example = "an unseen cell line"
    cue_priority = 0  # first: "hold out B cells" decides the unit even when perturbations are mentioned
    cues = (
        r"\b(?:unseen|new|novel|unknown|another|other|different|held[- ]out)\s+(?:cell[ -]?types?|cell[ -]?lines?|"
        r"donors?|patients?|tissues?|(?:cell )?contexts?)\b",
        r"\bhold(?:ing)?[ -]out\s+(?:the\s+)?[\w+\- ]+?\s+cells?\b",
        r"\b(?:transfer|generali[sz]e)\w*\s+(?:to|across)\s+(?:\w+\s+)?(?:cell[ -]?types?|cell[ -]?lines?|donors?)",
        r"\b(?:cell[ -]?types?|cell[ -]?lines?|donors?|patients?|tissues?)\s+(?:that\s+)?(?:\w+\s+){0,2}?"
        + NEVER + r"\s+(?:\w+\s+){0,2}?(?:measur|profil|s[ae]e|sequenc|test|screen|observ)\w*",
    )

    def split(self, obs, rng, fold=None, hold_out=None):
        ctx = context_labels(obs)
        pert = ~obs["is_control"].astype(bool)
        by_ctx = {c: set(obs.loc[pert & (ctx == c), "condition_name"].astype(str)) for c in sorted(ctx.unique())}
        if len(by_ctx) < 2:
            raise InputError(f"unseen-cell-context needs at least 2 contexts (dataset, cell type), found {len(by_ctx)}",
                             where="--task unseen-cell-context", fix="add a dataset or cell type, or use another task kind")
        # contexts whose perturbations are also seen elsewhere: the test then asks about known
        # perturbations in an unknown context
        shared = [c for c, s in by_ctx.items() if s & set().union(*(t for d, t in by_ctx.items() if d != c))]
        if hold_out:
            if fold is not None:
                raise InputError("a named held-out cell type and --folds cannot be combined", where="hold out",
                                 fix="drop the hold-out or --folds")
            pool = shared or sorted(by_ctx)
            test_ctxs = match_contexts(hold_out, sorted(by_ctx))
            if len(test_ctxs) == len(by_ctx):
                raise InputError("holding out every cell context leaves nothing to train on", where="hold out",
                                 fix="name fewer cell types")
        elif fold is None:
            pool = shared or sorted(by_ctx)
            test_ctxs = [pool[int(rng.integers(len(pool)))]]
        else:
            pool = sorted(by_ctx)
            _, test_ctxs = cut_test(pool, rng, fold, "cell contexts")
        in_test = ctx.isin(test_ctxs).to_numpy()
        train_conds = sorted(set().union(*(s for c, s in by_ctx.items() if c not in test_ctxs)))
        others = [c for c in pool if c not in test_ctxs] if len(by_ctx) - len(test_ctxs) >= 2 else []
        info = {"held_out_unit": self.unit, "test_contexts": sorted(test_ctxs), "test_context": test_ctxs[0]}
        if others:
            # validation asks the task's own question: another whole context held out from training
            val_ctx = others[int(rng.integers(len(others)))]
            split = np.full(len(obs), "train", dtype=object)
            split[(ctx == val_ctx).to_numpy()] = "val"
            split[in_test] = "test"
            trained = set().union(*(s for c, s in by_ctx.items() if c not in test_ctxs and c != val_ctx))
            info.update(val_context=val_ctx, train_conditions=sorted(trained),
                        rule="whole contexts (dataset | cell type) are the units: every cell of a test "
                             "context is test; validation is another whole context")
        else:
            rest, val = carve(train_conds, VAL_FRACTION, rng)
            split = np.full(len(obs), "train", dtype=object)
            split[(~in_test) & obs["condition_name"].astype(str).isin(val).to_numpy()] = "val"
            split_controls(obs, split, {"train": len(rest), "val": len(val)}, rng, rows=~in_test)
            split[in_test] = "test"
            trained = set(rest)
            info.update(val_conditions=val, train_conditions=rest,
                        rule="whole contexts (dataset | cell type) are the units: every cell of a test "
                             "context is test; with one training context left, validation holds out "
                             "perturbations of the training context")
        test_conds = set().union(*(by_ctx[c] for c in test_ctxs))
        # perturbations of the test context that no training cell carries (in no training context,
        # or carved out for validation): the test asks two new things there, and says so
        info["test_conditions_never_trained"] = sorted(test_conds - trained)
        return split, info

    def held_out(self, info):
        held = {"test": list(info.get("test_contexts", [])) or [info["test_context"]]}
        if info.get("val_context"):
            held["val"] = [info["val_context"]]
        elif len(info.get("val_conditions", [])):
            held["val"] = list(info["val_conditions"])  # one training context: validation holds out perturbations
        return held

    def noun(self, crispr_only):
        return "cell contexts"

    def integrity(self, adata):
        pert = perturbed(adata.obs)
        ctx, test = context_labels(pert), pert[SPLIT].astype(str) == "test"
        overlap = set(ctx[test]) & set(ctx[~test])
        problems = [f"held-out contexts also in training or validation: {sorted(overlap)[:5]}"] if overlap else []
        return problems, "cell contexts", len(set(ctx[test]))

    def leaked(self, meta, train_contexts):
        return {q["context"] for q in meta["queries"]["test"]} & train_contexts


KIND = UnseenCellContext()
