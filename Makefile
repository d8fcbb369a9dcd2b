# The commands the README documents: `make setup`, `make demo` and `make test`.
PY := .venv/bin/python

.PHONY: setup demo test lint crds bench
setup:
	bash hack/setup.sh

# The main job on this machine: a local cluster upgraded, configured and rolled back.
demo:
	.venv/bin/kubeos-sim demo

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
