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
from functools import lru_cache
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, Field

from harmonycell.tools.data import labels
from harmonycell.tools.data.audit import AuditReport, ObsColumn
from harmonycell.tools.genes.db import GeneDB, GeneKnowledgeMissing, default_path as default_gene_db_path
from harmonycell.tools.errors import HarmonyCellError, InputError, SpecError
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
# Which labels are controls, targets or unknown is decided by tools/data/labels.py (tokens and gene
# knowledge); the words below only type the perturbations and name the columns.
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


class LabelReader:
    """Label decisions for one file (tools/data/labels.py): its own gene names first, then the gene
    database (absent: the file's names alone). Decisions are cached per label."""

    def __init__(self, gene_names: "list[str] | None" = None):
        self.is_gene = labels.gene_lookup(gene_names or (), gene_db())
        self._seen: dict[str, labels.LabelDecision] = {}

    @classmethod
    def for_file(cls, audit: AuditReport, var: pd.DataFrame | None) -> "LabelReader":
        if var is None:
            return default_reader()
        names = [str(v) for v in var.index]
        for c in audit.var.symbol_columns:
            if c in var.columns:
                names += [str(v) for v in var[c].dropna()]
        return cls(names)

    def decide(self, label: str) -> labels.LabelDecision:
        key = str(label).strip()
        if key not in self._seen:
            self._seen[key] = labels.decide(key, self.is_gene)
        return self._seen[key]

    def control(self, label: str) -> labels.LabelDecision | None:
        d = self.decide(label)
        return d if d.kind == "control" else None


@lru_cache(maxsize=4)
def _gene_db_at(path: str):
    try:
        return GeneDB(path)
    except GeneKnowledgeMissing:
        return None


def gene_db():
    """The installed gene database, opened once per process; None where it is not installed."""
    return _gene_db_at(str(default_gene_db_path()))


@lru_cache(maxsize=4)
def _default_reader_at(path: str) -> LabelReader:
    return LabelReader()


def default_reader() -> LabelReader:
    """A reader with gene knowledge from the database only (no file at hand)."""
    return _default_reader_at(str(default_gene_db_path()))


def control_match(tok: str, reader: LabelReader | None = None) -> tuple[str, str] | None:
    """(control class, the rule that decided) for a label that is a negative control, else None."""
    d = (reader or default_reader()).control(tok)
    return (d.control_class or "generic", d.rule) if d else None


def control_word(tok: str, reader: LabelReader | None = None) -> str | None:
    """The control class a label belongs to, or None (see control_match)."""
    m = control_match(tok, reader)
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


def detect_delimiters(values: list[str], reader: LabelReader | None = None) -> list[str]:
    """'+' and ';' always separate perturbations; ',', '|' and '_' only where every part of
    every value using them is itself a label seen alone or a control (so that a name like
    ``A549_ctrl_1`` or ``HLA-A`` is not torn apart)."""
    reader = reader or default_reader()
    single = {v for v in values}
    delims = ["+", ";"]
    for d in ["|", ",", "_", "/"]:
        users = [v for v in values if d in v]
        if users and all(all(p in single or reader.control(p) for p in v.split(d) if p) for v in users) \
                and any(any(reader.control(p) is None for p in v.split(d)) for v in users):
            delims.append(d)
    return delims


GUIDE_NAME = re.compile(r"guide|sgrna|grna|sgid|protospacer|spacer|oligo", re.I)


def guide_genes(vals: list[str], reader: LabelReader) -> dict[str, str]:
    """label -> gene for labels written per guide (``MYC_sgRNA_2``, ``sgJAK2-2``): the stem less the
    guide suffix is a gene of the organism (labels.py decides). The gene keeps the file's spelling
    (``MARCH8_sg1`` -> ``MARCH8``), as gene-level labels do."""
    out = {}
    for v in vals:
        d = reader.decide(v)
        if d.kind == "target" and d.gene and d.guide:
            out[v] = (labels.gene_stem(v) or (d.gene,))[0]
    return out


