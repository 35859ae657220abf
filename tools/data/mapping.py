"""The mapping specification (SPEC section 2) and the builtin policy that infers it.

A :class:`MappingSpec` says, per canonical field, where its value comes from in one input file:
``direct`` (copy a column), ``logic`` (a restricted expression, see :mod:`harmonycell.tools.data.expr`),
``constant`` or ``null`` (documented default). It also carries how perturbation labels are read
(control labels, combination delimiters, aliases) and the numerical facts about X. The builtin
policy here infers it from column names and values only, deterministically, with a confidence
and a one-line reason per field; an LLM policy produces the same document from the prompt
``prompts/unifier_mapping.md`` and goes through the same validation.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, Field

from harmonycell.tools.data.audit import AuditReport, ObsColumn
from harmonycell.tools.errors import HarmonyCellError, SpecError
from harmonycell.tools.record import atomic

SCHEMA_PATH = Path(__file__).with_name("mapping_spec.schema.json")

# Canonical fields a spec maps. condition_name is the raw perturbation label, which the engine
# splits into single perturbations, strips of control tokens and sorts ("B+A" -> "A+B").
SPEC_FIELDS = ("condition_name", "is_control", "pert_type", "cell_type", "donor_id", "batch_id", "dose")
DEFAULTS = {
    "is_control": "derived: a cell is control when every token of its label is a control label",
    "pert_type": "'other' for perturbed cells; 'control' for controls",
    "cell_type": "'unknown'",
    "donor_id": "'unknown'",
    "batch_id": "the dataset_id",
    "dose": "1.0 (no dose)",
    "condition_name": "none: a spec without a perturbation label is rejected",
}

# --- vocabularies (lower case) --------------------------------------------------------------
CONTROL_WORDS = {
    "ctrl", "control", "controls", "non-targeting", "nontargeting", "non_targeting", "non targeting",
    "nt", "ntc", "nc", "neg", "negative", "negative_control", "safe-targeting", "safe_targeting",
    "scrambled", "scramble", "dmso", "vehicle", "veh", "unstim", "unst", "unstimulated", "untreated",
    "mock", "pbs", "baseline", "no_treatment", "notreatment", "none_control", "wt", "wildtype", "wild-type",
    "intergenic", "nontarget", "negctrl", "safetargeting", "nontargetingcontrol",
}
# words a control phrase may carry besides control words (``NonTargetingControlGuide_sgRNA_07``)
GUIDE_WORDS = {"g", "sg", "sgrna", "grna", "guide", "guides", "rna", "sh", "shrna", "si", "sirna", "crispr", "oligo"}
UNKNOWN_WORDS = {"", "nan", "na", "n/a", "none", "null", "unknown", "unassigned", "no guide", "no_guide",
                 "noguide", "multiplet", "doublet", "undetermined", "?", "-"}
DRUG_CONTROL_WORDS = {"dmso", "vehicle", "veh", "pbs"}
CRISPR_CONTROL_WORDS = {"non-targeting", "nontargeting", "non_targeting", "non targeting", "nt", "ntc",
                        "safe-targeting", "safe_targeting", "scrambled", "scramble", "intergenic", "nontarget",
                        "negctrl", "safetargeting", "nontargetingcontrol"}
CYTOKINE_CONTROL_WORDS = {"unstim", "unst", "unstimulated"}
CYTOKINE_WORDS = re.compile(r"^(stim|stimulated|stimulation|ifn.*|il-?\d+.*|tnf.*|tgf.*|lps|cytokine.*)$", re.I)
LABEL_ALIASES = {"stim": "stimulated", "stimulation": "stimulated"}
PERT_TYPE_WORDS = [  # (regex over a pert-type column's value, canonical pert_type)
    (re.compile(r"crispr|cas9|cas13|knock|ko\b|kd\b|sgrna|guide|shrna|sirna|genetic|activation|interference", re.I), "crispr"),
    (re.compile(r"drug|compound|chemical|small.?molecule|inhibitor|treatment", re.I), "drug"),
    (re.compile(r"cytokine|stim|ligand|ifn|interleukin", re.I), "cytokine"),
    (re.compile(r"^(control|ctrl)$", re.I), "control"),
]
DRUG_SUFFIX = re.compile(r"(stat|nib|mab|mycin|cillin|platin|taxel|zole|pril|sartan|olol|vir|parib|lisib|tinib|rubicin|ine|ide|one|ol)$", re.I)
GENE_LIKE = re.compile(r"^[A-Z][A-Z0-9\-\.]{1,14}$")
DOSE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(pm|nm|um|µm|μm|mm|m|ng/ml|ug/ml|µg/ml|mg/ml)\b", re.I)
UNIT_TO_NM = {"pm": 1e-3, "nm": 1.0, "um": 1e3, "µm": 1e3, "μm": 1e3, "mm": 1e6, "m": 1e9}

# Column-name hints, best first. A column's name score is len(list) - position of its first hit.
CONDITION_NAMES = ["condition", "perturbation", "perturbation_name", "pert", "guide_target", "target_gene",
                   "target", "gene", "treatment", "drug", "compound", "stim", "group", "grna", "sgrna", "guide"]
CELL_TYPE_NAMES = ["cell_type", "celltype", "cell_types", "cell_line", "cellline", "cell_label",
                   "cell_type_annotation", "cell_identity", "annotation", "cell_annotation", "cluster_id", "cluster",
                   "clusters", "ident", "cell", "tissue"]
# values that read as cell types or lines: a column of a few such labels is the cell type even when
# its name says nothing (``group`` holding ``CD4 T cells``, ``B cells``)
CELL_TYPE_VALUE = re.compile(
    r"(cells?\b|cyte|phage|mono|\bT\b|\bB\b|\bNK\b|\bDC\b|CD\d+|dendritic|neutro|fibro|epithel|endothel|"
    r"neuron|astro|glia|progenitor|stem|K562|HEK|A549|HeLa|MCF|THP|Jurkat|iPSC|RPE|HepG2|U87|T98G|U251|PBMC)", re.I)
DONOR_NAMES = ["donor", "donor_id", "patient", "patient_id", "individual", "subject", "ind"]
BATCH_NAMES = ["batch", "batch_id", "replicate", "bio_rep", "rep", "lane", "plate", "library", "gem_group",
               "sample", "sample_id", "dataset"]
PERT_TYPE_NAMES = ["perturbation_type", "pert_type", "perturbation_kind", "modality", "pert_kind"]
NEGATIVE_NAMES = re.compile(r"^(n_|n\b|ncount|ngene|total|pct|percent|frac|mt_|.*_umi$|.*score|.*_id_?$|id$|index$|barcode)", re.I)


class FieldMapping(BaseModel):
    """Where one canonical field comes from."""

    type: Literal["direct", "logic", "constant", "null"]
    source_key: str | None = Field(None, description="obs column copied by a 'direct' field")
    expression: str | None = Field(None, description="restricted expression of a 'logic' field, e.g. obs['drug'] == 'DMSO'")
    value: str | float | bool | None = Field(None, description="value of a 'constant' field")
    confidence: float = Field(1.0, ge=0.0, le=1.0)
    reason: str = ""

    @classmethod
    def null(cls, reason: str, confidence: float = 0.5) -> "FieldMapping":
        return cls(type="null", confidence=confidence, reason=reason)

    def columns(self) -> list[str]:
        """obs columns this field reads."""
        if self.type == "direct" and self.source_key:
            return [self.source_key]
        if self.type == "logic" and self.expression:
            return re.findall(r"obs\[\s*['\"]([^'\"]+)['\"]\s*\]", self.expression)
        return []


class MappingSpec(BaseModel):
    """How one input file maps onto the canonical schema. JSON-serialisable, schema-validated."""

    dataset_id: str
    source: str = ""
    policy: str = Field("builtin", description="who wrote it: builtin, llm, or builtin-repair")
    condition_name: FieldMapping
    is_control: FieldMapping = Field(default_factory=lambda: FieldMapping.null(DEFAULTS["is_control"]))
    pert_type: FieldMapping = Field(default_factory=lambda: FieldMapping.null(DEFAULTS["pert_type"]))
    cell_type: FieldMapping = Field(default_factory=lambda: FieldMapping.null(DEFAULTS["cell_type"]))
    donor_id: FieldMapping = Field(default_factory=lambda: FieldMapping.null(DEFAULTS["donor_id"]))
    batch_id: FieldMapping = Field(default_factory=lambda: FieldMapping.null(DEFAULTS["batch_id"]))
    dose: FieldMapping = Field(default_factory=lambda: FieldMapping.null(DEFAULTS["dose"]))
    control_labels: list[str] = Field(default_factory=list, description="label tokens that mean 'control' (exact, case-insensitive)")
    unknown_labels: list[str] = Field(default_factory=list, description="labels that mean 'perturbation unknown': cells dropped")
    combo_delimiters: list[str] = Field(default_factory=lambda: ["+"], description="separators between the perturbations of one cell")
    label_aliases: dict[str, str] = Field(default_factory=dict, description="raw token -> canonical perturbation name")
    # numerical facts
    is_already_log1p: bool
    normalization_required: bool
    target_sum: float = 1e4
    var_index_type: Literal["symbol", "ensembl", "mixed", "other"] = "symbol"
    gene_symbol_column: str | None = Field(None, description="var column with gene symbols (None: the index is symbols)")
    gene_id_column: str | None = Field(None, description="var column with Ensembl ids when the index is symbols")

    def field(self, name: str) -> FieldMapping:
        return getattr(self, name)

    def fields(self) -> dict[str, FieldMapping]:
        return {f: self.field(f) for f in SPEC_FIELDS}


def json_schema_text() -> str:
    return json.dumps(MappingSpec.model_json_schema(), indent=2) + "\n"


def render_prompt(audit: AuditReport, builtin: "MappingSpec | None" = None) -> str:
    """The LLM policy's prompt (prompts/unifier_mapping.md) filled in for one audited file; with
    ``builtin``, the deterministic proposal is appended for the model to correct."""
    from importlib.resources import files

    template = files("harmonycell.prompts").joinpath("unifier_mapping.md").read_text(encoding="utf-8")
    text = template.format(dataset_id=audit.name, audit=audit.model_dump_json(indent=2),
                           schema=json.dumps(MappingSpec.model_json_schema(), indent=2))
    if builtin is not None:
        text += ("\nA deterministic policy proposes the spec below; keep what is right, fix what is wrong:\n\n"
                 "```json\n" + builtin.model_dump_json(indent=2) + "\n```\n")
    return text


def export_json_schema(path: Path = SCHEMA_PATH) -> Path:
    """Write MappingSpec's JSON schema (the document an LLM policy must produce)."""
    return atomic.write_text(path, json_schema_text())


