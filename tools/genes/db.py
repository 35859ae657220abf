"""Read-only access to Bioconductor's org.Hs.eg.db (human gene knowledge, offline).

The database is one SQLite file, installed by ``.ci/install-genedb.sh`` (``make setup`` runs it)
from Debian's ``r-bioc-org.hs.eg.db`` into the user's data folder; it is never committed and
never downloaded at run time. Everything that reads it goes through :class:`GeneDB`, so a missing
file is one clear error (``GeneKnowledgeMissing``) that callers turn into a fallback to
data-only features.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable, Literal

from harmonycell.tools.errors import HarmonyCellError

DB_FILE = "org.Hs.eg.sqlite"
VERSION_FILE = "VERSION.json"  # written by the installer: the Debian package and its version
ENV_PATH = "HARMONYCELL_GENE_DB"
INSTALL_HINT = "run `make setup` (or `bash .ci/install-genedb.sh`) to install it, or set " + ENV_PATH
GO_ASPECTS = ("bp", "mf", "cc")
_ENSEMBL_ID = re.compile(r"^(ENSG\d{11})(?:\.\d+)?$")

Status = Literal["symbol", "alias", "ensembl", "ambiguous", "unknown"]


class GeneKnowledgeMissing(HarmonyCellError):
    """The gene database is not installed or cannot be opened."""


def default_path() -> Path:
    """$HARMONYCELL_GENE_DB, else the user's data folder (beside the knowledge base)."""
    if os.environ.get(ENV_PATH):
        return Path(os.environ[ENV_PATH])
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "harmonycell" / "genes" / DB_FILE


@dataclass(frozen=True)
class Resolution:
    """What a gene name in a file is, according to the database."""

    name: str  # as written in the file
    symbol: str | None  # the current official symbol; None when unknown or ambiguous
    status: Status
    candidates: tuple[str, ...] = ()  # for an ambiguous alias: every symbol it names

    @property
    def renamed(self) -> bool:
        return self.symbol is not None and self.symbol != self.name


class GeneDB:
    """One opened org.Hs.eg.db. Read-only: the file is shared by every run on the machine."""

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path is not None else default_path()
        if not self.path.is_file():
            raise GeneKnowledgeMissing("gene knowledge (org.Hs.eg.db) is not installed", where=str(self.path),
                                       fix=INSTALL_HINT)
        try:
            # immutable: no locks, no journal, never a write to a file other runs read too
            self._con = sqlite3.connect(f"file:{self.path}?mode=ro&immutable=1", uri=True,
                                        check_same_thread=False)
            self._con.execute("SELECT 1 FROM gene_info LIMIT 1")
        except sqlite3.Error as e:
            raise GeneKnowledgeMissing(f"cannot read the gene database ({e})", where=str(self.path),
                                       fix=INSTALL_HINT) from e

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> "GeneDB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _rows(self, sql: str, args: Iterable = ()) -> list[tuple]:
        return self._con.execute(sql, tuple(args)).fetchall()

    @cached_property
    def version(self) -> dict[str, str]:
        """Sources and dates of the database (and the installed package), for a run's record."""
        meta = dict(self._rows("SELECT name, value FROM metadata"))
        out = {k: meta[k] for k in ("ORGANISM", "EGSOURCEDATE", "GOSOURCEDATE", "KEGGSOURCEDATE",
                                    "ENSOURCEDATE") if k in meta}
        vf = self.path.parent / VERSION_FILE
        if vf.is_file():
            out.update(json.loads(vf.read_text()))
        return out

    @cached_property
    def _symbols(self) -> dict[str, int]:
        return {s: i for i, s in self._rows("SELECT _id, symbol FROM gene_info")}

    @cached_property
    def _symbols_upper(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for s in self._symbols:
            out.setdefault(s.upper(), []).append(s)
        return out

    @cached_property
    def _aliases(self) -> dict[str, set[str]]:
        """upper-case alias -> current symbols (an alias may name several genes)."""
        out: dict[str, set[str]] = {}
        for alias, sym in self._rows("SELECT a.alias_symbol, g.symbol FROM alias a JOIN gene_info g USING (_id)"):
            out.setdefault(alias.upper(), set()).add(sym)
        return out

    def is_gene(self, name: str) -> bool:
        """Whether ``name`` is a human gene symbol, alias or Ensembl id the database knows."""
        return self.resolve_one(name).status != "unknown"

    def resolve_one(self, name: str) -> Resolution:
        name = str(name).strip()
        if name in self._symbols:
            return Resolution(name, name, "symbol")
        m = _ENSEMBL_ID.match(name)
        if m:
            syms = sorted({s for (s,) in self._rows(
                "SELECT g.symbol FROM ensembl e JOIN gene_info g USING (_id) WHERE e.ensembl_id = ?", (m.group(1),))})
            if len(syms) == 1:
                return Resolution(name, syms[0], "ensembl")
            return Resolution(name, None, "ambiguous" if syms else "unknown", tuple(syms))
        same = self._symbols_upper.get(name.upper(), [])
        if len(same) == 1:  # c-MYC written in another case is still the symbol, not an alias
            return Resolution(name, same[0], "symbol")
        syms = sorted(self._aliases.get(name.upper(), ()))
        if len(syms) == 1:
            return Resolution(name, syms[0], "alias")
        if syms:
            return Resolution(name, None, "ambiguous", tuple(syms))
        return Resolution(name, None, "unknown")

    def resolve(self, names: Iterable[str]) -> dict[str, Resolution]:
        return {n: self.resolve_one(n) for n in dict.fromkeys(map(str, names))}

    def kegg_pathways(self, symbols: Iterable[str]) -> dict[str, set[str]]:
        """symbol -> the KEGG pathway ids it belongs to (empty for a gene the database lacks)."""
        out: dict[str, set[str]] = {}
        for s in dict.fromkeys(symbols):
            gid = self._symbols.get(s)
            out[s] = set() if gid is None else {p for (p,) in self._rows("SELECT path_id FROM kegg WHERE _id = ?", (gid,))}
        return out

    def annotation_matrix(self, tables: Iterable[str]) -> tuple[list[str], list[str], list[tuple[int, int]]]:
        """(genes, terms, (gene index, term index) pairs) over every annotated human gene."""
        genes: dict[str, int] = {}
        terms: dict[str, int] = {}
        pairs: set[tuple[int, int]] = set()
        for t in tables:
            col = "path_id" if t == "kegg" else "go_id"
            for sym, term in self._rows(f"SELECT g.symbol, a.{col} FROM {t} a JOIN gene_info g USING (_id)"):
                pairs.add((genes.setdefault(sym, len(genes)), terms.setdefault(term, len(terms))))
        return list(genes), list(terms), sorted(pairs)
