# Two commands for a newcomer: `make demo` (runs the whole pipeline on synthetic data) and
# `make test` (everything CI runs: installs, starts a Docker engine and installs Chromium for the
# report's browser test, builds the sandbox image,
# runs the test suite, stops the engine). Both install what they need first.

PYTHON ?= python3
PIP := $(PYTHON) -m pip
OUT ?= runs

.PHONY: setup demo test test-fast sandbox-image clean

setup:
	# bubblewrap: the sandbox's wall without a Docker engine (apt, when root; else a note)
	bash .ci/install-bwrap.sh
	# gene knowledge (org.Hs.eg.db) into the user's data folder; absent: data-only gene features
	bash .ci/install-genedb.sh
	# the pinned CPU build first, so the project's torch range never pulls CUDA packages
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[test,mlflow]"

demo: setup
	$(PYTHON) -m harmonycell.agents.cli demo --out $(OUT)

sandbox-image: setup
	$(PYTHON) -m harmonycell.agents.cli sandbox build

test: setup
	bash .ci/with-chromium.sh bash .ci/with-docker.sh sh -c '$(PYTHON) -m harmonycell.agents.cli sandbox build && $(PYTHON) -m pytest'

test-fast: setup
	$(PYTHON) -m pytest -m "not docker and not slow"

clean:
	rm -rf build *.egg-info .pytest_cache