# --- label helpers used by both the policy and the engine -------------------------------------
def normalise_token(tok: str) -> str:
    return re.sub(r"\s+", " ", str(tok).strip().lower())


def label_tokens(label: str) -> list[str]:
    """Lower-case tokens of a label: split at separators and camelCase boundaries, never between
    letters and digits (``NT5E`` stays one token, a gene)."""
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", str(label))
    return [t for t in re.split(r"[\s_\-\.\(\)\[\]/#:,;|]+", spaced.lower()) if t]


def control_match(tok: str) -> tuple[str, str] | None:
    """(control word, rule that matched) for a raw token that means 'control', else None.

    Rules, tried in order: the whole label is a control word (``ctrl``); a control word with guide
    numbering (``NTg7``, ``non-targeting_2``); decorated (``vehicle (DMSO)``); a phrase whose
    tokens, once guide words and numbers are dropped and split words rejoined, are all control
    words (``NonTargetingControlGuide_sgRNA_07``, ``NegCtrl0_NegCtrl0``, ``sgNTC_3``)."""
    t = normalise_token(tok)
    if t in CONTROL_WORDS:
        return t, "whole label is a control word"
    # guide numbering needs a separator or a guide prefix: NTg7, non-targeting_2 (CTRL9 is a gene)
    stripped = re.sub(r"([\s_\-\.#]+(g|sg|sgrna|guide)?|(g|sg|sgrna|guide))\d+$", "", t)
    if stripped in CONTROL_WORDS:
        return stripped, f"control word {stripped!r} with guide numbering"
    base = re.sub(r"\s*\(.*\)\s*", " ", t).strip()
    if base in CONTROL_WORDS:
        return base, f"control word {base!r} with a decoration"
    inner = re.findall(r"\(([^)]*)\)", t)
    if inner and all(normalise_token(i) in CONTROL_WORDS for i in inner) and base in CONTROL_WORDS | {""}:
        return normalise_token(inner[0]), "decorated control word"
    toks = label_tokens(tok)
    if len(toks) < 2:
        return None
    # numbers and guide words are decoration in a phrase; 'ctrl0' in 'NegCtrl0' is ctrl numbered
    toks = [re.sub(r"^([a-z]+)\d+$", r"\1", x) for x in toks if not re.fullmatch(r"(g|sg|grna|sgrna|guide|n|no|v|r|rep)?\d+", x)]
    toks = [x for x in toks if x not in GUIDE_WORDS]
    merged: list[str] = []
    i = 0
    while i < len(toks):  # 'non' 'targeting' -> 'nontargeting'
        if i + 1 < len(toks) and toks[i] + toks[i + 1] in CONTROL_WORDS:
            merged.append(toks[i] + toks[i + 1])
            i += 2
        else:
            merged.append(toks[i])
            i += 1
    if merged and all(m in CONTROL_WORDS for m in merged):
        word = next((m for m in merged if m in CRISPR_CONTROL_WORDS | DRUG_CONTROL_WORDS), merged[0])
        return word, f"phrase of control words ({' + '.join(merged)}) once guide words/numbers are dropped"
    return None


