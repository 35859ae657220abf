"""The canonical interface every input is projected onto (SPEC section 2). The task kinds are
``tools.tasks``: each names itself, and is found by that name through ``tools.tasks.registry``."""

from __future__ import annotations

OBS_FIELDS = (
    "cell_type",
    "batch_id",
    "donor_id",
    "pert_type",
    "is_control",
    "condition_name",
    "dataset_id",
)
PERT_TYPES = ("crispr", "drug", "cytokine", "other", "control")
CONTROL_LABEL = "control"  # condition_name of control cells
COMBO_SEP = "+"  # combinations are sorted "A+B"
OBSM_MASK = "pert_mask"
OBSM_DOSE = "pert_dose"
UNS_PERTS = "pert_vocab"  # list of single perturbation names, the columns of pert_mask
VAR_SYMBOL = "gene_symbol"
SPLIT = "split"
SPLITS = ("train", "val", "test")
N_HVG = 2000


def context_labels(obs):
    """A context is a (dataset_id, cell_type) group, labelled ``dataset|cell type``."""
    return obs["dataset_id"].astype(str) + "|" + obs["cell_type"].astype(str)


def split_condition(name: str) -> list[str]:
    """Single perturbations of a canonical condition name ("B+A" is stored as "A+B")."""
    return [] if name == CONTROL_LABEL else name.split(COMBO_SEP)


def canonical_condition(parts: list[str]) -> str:
    parts = sorted({p for p in parts if p})
    return COMBO_SEP.join(parts) if parts else CONTROL_LABEL
