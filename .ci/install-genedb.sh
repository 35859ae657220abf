#!/usr/bin/env bash
# Install offline gene knowledge: Bioconductor's org.Hs.eg.db SQLite file, taken from Debian's
# r-bioc-org.hs.eg.db package with `apt-get download` + `dpkg -x` (no R needed), into the user's
# data folder (or $HARMONYCELL_GENE_DB). Never committed, never fetched at run time. Where apt
# cannot be used, says so and goes on: HarmonyCell then falls back to data-only gene features.
set -euo pipefail
pkg=r-bioc-org.hs.eg.db
target=${HARMONYCELL_GENE_DB:-${XDG_DATA_HOME:-$HOME/.local/share}/harmonycell/genes/org.Hs.eg.sqlite}
dir=$(dirname "$target")
if [ -s "$target" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg >/dev/null 2>&1; then
  echo "[install-genedb] apt-get/dpkg are missing: gene knowledge not installed ($pkg);" \
       "runs use data-only gene features" >&2
  exit 0
fi
if [ -z "$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}' | grep -v none)" ]; then
  [ "$(id -u)" -eq 0 ] && apt-get update -q >/dev/null
fi
mkdir -p "$dir"
work=$(mktemp -d "$dir/.install.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "[install-genedb] downloading $pkg (about 37 MB)"
(cd "$work" && apt-get download -q "$pkg" >/dev/null 2>&1) || {
  echo "[install-genedb] could not download $pkg: gene knowledge not installed;" \
       "runs use data-only gene features" >&2
  exit 0
}
deb=$(ls "$work"/*.deb)
version=$(dpkg-deb -f "$deb" Version)
dpkg -x "$deb" "$work/x"
db=$(find "$work/x" -name org.Hs.eg.sqlite | head -1)
[ -n "$db" ] || { echo "[install-genedb] $pkg $version holds no org.Hs.eg.sqlite" >&2; exit 1; }
printf '{"package": "%s", "package_version": "%s"}\n' "$pkg" "$version" >"$work/VERSION.json"
chmod 0444 "$db"
# the version file first, then the database by rename: a reader sees no database or a whole one
mv "$work/VERSION.json" "$dir/VERSION.json"
mv "$db" "$target"
echo "[install-genedb] installed $pkg $version at $target"
