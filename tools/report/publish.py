"""Write the HTML pages: a run's report.html, and a page comparing runs."""

from __future__ import annotations

from pathlib import Path

from harmonycell.tools.record import atomic
from harmonycell.tools.report.html import render_compare, render_html
from harmonycell.tools.report.rundata import load_run

REPORT_HTML = "report.html"


def write_report_html(run_root: Path) -> Path:
    """(Re)generate ``run_root/report.html`` from the run folder alone."""
    out = Path(run_root) / REPORT_HTML
    atomic.write_text(out, render_html(load_run(run_root)))
    return out


def write_compare_html(run_roots: list[Path], out: Path) -> Path:
    atomic.write_text(Path(out), render_compare([load_run(r) for r in run_roots]))
    return Path(out)