def guide_level(vals: list[str], reader: LabelReader) -> bool:
    """Labels that are guides of fewer genes: most carry a guide suffix, and pooling them by gene
    leaves fewer labels (``MYC_sgRNA_1``, ``MYC_sgRNA_2`` -> ``MYC``)."""
    if len(vals) < 4:
        return False
    pooled = guide_genes(vals, reader)
    genes = {pooled.get(v, v) for v in vals}
    return len(pooled) >= 0.5 * len(vals) and len(genes) <= 0.7 * len(vals)


def pools(obs: pd.DataFrame, fine: str, coarse: str) -> bool:
    """``coarse`` is the gene level of guide column ``fine``: each guide has one gene, and guide
    labels start with their gene's name (the control's name may differ: NTg1 -> non-targeting)."""
    pairs = obs[[fine, coarse]].dropna().astype(str).drop_duplicates()
    if pairs.empty or pairs[fine].duplicated().any() or pairs[coarse].nunique() >= pairs[fine].nunique():
        return False
    prefix = [f.lower().startswith(c.lower()) for f, c in zip(pairs[fine], pairs[coarse])]
    return sum(prefix) >= 0.8 * len(prefix) and pairs[coarse].nunique() >= 3


def label_counts(obs: pd.DataFrame, col: str, delims: list[str]) -> dict[str, int]:
    """Cells per single label of a column (a combination ``A+B`` counts for A and for B)."""
    counts: dict[str, int] = {}
    for v, n in obs[col].dropna().astype(str).value_counts().items():
        for t in split_label(v, delims):
            counts[t] = counts.get(t, 0) + int(n)
    return counts


def clear_label_column(name: str, reading: labels.LabelReading) -> str | None:
    """Why a column without a known control is still plainly the perturbation label, or None:
    its name says so, or most of its labels are genes of the organism."""
    n = len(reading.decisions)
    n_genes = sum(d.kind == "target" for d in reading.decisions.values())
    if name_score(name, CONDITION_NAMES) > 0:
        return f"name {name!r} is a perturbation-column name"
    if n >= 3 and n_genes >= 0.5 * n:
        return f"{n_genes} of its {n} labels are genes of the organism"
    return None


def condition_candidates(audit: AuditReport, obs: pd.DataFrame, reader: LabelReader | None = None
                         ) -> list[tuple[float, str, list[str], str]]:
    """(score, column, control labels, why) for plausible perturbation-label columns, best first.
    A column with no known control but plainly a label column comes last, with the control
    labels.py proposes (the most frequent label that is not a gene), said in ``why``."""
    reader = reader or default_reader()
    out = []
    for col in audit.obs:
        if col.name not in obs.columns or not categorical(col, audit.n_cells) or col.n_unique < 2:
            continue
        if name_score(col.name, CELL_TYPE_NAMES + DONOR_NAMES) > 0 and name_score(col.name, CONDITION_NAMES) == 0:
            continue
        vals = values_of(obs, col.name)
        delims = detect_delimiters(vals, reader)
        tokens = {t for v in vals for t in split_label(v, delims)}
        ctrl = sorted(t for t in tokens if reader.control(t))
        whole_ctrl = [v for v in vals if reader.control(v)]
        labels_ = sorted(set(ctrl) | set(whole_ctrl))
        why = []
        if labels_:
            score = name_score(col.name, CONDITION_NAMES) + 5.0
            rules = "; ".join(f"{lab!r}: {reader.decide(lab).rule}" for lab in labels_[:2])
            rules += f" (and {len(labels_) - 2} more)" if len(labels_) > 2 else ""
            why.append(f"values include control label(s) {rules}")
        else:
            reading = labels.read_labels(label_counts(obs, col.name, delims), reader.is_gene)
            clear = clear_label_column(col.name, reading)
            if clear is None or reading.proposed_control is None or NEGATIVE_NAMES.match(col.name):
                continue
            score = name_score(col.name, CONDITION_NAMES) + 1.0
            labels_ = [reading.proposed_control]
            why.append(f"PROPOSED control: {reading.proposal_reason}; the column is a label column ({clear})")
        if NEGATIVE_NAMES.match(col.name) or re.search(r"sample|batch|rep", col.name, re.I):
            score -= 6.0
            why.append("name reads like a sample/batch/count column (-6)")
        # a label column has few values per cell; an identifier column has many
        score -= 2.0 * (col.n_unique / max(audit.n_cells, 1))
        # labels with a dose inside ('0.2 uM panobinostat') are a worse label than the bare name
        if any(DOSE_RE.search(v) for v in vals):
            score -= 4.0
            why.append("labels carry a dose (-4)")
        if GUIDE_NAME.search(col.name) or guide_level(vals, reader):
            score -= 1.0
            why.append("guide-level labels (-1)")
        if name_score(col.name, CONDITION_NAMES):
            why.insert(1, f"name {col.name!r} is a perturbation-column name")
        out.append([score, col.name, labels_, why])
    # a gene-level column beats the guide column it pools (the guides of a gene are one perturbation)
    for fine in out:
        for coarse in out:
            if fine is not coarse and pools(obs, fine[1], coarse[1]):
                coarse[0] += 3.0
                coarse[3].append(f"gene level of guide column {fine[1]!r} (+3)")
                fine[3].append(f"guide level: pooled by {coarse[1]!r}")
    res = [(sc, name, labs, "; ".join(why)) for sc, name, labs, why in out]
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


