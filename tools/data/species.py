"""Which species a file's genes belong to, from Ensembl prefixes or the case of its symbols.

Two files are merged on gene names; a mouse file and a human file share many names once case
is ignored (Actb / ACTB), so a merge across species would be silent and wrong. Species are read
from Ensembl prefixes where there are any, else from symbol style (human: upper case, ACTB;
mouse/rat: capitalised, Actb, plus RIKEN clones 0610009B22Rik and Gm12345 models).
"""

from __future__ import annotations

import re

import pandas as pd

ENSEMBL_SPECIES = {  # gene-id prefix -> species
    "ENSG": "human", "ENSMUSG": "mouse", "ENSRNOG": "rat", "ENSDARG": "zebrafish", "ENSGALG": "chicken",
    "ENSSSCG": "pig", "ENSMMUG": "macaque", "ENSCAFG": "dog", "ENSBTAG": "cow",
}
ENSEMBL_PREFIX = re.compile(r"^(ENS[A-Z]*G)\d")
MOUSE_ONLY = re.compile(r"(?:Rik$|^Gm\d+$|^mt-)")
MIN_SHARE = 0.8  # share of the genes that must agree before a species is named


def numeric_share(names: pd.Series) -> float:
    """Share of gene names that are plain numbers (row numbers, not identifiers)."""
    s = pd.Series(names).dropna().astype(str)
    return float(s.str.fullmatch(r"\d+").mean()) if len(s) else 0.0


def species_of(symbols: pd.Series, ensembl: pd.Series | None = None) -> tuple[str, str]:
    """(species, evidence): human, mouse, rat, ... or 'unknown' when the genes do not say."""
    if ensembl is not None:
        pref = pd.Series(ensembl).dropna().astype(str).str.extract(ENSEMBL_PREFIX, expand=False).dropna()
        if len(pref):
            top = pref.value_counts()
            share = top.iloc[0] / len(pref)
            if share >= MIN_SHARE and top.index[0] in ENSEMBL_SPECIES:
                return ENSEMBL_SPECIES[top.index[0]], f"{share:.0%} of Ensembl ids start with {top.index[0]}"
    s = pd.Series(symbols).dropna().astype(str)
    s = s[s.str.contains(r"[A-Za-z]{2}") & ~s.str.match(ENSEMBL_PREFIX.pattern)]
    if len(s) == 0:
        return "unknown", "no gene symbols"
    upper = float((s == s.str.upper()).mean())
    capital = float((s.str.match(r"^[A-Z0-9][a-z0-9\-\.]*[a-z][a-z0-9\-\.]*$") | s.str.contains(MOUSE_ONLY.pattern)).mean())
    if upper >= MIN_SHARE:
        return "human", f"{upper:.0%} of symbols are upper case (human style, e.g. {s.iloc[0]})"
    if capital >= MIN_SHARE:
        return "mouse", f"{capital:.0%} of symbols are capitalised (mouse/rat style, e.g. {s.iloc[0]})"
    return "unknown", f"symbol case is mixed ({upper:.0%} upper case, {capital:.0%} capitalised)"