def control_word(tok: str) -> str | None:
    """The control vocabulary word a raw token stands for, or None (see control_match)."""
    m = control_match(tok)
    return m[0] if m else None


def split_label(label: str, delimiters: list[str]) -> list[str]:
    if not delimiters:
        return [label.strip()]
    pattern = "|".join(re.escape(d) for d in sorted(delimiters, key=len, reverse=True))
    return [p.strip() for p in re.split(pattern, label) if p.strip()]


# --- builtin policy ---------------------------------------------------------------------------
def name_score(name: str, hints: list[str]) -> float:
    n = name.lower()
    for i, h in enumerate(hints):
        if n == h:
            return 2.0 * (len(hints) - i)
    for i, h in enumerate(hints):
        if re.search(rf"(^|_){re.escape(h)}", n):
            return 1.0 * (len(hints) - i)
    return 0.0


def categorical(col: ObsColumn, n_cells: int) -> bool:
    # fewer labels than cells (a label repeats); tiny files (the 50-cell GEARS fixture) have
    # nearly one label per cell, so no tighter bound
    return (not col.numeric) and 1 <= col.n_unique < max(2, n_cells)


def values_of(obs: pd.DataFrame, name: str) -> list[str]:
    """Distinct non-missing values as text, in order of appearance (unique first, then str)."""
    col = obs[name]
    uniq = col.dropna().unique()
    return list(dict.fromkeys(str(v) for v in uniq))