def cell_type_by_values(audit: AuditReport, obs: pd.DataFrame, exclude: set[str],
                        reader: LabelReader | None = None) -> str | None:
    """A column of 2..50 text labels most of which read as cell types (``CD4 T cells``, ``K562``)."""
    best = None
    for col in audit.obs:
        if col.name in exclude or col.name not in obs.columns or col.numeric or not 1 <= col.n_unique <= 50:
            continue
        if NEGATIVE_NAMES.match(col.name) and name_score(col.name, CELL_TYPE_NAMES) == 0:
            continue
        vals = values_of(obs, col.name)
        hits = sum(bool(CELL_TYPE_VALUE.search(v)) for v in vals)
        if vals and hits >= 0.6 * len(vals) and not any(control_word(v, reader) for v in vals):
            if best is None or hits / len(vals) > best[0]:
                best = (hits / len(vals), col.name)
    return best[1] if best else None


def infer_pert_type(spec_tokens: list[str], control_labels: list[str], obs: pd.DataFrame, audit: AuditReport,
                    dose_col: str | None, reader: LabelReader | None = None) -> tuple[FieldMapping, str]:
    """pert_type from a type column if there is one, else from the vocabulary of the labels."""
    for col in audit.obs:
        if name_score(col.name, PERT_TYPE_NAMES) > 0 and col.name in obs.columns and not col.numeric:
            return FieldMapping(type="direct", source_key=col.name, confidence=0.9,
                                reason=f"column {col.name!r} names the perturbation type "
                                       f"({', '.join(values_of(obs, col.name)[:3])})"), "column"
    classes = {control_word(c, reader) for c in control_labels}
    says = {labels.PERT_TYPE_OF_CLASS.get(c or "generic") for c in classes}
    if "drug" in says or dose_col:
        why = "vehicle control" if "drug" in says else f"doses in {dose_col!r}"
        return FieldMapping(type="constant", value="drug", confidence=0.85, reason=f"drug: {why}"), "drug"
    if "crispr" in says:
        named = ", ".join(sorted(c for c in classes if labels.PERT_TYPE_OF_CLASS.get(c or "") == "crispr"))
        return FieldMapping(type="constant", value="crispr", confidence=0.85,
                            reason=f"crispr: guide controls ({named})"), "crispr"
    if "cytokine" in says or (spec_tokens and all(CYTOKINE_WORDS.match(t) for t in spec_tokens)):
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


CONTROL_FIX = ("name the control label with --control LABEL (repeat it for several), or hand in a mapping spec "
               "whose control_labels name them (harmonycell audit FILE --write-spec DIR, then --specs DIR)")


