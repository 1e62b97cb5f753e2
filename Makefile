# Every target sets up its own virtualenv from the pinned requirements: nothing to install by hand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum requirements.txt | cut -c1-12)

.PHONY: venv test lint demo stacks bench plan clean

# pip brings an existing venv in line with the pins, so a changed requirements.txt never needs a wipe.
$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	rm -f $(VENV)/.installed-*
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

venv: $(STAMP)

lint: venv
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest

demo: venv
	$(PY) -m sandbox $(DEMO_ARGS)

stacks: venv
	$(PY) -m sandbox.stacks $(STACKS)

bench: venv
	$(PY) -m bench $(BENCH_ARGS)

plan: venv
	$(PY) -m deploy plan

clean:
	rm -rf $(VENV) demo-report.json .pytest_cache .ruff_cache