def detect_delimiters(values: list[str], control_tokens: set[str]) -> list[str]:
    """'+' and ';' always separate perturbations; ',', '|' and '_' only where every part of
    every value using them is itself a label seen alone or a control token (so that a name
    like ``A549_ctrl_1`` or ``HLA-A`` is not torn apart)."""
    single = {v for v in values}
    delims = ["+", ";"]
    for d in ["|", ",", "_", "/"]:
        users = [v for v in values if d in v]
        if users and all(all(p in single or control_word(p) for p in v.split(d) if p) for v in users) \
                and any(any(control_word(p) is None for p in v.split(d)) for v in users):
            delims.append(d)
    return delims


GUIDE_NAME = re.compile(r"guide|sgrna|grna|sgid|protospacer|spacer|oligo", re.I)
# a guide's number after its gene: MYC_sgRNA_2, MYC-2, MYC.g3 (any case), CUL3g1 (lower-case g
# after an upper-case symbol; a mouse symbol like Rag1 is left alone)
GUIDE_SUFFIX = r"(?i:[_\-\.](?:sg|g|sgrna|grna|guide|sh|shrna|si|sirna)?(?:rna)?[_\-\.]?\d+)$|(?<=[A-Z0-9])g\d+$"


def guide_gene(label: str) -> str:
    return re.sub(GUIDE_SUFFIX, "", str(label))


def guide_level(vals: list[str]) -> bool:
    """Labels that are guides of fewer genes: most carry a guide number, and stripping it pools
    them (``MYC_sgRNA_1``, ``MYC_sgRNA_2`` -> ``MYC``)."""
    if len(vals) < 4:
        return False
    genes = [guide_gene(v) for v in vals]
    changed = sum(g != v and g != "" for g, v in zip(genes, vals))
    return changed >= 0.5 * len(vals) and len(set(genes)) <= 0.7 * len(vals)


def pools(obs: pd.DataFrame, fine: str, coarse: str) -> bool:
    """``coarse`` is the gene level of guide column ``fine``: each guide has one gene, and guide
    labels start with their gene's name (the control's name may differ: NTg1 -> non-targeting)."""
    pairs = obs[[fine, coarse]].dropna().astype(str).drop_duplicates()
    if pairs.empty or pairs[fine].duplicated().any() or pairs[coarse].nunique() >= pairs[fine].nunique():
        return False
    prefix = [f.lower().startswith(c.lower()) for f, c in zip(pairs[fine], pairs[coarse])]
    return sum(prefix) >= 0.8 * len(prefix) and pairs[coarse].nunique() >= 3


def condition_candidates(audit: AuditReport, obs: pd.DataFrame) -> list[tuple[float, str, list[str], str]]:
    """(score, column, control labels, why) for plausible perturbation-label columns, best first."""
    out = []
    for col in audit.obs:
        if col.name not in obs.columns or not categorical(col, audit.n_cells) or col.n_unique < 2:
            continue
        if name_score(col.name, CELL_TYPE_NAMES + DONOR_NAMES) > 0 and name_score(col.name, CONDITION_NAMES) == 0:
            continue
        vals = values_of(obs, col.name)
        delims = detect_delimiters(vals, set())
        tokens = {t for v in vals for t in split_label(v, delims)}
        ctrl = sorted(t for t in tokens if control_word(t))
        whole_ctrl = [v for v in vals if control_word(v)]
        if not ctrl and not whole_ctrl:
            continue
        score = name_score(col.name, CONDITION_NAMES) + 5.0
        why = []
        if NEGATIVE_NAMES.match(col.name) or re.search(r"sample|batch|rep", col.name, re.I):
            score -= 6.0
            why.append("name reads like a sample/batch/count column (-6)")
        # a label column has few values per cell; an identifier column has many
        score -= 2.0 * (col.n_unique / max(audit.n_cells, 1))
        # labels with a dose inside ('0.2 uM panobinostat') are a worse label than the bare name
        if any(DOSE_RE.search(v) for v in vals):
            score -= 4.0
            why.append("labels carry a dose (-4)")
        if GUIDE_NAME.search(col.name) or guide_level(vals):
            score -= 1.0
            why.append("guide-level labels (-1)")
        labels = sorted(set(ctrl) | set(whole_ctrl))
        rules = "; ".join(f"{lab!r}: {control_match(lab)[1]}" for lab in labels[:2])  # type: ignore[index]
        rules += f" (and {len(labels) - 2} more)" if len(labels) > 2 else ""
        why.insert(0, f"values include control label(s) {rules}")
        if name_score(col.name, CONDITION_NAMES):
            why.insert(1, f"name {col.name!r} is a perturbation-column name")
        out.append([score, col.name, labels, why])
    # a gene-level column beats the guide column it pools (the guides of a gene are one perturbation)
    for fine in out:
        for coarse in out:
            if fine is not coarse and pools(obs, fine[1], coarse[1]):
                coarse[0] += 3.0
                coarse[3].append(f"gene level of guide column {fine[1]!r} (+3)")
                fine[3].append(f"guide level: pooled by {coarse[1]!r}")
    res = [(sc, name, labels, "; ".join(why)) for sc, name, labels, why in out]
    res.sort(key=lambda t: (-t[0], t[1]))
    return res