def considered(reader: LabelReader, counts: dict[str, int], show: int = 8) -> str:
    """The labels a refusal looked at, most frequent first, each with what it was read as."""
    top = sorted(counts, key=lambda k: (-counts[k], k))
    parts = []
    for lab in top[:show]:
        d = reader.decide(lab)
        what = f"gene {d.gene}" if d.kind == "target" else d.kind
        parts.append(f"{lab} ({counts[lab]} cells, {what})")
    more = f", and {len(top) - show} more" if len(top) > show else ""
    return ", ".join(parts) + more


def explain_missing_label(audit: AuditReport, obs: pd.DataFrame, reader: LabelReader | None = None) -> None:
    """Raise the specific error when a label column exists but has no controls or only controls."""
    reader = reader or default_reader()
    for col in audit.obs:
        if col.name not in obs.columns or col.numeric:
            continue
        vals = values_of(obs, col.name)
        if vals and all(reader.control(v) for v in vals):
            raise SpecError(
                f"zero perturbed cells: every cell of column {col.name!r} is a control ({', '.join(vals[:3])})",
                where=audit.path, fix="unify a file that also holds perturbed cells (or add them to this one)")
    named = [c for c in audit.obs if c.name in obs.columns and not c.numeric and c.n_unique >= 1
             and name_score(c.name, CONDITION_NAMES) > 0 and name_score(c.name, CELL_TYPE_NAMES + DONOR_NAMES) == 0]
    if named:
        c = max(named, key=lambda c: name_score(c.name, CONDITION_NAMES))
        counts = label_counts(obs, c.name, detect_delimiters(values_of(obs, c.name), reader))
        raise SpecError(
            f"zero control cells: column {c.name!r} looks like the perturbation label but none of its "
            f"{len(counts)} labels is a control word, and none that is not a gene could be proposed as the "
            f"control; labels considered: {considered(reader, counts)}",
            where=audit.path, fix=CONTROL_FIX)


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


def infer_with_flag(audit: AuditReport, obs: pd.DataFrame, flag: str, dataset_id: str | None,
                    reader: LabelReader) -> "MappingSpec":
    """Controls named by a flag column, perturbations by a label column that has no control word
    (often empty for controls)."""
    named = [c for c in audit.obs if c.name in obs.columns and c.name != flag and not c.numeric
             and name_score(c.name, CONDITION_NAMES) > 0 and name_score(c.name, CELL_TYPE_NAMES + DONOR_NAMES) == 0]
    if not named:
        raise SpecError(f"column {flag!r} flags control cells but no column names the perturbations",
                        where=audit.path, fix="add a column naming each perturbed cell's perturbation")
    ccol = max(named, key=lambda c: name_score(c.name, CONDITION_NAMES)).name
    base = infer_mapping_from(audit, obs, ccol, [], dataset_id, reader,
                              reason=f"column {ccol!r} names perturbations; controls flagged by {flag!r}", conf=0.8)
    return base.model_copy(update={"is_control": FieldMapping(
        type="logic", expression=flag_expression(flag), confidence=0.9, reason=f"column {flag!r} flags controls")})


def named_controls(audit: AuditReport, obs: pd.DataFrame, controls: list[str], reader: LabelReader
                   ) -> tuple[str, list[str]]:
    """(column, its labels) holding the control labels a person named (``--control``), matched
    case-insensitively against whole labels and the parts of combinations."""
    want = {normalise_token(c): c for c in controls}
    best = None
    for col in audit.obs:
        if col.name not in obs.columns or col.numeric or col.n_unique < 2 or col.n_unique > max(2, audit.n_cells - 1):
            continue
        vals = values_of(obs, col.name)
        delims = detect_delimiters(vals, reader)
        found = {normalise_token(t): t for v in vals for t in [v, *split_label(v, delims)] if normalise_token(t) in want}
        if len(found) == len(want):
            score = name_score(col.name, CONDITION_NAMES) - 2.0 * col.n_unique / max(audit.n_cells, 1)
            if best is None or score > best[0]:
                best = (score, col.name, sorted(found.values()))
    if best is None:
        cols = [c.name for c in audit.obs if c.name in obs.columns and not c.numeric]
        raise InputError(f"no obs column holds the control label(s) {', '.join(map(repr, controls))}",
                         where=audit.path, fix=f"name a label that occurs in one of {', '.join(cols[:8])} "
                                               "(see harmonycell audit FILE)")
    return best[1], best[2]


