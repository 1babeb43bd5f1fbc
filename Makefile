# Shortcuts for the commands in README.md and CONTRIBUTING.md.
PY ?= python
NB ?=

.PHONY: install test test-fast lint notebook book

install:
	$(PY) -m pip install -r requirements.txt -e .

test:
	$(PY) -m pytest

test-fast:
	$(PY) -m pytest -m "not engine"

lint:
	ruff check .

notebook:
	@test -n "$(NB)" || { echo "usage: make notebook NB=07_advanced"; exit 2; }
	$(PY) tools/notebooks.py all $(NB)

book:
	jupyter-book build . -W -n --keep-going