def pick_column(audit: AuditReport, obs: pd.DataFrame, hints: list[str], exclude: set[str], max_frac: float = 0.5) -> str | None:
    best = None
    for col in audit.obs:
        if col.name in exclude or col.name not in obs.columns or col.numeric and col.n_unique > 50:
            continue
        if col.n_unique < 1 or col.n_unique > max(2, max_frac * audit.n_cells):
            continue
        s = name_score(col.name, hints)
        if s > 0 and (best is None or s > best[0]):
            best = (s, col.name)
    return best[1] if best else None


def cell_type_by_values(audit: AuditReport, obs: pd.DataFrame, exclude: set[str]) -> str | None:
    """A column of 2..50 text labels most of which read as cell types (``CD4 T cells``, ``K562``)."""
    best = None
    for col in audit.obs:
        if col.name in exclude or col.name not in obs.columns or col.numeric or not 1 <= col.n_unique <= 50:
            continue
        if NEGATIVE_NAMES.match(col.name) and name_score(col.name, CELL_TYPE_NAMES) == 0:
            continue
        vals = values_of(obs, col.name)
        hits = sum(bool(CELL_TYPE_VALUE.search(v)) for v in vals)
        if vals and hits >= 0.6 * len(vals) and not any(control_word(v) for v in vals):
            if best is None or hits / len(vals) > best[0]:
                best = (hits / len(vals), col.name)
    return best[1] if best else None


def infer_pert_type(spec_tokens: list[str], control_labels: list[str], obs: pd.DataFrame, audit: AuditReport,
                    dose_col: str | None) -> tuple[FieldMapping, str]:
    """pert_type from a type column if there is one, else from the vocabulary of the labels."""
    for col in audit.obs:
        if name_score(col.name, PERT_TYPE_NAMES) > 0 and col.name in obs.columns and not col.numeric:
            return FieldMapping(type="direct", source_key=col.name, confidence=0.9,
                                reason=f"column {col.name!r} names the perturbation type "
                                       f"({', '.join(values_of(obs, col.name)[:3])})"), "column"
    words = {control_word(c) for c in control_labels}
    if words & DRUG_CONTROL_WORDS or dose_col:
        why = "vehicle/DMSO control" if words & DRUG_CONTROL_WORDS else f"doses in {dose_col!r}"
        return FieldMapping(type="constant", value="drug", confidence=0.85, reason=f"drug: {why}"), "drug"
    if words & CRISPR_CONTROL_WORDS:
        return FieldMapping(type="constant", value="crispr", confidence=0.85,
                            reason="crispr: non-targeting guide controls"), "crispr"
    if words & CYTOKINE_CONTROL_WORDS or (spec_tokens and all(CYTOKINE_WORDS.match(t) for t in spec_tokens)):
        return FieldMapping(type="constant", value="cytokine", confidence=0.7,
                            reason=f"cytokine: stimulation labels ({', '.join(spec_tokens[:3])})"), "cytokine"
    if spec_tokens and sum(bool(GENE_LIKE.match(t)) for t in spec_tokens) >= 0.8 * len(spec_tokens):
        return FieldMapping(type="constant", value="crispr", confidence=0.7,
                            reason="crispr: perturbation labels are gene symbols"), "crispr"
    if spec_tokens and all(t.islower() for t in spec_tokens):
        return FieldMapping(type="constant", value="drug", confidence=0.5,
                            reason="drug: lower-case compound-like names"), "drug"
    return FieldMapping(type="constant", value="other", confidence=0.3, reason="no type evidence: 'other'"), "other"


