# Two commands that work on a fresh clone (each sets up .venv first):
#   make demo   - train on the embedded default (cpu-demo without a GPU)
#   make test   - the whole test suite, offline, on CPU; installs Debian's Chromium through
#                 apt-get when run as root (scripts/setup-browser.sh), for the app's browser test
#   make test-fast - the same without the browser test (installs nothing system-wide)
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo smoke test test-fast bench clean

setup:
	bash scripts/setup.sh

demo: setup
	$(PY) -m kit.train

smoke: setup
	$(PY) -m kit.train --config smoke output_dir=runs/smoke-$$(date +%s)

test: setup
	bash scripts/setup-browser.sh
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not browser"

clean:
	rm -rf runs .pytest_cache
