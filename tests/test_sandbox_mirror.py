"""The sandbox image's Debian mirror comes from the option, the environment or the host's apt
sources: never from a host written into the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harmonycell.sandbox.mirror import ENV, debian_mirror
from harmonycell.tools.errors import SandboxError

DEB822 = """Types: deb
URIs: http://mirror.example.org/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: http://mirror.example.org/debian/
Suites: bookworm bookworm-updates
Components: main
"""


def apt(tmp_path: Path, sources_list: str = "", **files: str) -> Path:
    (tmp_path / "sources.list.d").mkdir(parents=True)
    (tmp_path / "sources.list").write_text(sources_list)
    for name, text in files.items():
        (tmp_path / "sources.list.d" / name.replace("_", ".")).write_text(text)
    return tmp_path


def test_mirror_from_deb822_sources_skips_security(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    url, origin = debian_mirror("bookworm", apt_dir=apt(tmp_path, debian_sources=DEB822))
    assert url == "http://mirror.example.org/debian" and origin.endswith("debian.sources")


def test_mirror_from_one_line_sources_with_options(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    d = apt(tmp_path, "# a comment\ndeb [arch=amd64 signed-by=/k.gpg] http://proxy.local:3142/debian bookworm main\n")
    assert debian_mirror("bookworm", apt_dir=d)[0] == "http://proxy.local:3142/debian"


def test_option_then_environment_win_over_apt_sources(tmp_path, monkeypatch):
    d = apt(tmp_path, debian_sources=DEB822)
    monkeypatch.setenv(ENV, "http://env.example/debian")
    assert debian_mirror("bookworm", apt_dir=d) == ("http://env.example/debian", ENV)
    assert debian_mirror("bookworm", "http://opt.example/debian", apt_dir=d)[0] == "http://opt.example/debian"


def test_no_mirror_known_says_how_to_name_one(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    d = apt(tmp_path, "deb http://archive.example.net/ubuntu jammy main\n")  # another suite, not a Debian archive
    with pytest.raises(SandboxError, match=f"--mirror URL.*{ENV}"):
        debian_mirror("bookworm", apt_dir=d)


def test_no_host_written_into_the_sandbox_code():
    """A mirror comes from the option, the environment or apt: no URL of any host in the code."""
    url = re.compile(r"[a-z][a-z0-9+.-]*://[A-Za-z0-9]")
    root = Path(__file__).resolve().parents[1] / "sandbox"
    files = [f for f in root.rglob("*") if f.is_file() and f.suffix in (".py", ".sh", "")]
    assert files
    for f in files:
        assert not url.search(f.read_text(errors="replace")), f
