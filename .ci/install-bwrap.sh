#!/usr/bin/env bash
# Install bubblewrap (the sandbox's wall where no Docker engine runs) when it is missing.
# Uses apt like .ci/with-docker.sh does for docker.io; where apt cannot be used (not root, not
# Debian), says so and goes on: `auto` then uses Docker, or stops and names both walls.
set -euo pipefail
if command -v bwrap >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[install-bwrap] installing bubblewrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends bubblewrap >/dev/null
else
  echo "[install-bwrap] bubblewrap is missing and cannot be installed here (needs root and apt):" \
       "install the 'bubblewrap' package, or use the docker backend" >&2
fi