def infer_mapping(audit: AuditReport, obs: pd.DataFrame, dataset_id: str | None = None,
                  var: pd.DataFrame | None = None, controls: list[str] | None = None) -> MappingSpec:
    """The builtin policy: a MappingSpec from an audit and the obs table, by names and values.
    ``var``: the file's genes (their names join the gene knowledge labels are read with);
    ``controls``: the control labels a person named, which decide the label column too."""
    reader = LabelReader.for_file(audit, var)
    if controls:
        ccol, found = named_controls(audit, obs, controls, reader)
        return infer_mapping_from(audit, obs, ccol, found, dataset_id, reader, conf=0.95,
                                  reason=f"column {ccol!r} holds the control label(s) named with --control "
                                         f"({', '.join(found)})")
    cands = condition_candidates(audit, obs, reader)
    flag = control_flag_column(audit, obs)
    if (not cands or "PROPOSED control" in cands[0][3]) and flag:
        return infer_with_flag(audit, obs, flag, dataset_id, reader)
    if not cands:
        explain_missing_label(audit, obs, reader)
        raise SpecError(
            "no plausible perturbation column: no categorical obs column holds a control label, and none "
            "is plainly a perturbation label (a perturbation-column name, or labels that are genes)",
            where=audit.path,
            fix="add a column naming each cell's perturbation with its control label, or hand in a mapping spec",
        )
    score, ccol, found, why = cands[0]
    if "PROPOSED control" in why:
        return infer_mapping_from(audit, obs, ccol, found, dataset_id, reader, reason=why, conf=0.5)
    return infer_mapping_from(audit, obs, ccol, None, dataset_id, reader, reason=why,
                              conf=0.95 if score >= 5 + 2 else 0.75)


def infer_mapping_from(audit: AuditReport, obs: pd.DataFrame, ccol: str, control_labels: list[str] | None,
                       dataset_id: str | None, reader: LabelReader, reason: str, conf: float) -> MappingSpec:
    """The rest of the builtin spec once the label column is chosen."""
    why = reason
    vals = values_of(obs, ccol)
    aliases: dict[str, str] = {}
    pooled = guide_level(vals, reader) and not any(
        c.name != ccol and c.name in obs.columns and not c.numeric and pools(obs, ccol, c.name) for c in audit.obs)
    if pooled:  # guides only: pool them by gene (MYC_sgRNA_1, MYC_sgRNA_2 -> MYC)
        aliases = guide_genes(vals, reader)
        n_guides = len(vals)
        vals = list(dict.fromkeys(aliases.get(v, v) for v in vals))
        why += f"; guide-level labels pooled by gene ({n_guides} guides -> {len(vals)} labels)"
    delims = detect_delimiters(vals, reader)
    tokens = sorted({t for v in vals for t in split_label(v, delims)})
    if control_labels is None:
        control_labels = sorted({t for t in tokens if reader.control(t)} | {v for v in vals if reader.control(v)})
    ctl = {normalise_token(c) for c in control_labels}
    unknown = sorted(v for v in vals if labels.is_unknown_label(v))
    pert_tokens = [t for t in tokens if normalise_token(t) not in ctl and not labels.is_unknown_label(t)]
    aliases.update({t: LABEL_ALIASES[t.lower()] for t in pert_tokens if t.lower() in LABEL_ALIASES})
    cond = FieldMapping(type="direct", source_key=ccol, confidence=conf * (0.9 if pooled else 1.0),
                        reason=f"{why}; {len(vals)} labels, delimiters {' '.join(delims)}")

    # an explicit 0/1 or True/False control column that agrees with the labels is kept as evidence
    is_ctrl = FieldMapping.null(DEFAULTS["is_control"], confidence=0.9)
    flag = control_flag_column(audit, obs)
    if flag and control_labels:
        labels_ = obs[ccol].astype(str)
        per_label = {v: all(normalise_token(t) in ctl for t in split_label(v, delims)) for v in labels_.unique()}
        expected = labels_.map(per_label)
        as_bool = obs[flag].astype(str).str.lower().isin(TRUTHY)
        if (as_bool == expected).all():
            is_ctrl = FieldMapping(type="logic", expression=flag_expression(flag), confidence=0.95,
                                   reason=f"column {flag!r} flags controls and agrees with {ccol!r}")

    used = {ccol}
    dose_col, units = dose_columns(audit, obs)
    pert_type, _ = infer_pert_type(pert_tokens, control_labels, obs, audit, dose_col, reader)
    if pert_type.source_key:
        used.add(pert_type.source_key)

    # guide columns and other label columns (values with control words) are never the cell type
    labels_elsewhere = {c.name for c in audit.obs if c.name in obs.columns and not c.numeric and 1 <= c.n_unique <= 5000
                        and (GUIDE_NAME.search(c.name) or any(reader.control(v) for v in values_of(obs, c.name)))}
    ct = pick_column(audit, obs, CELL_TYPE_NAMES, used | labels_elsewhere)
    ct_why = "its name"
    if ct is None:
        ct = cell_type_by_values(audit, obs, used | labels_elsewhere, reader)
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


