"""``unseen-perturbation``: single perturbations (genes for CRISPR data) are the held-out units.

A held-out unit is in no training or validation condition, alone or inside a combination: a
condition goes to test if any of its units is a test unit, else to validation if any is a
validation unit, else to training.
"""

from __future__ import annotations

from harmonycell.tools.errors import InputError
from harmonycell.tools.schema import SPLIT, split_condition
from harmonycell.tools.tasks.base import (
    NEVER,
    VAL_FRACTION,
    Kind,
    assign_conditions,
    carve,
    cut_test,
    perturbed,
    perturbed_conditions,
    split_controls,
    units_by_split,
)

RULE = ("single perturbations (genes) are the units: a test unit appears in no training or validation "
        "condition, alone or in a combination; a condition is test if any of its units is a test unit, "
        "else validation if any is a validation unit, else training")


class UnseenPerturbation(Kind):
    name = "unseen-perturbation"
    unit = "perturbation"
    description = "responses to perturbations not seen in training"
    example = "new drugs"
    cue_priority = 2  # last: "new drugs in an unseen cell line" asks about the cell line
    cues = (
        r"\b(?:unseen|new|novel|untested|unscreened)\s+(?:drugs?|compounds?|perturbations?|genes?|knock\w*|guides?)",
        r"\b(?:drugs?|compounds?|perturbations?|genes?|knock\w*)\s+(?:that\s+)?(?:we|they|I)\s+"
        r"(?:have(?:n't| not)?|did(?:n't| not)?|never)\s+(?:not\s+|yet\s+)?(?:screen|test|measur|s[ae]e)",
        r"\bnot\s+(?:yet\s+)?(?:been\s+)?(?:screened|tested|measured)\b",
        r"\b(?:drugs?|compounds?|perturbations?|genes?|knock\w*|guides?|targets?)\s+(?:that\s+)?(?:\w+\s+){0,2}?"
        + NEVER + r"\s+(?:\w+\s+){0,2}?(?:screen|test|measur|s[ae]e|profil|perturb|knock|tri)\w*",
    )

    def split(self, obs, rng, fold=None, hold_out=None):
        conds = perturbed_conditions(obs)
        parts = {c: set(split_condition(c)) for c in conds}
        units = sorted(set().union(*parts.values())) if parts else []
        if len(units) < 3:
            raise InputError(f"unseen-perturbation needs at least 3 perturbations (distinct genes or agents), found {len(units)}",
                             where="--task unseen-perturbation", fix="use more perturbations or another task kind")
        rest, test_u = cut_test(units, rng, fold, "perturbations")
        train_u, val_u = carve(rest, VAL_FRACTION, rng)
        test = sorted(c for c in conds if parts[c] & set(test_u))
        val = sorted(c for c in conds if c not in set(test) and parts[c] & set(val_u))
        train = sorted(set(conds) - set(test) - set(val))
        if not train:
            raise InputError("every perturbed condition contains a held-out perturbation: nothing is left to train on",
                             where="--task unseen-perturbation", fix="use more single perturbations or fewer folds")
        split = assign_conditions(obs, train, val, test)
        split_controls(obs, split, {"train": len(train), "val": len(val), "test": len(test)}, rng)
        return split, {"held_out_unit": self.unit, "rule": RULE,
                       "train_units": train_u, "val_units": val_u, "test_units": test_u,
                       "train_conditions": train, "val_conditions": val, "test_conditions": test}

    def held_out(self, info):
        return {s: list(info[f"{s}_units"]) for s in ("test", "val") if len(info.get(f"{s}_units", []))}

    def noun(self, crispr_only):
        return "genes" if crispr_only else "perturbations"

    def integrity(self, adata):
        # every test condition holds a perturbation that no training or validation condition
        # holds, alone or in a combination; the declared test units appear in none of them
        pert = perturbed(adata.obs)
        conds, test = pert["condition_name"].astype(str), pert[SPLIT].astype(str) == "test"
        units = units_by_split(adata.obs)
        seen = units["train"] | units["val"]
        problems = []
        known = sorted(c for c in set(conds[test]) if not set(split_condition(c)) - seen)
        if known:
            problems.append(f"test conditions made only of perturbations seen in training or validation: {known[:5]}")
        declared = set(adata.uns.get("split_info", {}).get("test_units", []))
        if declared & seen:
            problems.append(f"held-out perturbations also in a training or validation condition: {sorted(declared & seen)[:5]}")
        return problems, "perturbations (alone or inside a combination)", len(units["test"] - seen)

    def leaked(self, meta, train_contexts):
        # no held-out gene inside any training condition, alone or in a combination
        trained = {u for c in meta["train_conditions"] for u in split_condition(c)}
        return {q["condition"] for q in meta["queries"]["test"] if not set(split_condition(q["condition"])) - trained}


KIND = UnseenPerturbation()
