# Every target sets up its own virtualenv from the pinned requirements: nothing to install by hand.
# Python 3.11 or newer is needed; another interpreter: `make test PYTHON=python3.12`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MIN_PYTHON := 3.11
# major.minor of $(PYTHON) (empty when it does not run): part of the stamp, so switching
# interpreters rebuilds the venv instead of reusing one made by another Python.
PYTHON_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
STAMP := $(VENV)/.installed-py$(PYTHON_VERSION)-$(shell sha1sum requirements.txt | cut -c1-12)

# make reports any failed command as its own exit status 2. Targets that run a program print
# the program's real exit status on failure (for `python -m deploy`, 2 means "changes pending"
# and 3 "configuration error"): `$(call run,<command>)`. Scripts that branch on the code run
# the command itself, e.g. `.venv/bin/python -m deploy plan`.
run = echo '$(strip $(1))' && $(1) || { \
  status=$$?; echo "make: '$(strip $(1))' exited $$status" >&2; exit $$status; }

.PHONY: venv test lint demo stacks bench plan clean

# pip brings an existing venv in line with the pins, so a changed requirements.txt never needs a
# wipe; a venv of another Python version (or whose interpreter is gone) is rebuilt from scratch.
$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "make: Python $(MIN_PYTHON) or newer is needed; '$(PYTHON)' is" \
	    "$(if $(PYTHON_VERSION),Python $(PYTHON_VERSION),not a working Python)." \
	    "Install one and run e.g. 'make $(or $(MAKECMDGOALS),test) PYTHON=python3.11'." >&2; \
	  exit 1; }
	@if [ -e $(VENV) ] && [ "$$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])' \
	    2>/dev/null)" != "$(PYTHON_VERSION)" ]; then \
	  echo "make: $(VENV) was made by another Python; rebuilding it with $(PYTHON_VERSION)"; \
	  rm -rf $(VENV); fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	rm -f $(VENV)/.installed-*
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

venv: $(STAMP)

# ruff; mypy on every package but tests and local tools ([tool.mypy] in pyproject.toml); zizmor
# (offline: no GitHub API) on the example CI workflow.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/zizmor --offline --quiet .github/workflows

# The suite runs in two phases (tests/conftest.py): every test on two pytest-xdist workers, but
# the two modules that check the whole suite's recording of handler API calls (least privilege,
# SDK floor); then those two in one process, reading the recording phase 1 left in $(RECORDING).
# A failure in phase 1 stops there; phase 2 prints the whole suite's count before its own line.
RECORDING := .pytest-iam/recording.json

test: lint
	@rm -rf $(dir $(RECORDING)) && mkdir -p $(dir $(RECORDING))
	@$(call run,IAM_RECORDING_OUT=$(RECORDING) $(PY) -m pytest -n 2)
	@$(call run,IAM_RECORDING_IN=$(RECORDING) $(PY) -m pytest)

demo: venv
	@$(call run,$(PY) -m sandbox $(DEMO_ARGS))

stacks: venv
	@$(call run,$(PY) -m sandbox.stacks $(STACKS))

bench: venv
	@$(call run,$(PY) -m bench $(BENCH_ARGS))

plan: venv
	@$(call run,$(PY) -m deploy plan $(PLAN_ARGS))

clean:
	rm -rf $(VENV) demo-report.json .pytest-iam .pytest_cache .ruff_cache .mypy_cache