class LabelNote(BaseModel):
    """One label of the perturbation column, as the unify report shows it: what it was read as,
    from which tokens, by which rule, and for how many cells."""

    label: str
    cells: int
    role: Literal["control", "perturbation", "unknown"]  # what the spec made of it
    kind: str  # what labels.py read it as: control | target | unknown
    control_class: str | None = None
    gene: str | None = None
    guide: str | None = None
    tokens: list[str] = Field(default_factory=list)
    rule: str


MAX_NOTES = 300


def label_notes(spec: MappingSpec, obs: pd.DataFrame, reader: LabelReader | None = None) -> list[LabelNote]:
    """Every single label of the spec's perturbation column (most frequent first, at most
    MAX_NOTES), with the decision labels.py made and what the spec made of it."""
    cols = spec.condition_name.columns()
    if not cols or cols[0] not in obs.columns:
        return []
    reader = reader or default_reader()
    ctl = {normalise_token(c) for c in spec.control_labels}
    counts = label_counts(obs, cols[0], spec.combo_delimiters)
    # a control counts the cells it labels alone; beside a perturbation (GEARS 'A+ctrl') the cell is perturbed
    alone: dict[str, int] = {}
    for v, n in obs[cols[0]].dropna().astype(str).value_counts().items():
        parts = split_label(v, spec.combo_delimiters)
        if parts and all(normalise_token(t) in ctl for t in parts):
            for t in set(parts):
                alone[t] = alone.get(t, 0) + int(n)
    notes = []
    for lab in sorted(counts, key=lambda k: (-counts[k], k))[:MAX_NOTES]:
        d = reader.decide(lab)
        unknown = labels.is_unknown_label(lab) or normalise_token(lab) in {normalise_token(u) for u in spec.unknown_labels}
        role = "control" if normalise_token(lab) in ctl else "unknown" if unknown else "perturbation"
        rule = d.rule
        cells = alone.get(lab, 0) if role == "control" else counts[lab]
        if role == "control" and counts[lab] > cells:
            rule += f"; also written beside a perturbation in {counts[lab] - cells} perturbed cells"
        if role == "control" and d.kind != "control":
            rule = f"named a control by the spec (read alone: {d.rule})"
        elif role == "unknown":
            rule = "a label meaning 'perturbation unknown': cells dropped"
        notes.append(LabelNote(label=lab, cells=cells, role=role, kind=d.kind, control_class=d.control_class,
                               gene=d.gene, guide=d.guide, tokens=list(d.tokens), rule=rule))
    return notes