def dose_columns(audit: AuditReport, obs: pd.DataFrame) -> tuple[str | None, list[str]]:
    """A text column whose values carry a concentration with a unit, and the units seen."""
    for col in audit.obs:
        if col.numeric or col.name not in obs.columns or col.n_unique > 1000:
            continue
        vals = values_of(obs, col.name)
        units = sorted({m.group(2).lower().replace("μ", "µ") for v in vals for m in DOSE_RE.finditer(v)})
        if units and any(DOSE_RE.search(v) for v in vals):
            return col.name, units
    return None, []


def dose_expression(col: str, units: list[str]) -> str:
    """A restricted expression that reads the concentration in nM out of the text."""
    parts = []
    for u in units:
        factor = UNIT_TO_NM.get(u.lower())
        if factor is None:
            continue
        pat = r"(\d+(?:\.\d+)?)\s*" + re.escape(u)
        part = f"obs[{col!r}].str.extract({pat!r}, flags=2).astype('float') * {factor:g}"
        parts.append(part if len(units) == 1 else f"({part}).fillna(0)")
    return " + ".join(parts)


def donor_from_sample(obs: pd.DataFrame, sample_col: str, labels: list[str]) -> str | None:
    """``ctrl101`` -> ``101`` when a sample id is a condition label glued to a donor id."""
    vals = values_of(obs, sample_col)
    prefixes = sorted({l for l in labels if l}, key=len, reverse=True)
    if not prefixes:
        return None
    rest = []
    for v in vals:
        p = next((p for p in prefixes if v.lower().startswith(p.lower()) and len(v) > len(p)), None)
        if p is None:
            return None
        rest.append(v[len(p):].strip("_-. "))
    if len(set(rest)) < 2 or len(set(rest)) >= len(vals):
        return None
    alt = "|".join(re.escape(p) for p in prefixes)
    return f"obs[{sample_col!r}].str.replace('^(?i:{alt})[_\\\\-\\\\. ]*', '', regex=True)"


def explain_missing_label(audit: AuditReport, obs: pd.DataFrame) -> None:
    """Raise the specific error when a label column exists but has no controls or only controls."""
    for col in audit.obs:
        if col.name not in obs.columns or col.numeric:
            continue
        vals = values_of(obs, col.name)
        if vals and all(control_word(v) for v in vals):
            raise SpecError(
                f"zero perturbed cells: every cell of column {col.name!r} is a control ({', '.join(vals[:3])})",
                where=audit.path, fix="unify a file that also holds perturbed cells (or add them to this one)")
    named = [c for c in audit.obs if c.name in obs.columns and not c.numeric and c.n_unique >= 1
             and name_score(c.name, CONDITION_NAMES) > 0 and name_score(c.name, CELL_TYPE_NAMES + DONOR_NAMES) == 0]
    if named:
        c = max(named, key=lambda c: name_score(c.name, CONDITION_NAMES))
        raise SpecError(
            f"zero control cells: column {c.name!r} looks like the perturbation label but none of its "
            f"{c.n_unique} labels ({', '.join(c.sampled_values[:4])}, ...) is a control label",
            where=audit.path,
            fix="label control cells with a control word (control, ctrl, non-targeting, NTC, DMSO, vehicle, unstim) "
                "or hand in a mapping spec whose control_labels name them")


FLAG_NAMES = ("control", "is_control", "ctrl", "is_ctrl", "control_flag", "iscontrol")
TRUTHY = ["1", "true", "yes", "t", "1.0"]


def control_flag_column(audit: AuditReport, obs: pd.DataFrame) -> str | None:
    """A two-valued true/false column that names control cells (``control`` 0/1, ``is_control``)."""
    for col in audit.obs:
        if col.name.lower() in FLAG_NAMES and col.name in obs.columns and col.n_unique == 2:
            vals = {v.lower() for v in values_of(obs, col.name)}
            if vals <= {"0", "1", "true", "false", "yes", "no", "t", "f", "0.0", "1.0"}:
                return col.name
    return None


def flag_expression(col: str) -> str:
    return f"obs[{col!r}].astype('str').str.lower().isin({TRUTHY!r})"


def infer_with_flag(audit: AuditReport, obs: pd.DataFrame, flag: str, dataset_id: str | None) -> "MappingSpec":
    """Controls named by a flag column, perturbations by a label column that has no control word
    (often empty for controls)."""
    named = [c for c in audit.obs if c.name in obs.columns and c.name != flag and not c.numeric
             and name_score(c.name, CONDITION_NAMES) > 0 and name_score(c.name, CELL_TYPE_NAMES + DONOR_NAMES) == 0]
    if not named:
        raise SpecError(f"column {flag!r} flags control cells but no column names the perturbations",
                        where=audit.path, fix="add a column naming each perturbed cell's perturbation")
    ccol = max(named, key=lambda c: name_score(c.name, CONDITION_NAMES)).name
    base = infer_mapping_from(audit, obs, ccol, [], dataset_id,
                              reason=f"column {ccol!r} names perturbations; controls flagged by {flag!r}", conf=0.8)
    return base.model_copy(update={"is_control": FieldMapping(
        type="logic", expression=flag_expression(flag), confidence=0.9, reason=f"column {flag!r} flags controls")})


