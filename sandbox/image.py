"""Build the sandbox image with no registry.

Base: a local image the user names, or a Debian bookworm made with ``debootstrap`` and
``docker import``-ed (only when absent). Python packages: torch and numpy at the host's
versions, from a wheelhouse filled on the host (so the docker and local backends compute the
same numbers). The image is labelled with a hash of everything it is built from; a build whose
inputs did not change does nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

from harmonycell.sandbox import engine
from harmonycell.sandbox.mirror import debian_mirror
from harmonycell.tools.errors import SandboxError

IMAGE_DIR = Path(__file__).with_name("image")
PACKAGES = ("torch", "numpy")
DEBIAN_SUITE = "bookworm"  # its python3 is 3.11, matching the cp311 wheels

Log = Callable[[str], None]


def wheelhouse_dir() -> Path:
    env = os.environ.get("HARMONYCELL_WHEELHOUSE")
    return Path(env) if env else Path.home() / ".cache" / "harmonycell" / "wheelhouse"


def pinned_requirements() -> list[str]:
    """The host's own versions: the same torch/numpy inside and outside the container."""
    reqs = []
    for pkg in PACKAGES:
        try:
            reqs.append(f"{pkg}=={metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            raise SandboxError(f"{pkg} is not installed on the host", where="sandbox build",
                               fix=f"install {pkg} first; the image pins the host's version") from None
    return reqs


def fill_wheelhouse(folder: Path, reqs: list[str], log: Log) -> list[Path]:
    """Download cp311 manylinux wheels for ``reqs`` (and their dependencies, and pip itself)
    into ``folder`` unless a previous fill for the same requirements completed."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / ".complete"
    wanted = "\n".join(reqs + ["pip"]) + "\n"
    if not (stamp.exists() and stamp.read_text() == wanted):
        log(f"filling the wheelhouse {folder} with {', '.join(reqs)}")
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
               "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
               "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
               "--platform", "manylinux2014_x86_64", "--platform", "any",
               "--dest", str(folder), *reqs, "pip"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SandboxError(
                "pip could not fetch the wheels for the sandbox image: "
                + (proc.stderr.strip().splitlines() or ["(no message)"])[-1],
                where=str(folder),
                fix="make the wheels reachable (a pip index or find-links with the CPU torch wheel), "
                    "or put them into the wheelhouse by hand and set HARMONYCELL_WHEELHOUSE",
            )
        stamp.write_text(wanted)
    return sorted(folder.glob("*.whl"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def inputs_hash(base_id: str, reqs: list[str], wheels: list[Path]) -> str:
    h = hashlib.sha256()
    for f in sorted(IMAGE_DIR.iterdir()):
        if f.is_file():
            h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    h.update(base_id.encode() + b"\0" + "\n".join(reqs).encode() + b"\0")
    for w in wheels:
        h.update(w.name.encode() + b"\0" + _sha256(w).encode() + b"\0")
    return h.hexdigest()[:32]


def debootstrap_base(client, tag: str, mirror: str, log: Log) -> None:
    """Make a minimal Debian with python3 and import it as ``tag``."""
    if shutil.which("debootstrap") is None:
        raise SandboxError("debootstrap is not installed, and no base image was named",
                           fix="`sudo apt-get install debootstrap`, or pass --base IMAGE (a local image with python3)")
    if os.geteuid() != 0:
        raise SandboxError("making the Debian base needs root (debootstrap)",
                           fix="run `sudo harmonycell sandbox build` once, or pass --base IMAGE")
    with tempfile.TemporaryDirectory(prefix="harmonycell-rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        log(f"debootstrap {DEBIAN_SUITE} (minbase + python3) from {mirror}; this takes a few minutes")
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3", DEBIAN_SUITE, str(root), mirror],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            last = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            raise SandboxError("debootstrap failed: " + " | ".join(last), where=mirror,
                               fix="check that the Debian mirror is reachable (--mirror URL), or pass --base IMAGE")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
            p = root / junk
            if p.exists():
                shutil.rmtree(p)
                p.mkdir()
        tarball = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(tarball), "."], check=True)
        repo, _, version = tag.partition(":")
        log(f"importing the base image as {tag}")
        client.api.import_image_from_file(
            str(tarball), repository=repo, tag=version or "latest",
            changes=["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                     "ENV LANG=C.UTF-8", 'CMD ["/bin/sh"]'],
        )


@dataclass
class BuildResult:
    image: str
    image_id: str
    base: str
    inputs_hash: str
    built: bool  # False when the image was already up to date
    seconds: float


def build_image(base: str | None = None, wheelhouse: Path | None = None, image: str | None = None,
                mirror: str | None = None, force: bool = False, log: Log = print) -> BuildResult:
    t0 = time.monotonic()
    client = engine.connect(timeout=600)
    image = image or engine.image_name()
    if base is None:
        base = engine.DEFAULT_BASE
        if engine.find_image(client, base) is None:
            url, origin = debian_mirror(DEBIAN_SUITE, mirror)
            log(f"Debian mirror {url} (from {origin})")
            debootstrap_base(client, base, url, log)
    base_img = engine.find_image(client, base)
    if base_img is None:
        raise SandboxError(f"the base image {base} is not on this engine", where="--base",
                           fix=f"load it first (`docker load -i FILE` or `docker pull {base}` where a registry is reachable)")
    reqs = pinned_requirements()
    wheels = fill_wheelhouse(wheelhouse or wheelhouse_dir(), reqs, log)
    digest = inputs_hash(base_img.id, reqs, wheels)
    current = engine.find_image(client, image)
    if current is not None and current.labels.get(engine.LABEL_INPUTS) == digest and not force:
        log(f"{image} is up to date ({digest[:12]})")
        return BuildResult(image, current.id, base, digest, False, round(time.monotonic() - t0, 1))
    with tempfile.TemporaryDirectory(prefix="harmonycell-build-") as tmp:
        ctx = Path(tmp)
        for f in IMAGE_DIR.iterdir():
            if f.is_file():
                shutil.copy2(f, ctx / f.name)
        (ctx / "wheelhouse").mkdir()
        for w in wheels:
            _link_or_copy(w, ctx / "wheelhouse" / w.name)
        (ctx / "wheelhouse" / "requirements.txt").write_text("\n".join(reqs) + "\n")
        log(f"building {image} from {base} (no network)")
        image_id = None
        for chunk in client.api.build(path=str(ctx), tag=image, buildargs={"BASE": base},
                                      labels={engine.LABEL_INPUTS: digest}, network_mode="none",
                                      pull=False, rm=True, forcerm=True, decode=True, nocache=force):
            if "stream" in chunk and chunk["stream"].strip():
                log(chunk["stream"].rstrip())
            if "error" in chunk:
                raise SandboxError(f"image build failed: {chunk['error'].strip()}", where=str(IMAGE_DIR),
                                   fix="read the build log above; `harmonycell sandbox build --force` rebuilds from scratch")
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
    built = engine.require_image(client, image)
    if current is not None and current.id != built.id:  # the superseded image only costs disk
        try:
            client.images.remove(current.id)
        except Exception:  # still used by a container, or shared with another tag: keep it
            pass
    return BuildResult(image, image_id or built.id, base, digest, True, round(time.monotonic() - t0, 1))


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
