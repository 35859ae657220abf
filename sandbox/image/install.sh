#!/bin/sh
# Install the pinned packages from the wheelhouse unless the base image already has them
# (a CUDA PyTorch base keeps its own torch). pip itself runs from its wheel: the Debian base
# has no pip and there is no network to fetch one.
set -eu
mkdir -p /opt/harmonycell/site
if ! command -v python3 >/dev/null 2>&1; then
    echo "the base image has no python3: choose a base with Python 3.11 or omit --base" >&2
    exit 3
fi
if python3 -c "import torch, numpy" 2>/dev/null; then
    echo "base image already provides torch and numpy; installing nothing"
    exit 0
fi
PIP=$(ls /wheelhouse/pip-*.whl | head -n 1)
python3 "$PIP/pip" install --no-index --find-links /wheelhouse --no-cache-dir \
    --disable-pip-version-check --root-user-action=ignore --target /opt/harmonycell/site -r /wheelhouse/requirements.txt