def infer_mapping(audit: AuditReport, obs: pd.DataFrame, dataset_id: str | None = None) -> MappingSpec:
    """The builtin policy: a MappingSpec from an audit and the obs table, by names and values."""
    cands = condition_candidates(audit, obs)
    flag = control_flag_column(audit, obs)
    if not cands and flag:
        return infer_with_flag(audit, obs, flag, dataset_id)
    if not cands:
        explain_missing_label(audit, obs)
        raise SpecError(
            "no plausible perturbation column: no categorical obs column holds a control label "
            f"({', '.join(sorted(CONTROL_WORDS)[:8])}, ...)",
            where=audit.path,
            fix="add a column naming each cell's perturbation with 'control' for controls, or hand in a mapping spec",
        )
    score, ccol, _, why = cands[0]
    return infer_mapping_from(audit, obs, ccol, None, dataset_id, reason=why, conf=0.95 if score >= 5 + 2 else 0.75)


def infer_mapping_from(audit: AuditReport, obs: pd.DataFrame, ccol: str, control_labels: list[str] | None,
                       dataset_id: str | None, reason: str, conf: float) -> MappingSpec:
    """The rest of the builtin spec once the label column is chosen."""
    why = reason
    vals = values_of(obs, ccol)
    pooled = guide_level(vals) and not any(
        c.name != ccol and c.name in obs.columns and not c.numeric and pools(obs, ccol, c.name) for c in audit.obs)
    if pooled:  # guides only: pool them by gene (MYC_sgRNA_1, MYC_sgRNA_2 -> MYC)
        n_guides = len(vals)
        vals = list(dict.fromkeys(guide_gene(v) for v in vals))
        why += f"; guide-level labels pooled by gene ({n_guides} guides -> {len(vals)} labels)"
    delims = detect_delimiters(vals, set())
    tokens = sorted({t for v in vals for t in split_label(v, delims)})
    if control_labels is None:
        control_labels = sorted({t for t in tokens if control_word(t)} | {v for v in vals if control_word(v)})
    unknown = sorted(v for v in vals if normalise_token(v) in UNKNOWN_WORDS)
    pert_tokens = [t for t in tokens if not control_word(t) and normalise_token(t) not in UNKNOWN_WORDS]
    aliases = {t: LABEL_ALIASES[t.lower()] for t in pert_tokens if t.lower() in LABEL_ALIASES}
    if pooled:
        cond = FieldMapping(type="logic", expression=f"obs[{ccol!r}].str.replace({GUIDE_SUFFIX!r}, '', regex=True)",
                            confidence=conf * 0.9, reason=f"{why}; delimiters {' '.join(delims)}")
    else:
        cond = FieldMapping(type="direct", source_key=ccol, confidence=conf,
                            reason=f"{why}; {len(vals)} labels, delimiters {' '.join(delims)}")

    # an explicit 0/1 or True/False control column that agrees with the labels is kept as evidence
    is_ctrl = FieldMapping.null(DEFAULTS["is_control"], confidence=0.9)
    flag = control_flag_column(audit, obs)
    if flag and control_labels:
        ctl_set = {c.lower() for c in control_labels}
        labels = obs[ccol].astype(str)
        per_label = {v: all(t.lower() in ctl_set for t in split_label(v, delims)) for v in labels.unique()}
        expected = labels.map(per_label)
        as_bool = obs[flag].astype(str).str.lower().isin(TRUTHY)
        if (as_bool == expected).all():
            is_ctrl = FieldMapping(type="logic", expression=flag_expression(flag), confidence=0.95,
                                   reason=f"column {flag!r} flags controls and agrees with {ccol!r}")

    used = {ccol}
    dose_col, units = dose_columns(audit, obs)
    pert_type, _ = infer_pert_type(pert_tokens, control_labels, obs, audit, dose_col)
    if pert_type.source_key:
        used.add(pert_type.source_key)

    # guide columns and other label columns (values with control words) are never the cell type
    labels_elsewhere = {c.name for c in audit.obs if c.name in obs.columns and not c.numeric and 1 <= c.n_unique <= 5000
                        and (GUIDE_NAME.search(c.name) or any(control_word(v) for v in values_of(obs, c.name)))}
    ct = pick_column(audit, obs, CELL_TYPE_NAMES, used | labels_elsewhere)
    ct_why = "its name"
    if ct is None:
        ct = cell_type_by_values(audit, obs, used | labels_elsewhere)
        ct_why = "its values read as cell types/lines"
    cell_type = (FieldMapping(type="direct", source_key=ct, confidence=0.9 if name_score(ct, CELL_TYPE_NAMES) >= 2 * (len(CELL_TYPE_NAMES) - 3) else 0.7,
                              reason=f"column {ct!r} names the cell type/line by {ct_why} ({', '.join(values_of(obs, ct)[:3])})")
                 if ct else FieldMapping(type="constant", value="unknown", confidence=0.5, reason="no cell type or line column"))
    if ct:
        used.add(ct)

    donor = pick_column(audit, obs, DONOR_NAMES, used)
    batch = pick_column(audit, obs, BATCH_NAMES, used | ({donor} if donor else set()))
    if donor:
        donor_f = FieldMapping(type="direct", source_key=donor, confidence=0.9, reason=f"column {donor!r} names donors/patients")
    else:
        expr = None
        for col in audit.obs:
            if col.name not in used and not col.numeric and re.search(r"sample|donor|patient|ind", col.name, re.I):
                expr = donor_from_sample(obs, col.name, [v for v in vals])
                if expr:
                    donor_f = FieldMapping(type="logic", expression=expr, confidence=0.7,
                                           reason=f"donor parsed out of {col.name!r}: the condition label prefix removed")
                    break
        if not expr:
            donor_f = FieldMapping.null(DEFAULTS["donor_id"])
    batch_f = (FieldMapping(type="direct", source_key=batch, confidence=0.8, reason=f"column {batch!r} names batches/replicates/samples")
               if batch else FieldMapping.null(DEFAULTS["batch_id"]))

    dose_f = (FieldMapping(type="logic", expression=dose_expression(dose_col, units), confidence=0.85,
                           reason=f"concentration parsed out of {dose_col!r} (units {', '.join(units)}) in nM")
              if dose_col and dose_expression(dose_col, units) else FieldMapping.null(DEFAULTS["dose"]))

    sym_col = None if audit.var.index_type == "symbol" else (audit.var.symbol_columns[0] if audit.var.symbol_columns else None)
    id_col = audit.var.ensembl_columns[0] if audit.var.index_type != "ensembl" and audit.var.ensembl_columns else None
    x = audit.x
    return MappingSpec(
        dataset_id=dataset_id or audit.name, source=audit.path, policy="builtin",
        condition_name=cond, is_control=is_ctrl, pert_type=pert_type, cell_type=cell_type,
        donor_id=donor_f, batch_id=batch_f, dose=dose_f,
        control_labels=control_labels, unknown_labels=unknown, combo_delimiters=delims, label_aliases=aliases,
        is_already_log1p=not x.needs_normalising(), normalization_required=x.needs_normalising(),
        var_index_type=audit.var.index_type, gene_symbol_column=sym_col, gene_id_column=id_col,
    )


