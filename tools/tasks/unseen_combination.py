"""``unseen-combination``: pairs ``A+B`` whose singles are both measured are the held-out units;
a test pair is in no training condition while its singles all train."""

from __future__ import annotations

from harmonycell.tools.errors import InputError
from harmonycell.tools.schema import COMBO_SEP, SPLIT, split_condition
from harmonycell.tools.tasks.base import (
    VAL_FRACTION,
    Kind,
    assign_conditions,
    carve,
    cut_test,
    perturbed,
    perturbed_conditions,
    split_controls,
)

RULE = ("combinations A+B whose singles are both measured are the units: a test pair is in no training "
        "condition while its singles are all training")


class UnseenCombination(Kind):
    name = "unseen-combination"
    unit = "combination"
    answers_combinations = True
    description = "responses to combinations whose single perturbations were seen"
    question = "to unseen combinations"
    example = "combinations"
    cue_priority = 1
    cues = (
        r"\bcombinations?\b", r"\bcombinatorial\b", r"\bdouble\s+(?:knock\w*|perturbations?|mutants?)",
        r"\bpairs?\s+of\s+(?:drugs|genes|perturbations|knock\w*)", r"\b(?:pairs|pairwise|double)\b",
    )

    def split(self, obs, rng, fold=None, hold_out=None):
        conds = perturbed_conditions(obs)
        singles = {c for c in conds if COMBO_SEP not in c}
        combos = [c for c in conds if COMBO_SEP in c]
        eligible = sorted(c for c in combos if all(p in singles for p in split_condition(c)))
        if not eligible:
            raise InputError(f"unseen-combination needs a combination A+B whose singles A and B are also measured; "
                             f"found {len(combos)} combinations, none with both singles",
                             where="--task unseen-combination", fix="use unseen-perturbation for this dataset")
        if len(eligible) == 1 and fold is None:
            rest, test = [], eligible
        else:
            rest, test = cut_test(eligible, rng, fold, "combinations")
        others = sorted(set(combos) - set(eligible))
        if rest:
            rest, val = carve(rest, VAL_FRACTION, rng) if len(rest) > 1 else ([], rest)
        else:
            others, val = carve(others, VAL_FRACTION, rng) if others else ([], [])
        train = sorted(singles) + sorted(set(rest) | set(others))
        split = assign_conditions(obs, train, val, test)
        split_controls(obs, split, {"train": len(train), "val": len(val), "test": len(test)}, rng)
        return split, {"held_out_unit": self.unit, "rule": RULE,
                       "train_conditions": train, "val_conditions": val, "test_conditions": test}

    def held_out(self, info):
        return {s: list(info[f"{s}_conditions"]) for s in ("test", "val") if len(info.get(f"{s}_conditions", []))}

    def noun(self, crispr_only):
        return "pairs"

    def integrity(self, adata):
        pert = perturbed(adata.obs)
        conds, split = pert["condition_name"].astype(str), pert[SPLIT].astype(str)
        test = split == "test"
        pairs = set(conds[test])
        problems = []
        if pairs & set(conds[~test]):
            problems.append(f"held-out pairs also in training or validation: {sorted(pairs & set(conds[~test]))[:5]}")
        seen = set(conds[split == "train"])
        unseen_singles = sorted({p for c in pairs for p in split_condition(c) if p not in seen})
        if unseen_singles:
            problems.append(f"singles of held-out pairs not in training: {unseen_singles[:5]}")
        if any(len(split_condition(c)) < 2 for c in pairs):
            problems.append("a held-out condition is not a combination")
        return problems, "pairs", len(pairs)

    def leaked(self, meta, train_contexts):
        return {q["condition"] for q in meta["queries"]["test"]} & set(meta["train_conditions"])


KIND = UnseenCombination()
