# The two commands the README documents: `make setup` and `make test`.
PY := .venv/bin/python

.PHONY: setup test lint crds bench
setup:
	bash hack/setup.sh

test: lint
	$(PY) -m pytest

lint:
	.venv/bin/ruff check src tests hack
	.venv/bin/mypy
	.venv/bin/lint-imports

crds:
	$(PY) -m kubeos.api.crd write config/crd/bases

bench:
	$(PY) -m pytest -m bench -s
