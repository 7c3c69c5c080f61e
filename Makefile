# swarmshift: the README's commands. `make test` is what CI runs.
SHELL := /bin/sh
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: venv lab cluster cluster-down test test-unit test-lab test-cluster lint demo demo-down clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  echo "make: installing python3-venv"; apt-get update -q >/dev/null; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv python3-pip >/dev/null; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

lab: venv
	sh lab/up.sh
	sh lab/go-images.sh
	sh lab/swarmshift-image.sh $(BIN)/pip
	sh lab/stack-images.sh

# A real three-node Swarm beside the single-node lab (lab/cluster.sh): three engines in network
# namespaces of their own, joined as managers, pulling the lab's images from a local registry.
cluster: lab
	sh lab/cluster.sh

cluster-down:
	sh lab/cluster.sh down

# The lab tests run in concurrent sessions: the heavy ones (sustained load, CPU burn, time
# bounds) one at a time, the rest beside them; the unit tests' fuzzing runs beside them too, at
# the lowest CPU priority (tests/support/lanes.py).
# The unit tests need no Docker: they run while `make cluster` (and the `make lab` it needs)
# brings the lab up, mostly waiting on image builds; its output follows theirs.
test: venv
	$(BIN)/ruff check .
	@$(MAKE) --no-print-directory cluster >.lab-setup.log 2>&1 & setup=$$!; \
	  $(BIN)/pytest -m "unit and not fuzz" $(PYTEST_ARGS); unit=$$?; \
	  wait $$setup; lab=$$?; cat .lab-setup.log; \
	  [ $$lab -eq 0 ] || echo "make test: make cluster failed (exit $$lab): the lab is not up" >&2; \
	  [ $$unit -eq 0 ] && [ $$lab -eq 0 ]
	SWARMSHIFT_FUZZ_LANE=1 SWARMSHIFT_CLUSTER_LANE=1 $(BIN)/python -m tests.support.lanes $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/pytest -m unit $(PYTEST_ARGS)

test-lab: lab venv
	$(BIN)/python -m tests.support.lanes $(PYTEST_ARGS)

test-cluster: cluster venv
	$(BIN)/pytest -m cluster $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .

demo: lab venv
	PYTHONPATH=. $(BIN)/python lab/demo.py

demo-down: venv
	PYTHONPATH=. $(BIN)/python lab/demo.py --down

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .lab-setup.log