def explain(audit: AuditReport, obs: pd.DataFrame, var: pd.DataFrame | None = None) -> tuple[str, "MappingSpec | None"]:
    """What the builtin Unifier would do with this file, and why, before it does it: the ranked
    perturbation-column candidates, control labels with the rule that matched each, the cell
    type / donor / batch / dose columns, and the counts-vs-log decision. Returns (markdown, spec);
    spec is None (and the reason is in the text) when the file cannot be mapped."""
    reader = LabelReader.for_file(audit, var)
    lines = ["", "## What the Unifier will do (builtin policy)", "", "Perturbation-column candidates, best first:"]
    cands = condition_candidates(audit, obs, reader)
    for score, name, _, why in cands[:6]:
        lines.append(f"- `{name}` (score {score:.1f}): {why}")
    if not cands:
        lines.append("- none: no categorical column holds a control label")
    try:
        spec = infer_mapping(audit, obs, var=var)
    except HarmonyCellError as e:
        lines += ["", f"**Cannot map this file:** {e.one_line()}"]
        return "\n".join(lines) + "\n", None
    lines += ["", "Decisions:"]
    for name, fm in spec.fields().items():
        src = fm.source_key or fm.expression or ("" if fm.value is None else repr(fm.value))
        lines.append(f"- {name}: {fm.type} {f'`{src}`' if src else ''} (confidence {fm.confidence:.2f}) -- {fm.reason}")
    rules = [f"`{c}` ({m[1] if (m := control_match(c, reader)) else 'named, not a known control word'})"
             for c in spec.control_labels]
    lines.append(f"- control labels: {', '.join(rules) or 'none (a flag column names controls)'}")
    if spec.unknown_labels:
        lines.append(f"- labels meaning 'unknown perturbation' (cells dropped): {', '.join(spec.unknown_labels)}")
    lines.append(f"- scale: {audit.x.scale or 'unclear'} -- {audit.x.reason}; "
                 f"{'normalize_total(1e4) + log1p' if spec.normalization_required else 'used as is (not logged again)'}")
    lines.append(f"- genes: index {spec.var_index_type}; symbols from "
                 f"{'`' + spec.gene_symbol_column + '`' if spec.gene_symbol_column else 'the index'}")
    return "\n".join(lines) + "\n", spec


def control_specs(files: list[Path], controls: list[str]) -> dict[str, MappingSpec]:
    """Builtin specs (file stem -> spec) for the inputs that hold the control labels a person named
    (``--control LABEL``); inputs without them are left to the builtin policy. None holding them
    is an error that lists what was looked at."""
    from harmonycell.tools.data.audit import audit_h5ad, read_obs_var_backed

    controls = [c.strip() for c in controls if c and c.strip()]
    if not controls:
        raise InputError("--control needs a label", where="--control", fix="e.g. --control non-targeting")
    out: dict[str, MappingSpec] = {}
    misses = []
    for f in map(Path, files):
        audit = audit_h5ad(f)
        obs, var = read_obs_var_backed(f)
        try:
            out[f.stem] = infer_mapping(audit, obs, dataset_id=f.stem, var=var, controls=controls)
        except InputError as e:
            misses.append(e.one_line())
    if not out:
        raise InputError(f"no input holds the control label(s) {', '.join(map(repr, controls))}", where="--control",
                         fix="; ".join(misses))
    return out


def write_control_specs(files: list[Path], controls: list[str], root: Path) -> Path:
    """control_specs written as a --specs folder under ``root`` (one per set of inputs and labels),
    for the commands whose run reads its specs from a folder later (run, chat)."""
    import hashlib

    specs = control_specs(files, controls)
    key = hashlib.sha256(json.dumps([sorted(str(Path(f).resolve()) for f in files), sorted(controls)]).encode())
    folder = Path(root) / ".control-specs" / key.hexdigest()[:12]
    for stem, spec in specs.items():
        atomic.write_text(folder / f"{stem}.json", spec.model_dump_json(indent=2) + "\n")
    return folder
