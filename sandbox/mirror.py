"""Which Debian mirror builds the sandbox's base image: never a host written into the code.

In order: the ``--mirror`` option, the ``HARMONYCELL_DEBIAN_MIRROR`` environment variable, then
the host's own apt sources (``/etc/apt/sources.list``, ``sources.list.d/*.list`` one-line
entries and ``*.sources`` deb822 stanzas), so a machine behind a mirror or proxy builds through
it. An entry counts when it carries the image's suite or its URI is a ``.../debian`` archive.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from harmonycell.tools.errors import SandboxError

ENV = "HARMONYCELL_DEBIAN_MIRROR"
APT_DIR = Path("/etc/apt")


@dataclass(frozen=True)
class Source:
    uri: str
    suites: tuple[str, ...]
    origin: str  # the file it came from


def one_line_sources(text: str, origin: str) -> list[Source]:
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        line = re.sub(r"\[[^\]]*\]", " ", line)  # [arch=amd64 signed-by=...] options
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "deb":
            out.append(Source(parts[1], (parts[2],), origin))
    return out


def deb822_sources(text: str, origin: str) -> list[Source]:
    out = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            k, v = line.split(":", 1)
            fields[k.strip().lower()] = v.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            out.append(Source(uri, tuple(fields.get("suites", "").split()), origin))
    return out


def host_sources(apt_dir: Path = APT_DIR) -> list[Source]:
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]
    out: list[Source] = []
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        if f.name.endswith(".list"):
            out += one_line_sources(text, str(f))
        elif f.name.endswith(".sources"):
            out += deb822_sources(text, str(f))
    return out


def pick(sources: list[Source], suite: str) -> Source | None:
    """The main archive of ``suite``, else any ``.../debian`` archive (security/updates skipped)."""
    for s in sources:
        if suite in s.suites:
            return s
    for s in sources:
        if s.uri.rstrip("/").endswith("/debian") and not any(x.endswith(("-security", "-updates")) for x in s.suites):
            return s
    return None


def debian_mirror(suite: str, explicit: str | None = None, apt_dir: Path = APT_DIR) -> tuple[str, str]:
    """(mirror URL, where it came from), or a SandboxError saying how to name one."""
    if explicit:
        return explicit, "--mirror"
    if os.environ.get(ENV):
        return os.environ[ENV], ENV
    found = pick(host_sources(apt_dir), suite)
    if found is not None:
        return found.uri.rstrip("/"), found.origin
    raise SandboxError(f"no Debian mirror for {suite} is known on this host (none in {apt_dir})",
                       where="sandbox build",
                       fix=f"pass --mirror URL (a Debian archive, e.g. your site's mirror) or set {ENV}, "
                           "or pass --base IMAGE")