def explain(audit: AuditReport, obs: pd.DataFrame) -> tuple[str, "MappingSpec | None"]:
    """What the builtin Unifier would do with this file, and why, before it does it: the ranked
    perturbation-column candidates, control labels with the rule that matched each, the cell
    type / donor / batch / dose columns, and the counts-vs-log decision. Returns (markdown, spec);
    spec is None (and the reason is in the text) when the file cannot be mapped."""
    lines = ["", "## What the Unifier will do (builtin policy)", "", "Perturbation-column candidates, best first:"]
    cands = condition_candidates(audit, obs)
    for score, name, labels, why in cands[:6]:
        lines.append(f"- `{name}` (score {score:.1f}): {why}")
    if not cands:
        lines.append("- none: no categorical column holds a control label")
    try:
        spec = infer_mapping(audit, obs)
    except HarmonyCellError as e:
        lines += ["", f"**Cannot map this file:** {e.one_line()}"]
        return "\n".join(lines) + "\n", None
    lines += ["", "Decisions:"]
    for name, fm in spec.fields().items():
        src = fm.source_key or fm.expression or ("" if fm.value is None else repr(fm.value))
        lines.append(f"- {name}: {fm.type} {f'`{src}`' if src else ''} (confidence {fm.confidence:.2f}) -- {fm.reason}")
    rules = [f"`{c}` ({control_match(c)[1] if control_match(c) else 'given'})" for c in spec.control_labels]
    lines.append(f"- control labels: {', '.join(rules) or 'none (a flag column names controls)'}")
    if spec.unknown_labels:
        lines.append(f"- labels meaning 'unknown perturbation' (cells dropped): {', '.join(spec.unknown_labels)}")
    lines.append(f"- scale: {audit.x.scale or 'unclear'} -- {audit.x.reason}; "
                 f"{'normalize_total(1e4) + log1p' if spec.normalization_required else 'used as is (not logged again)'}")
    lines.append(f"- genes: index {spec.var_index_type}; symbols from "
                 f"{'`' + spec.gene_symbol_column + '`' if spec.gene_symbol_column else 'the index'}")
    return "\n".join(lines) + "\n", spec
