# The commands the README documents: `make setup`, `make demo` and `make test`.
PY := .venv/bin/python

.PHONY: setup demo test lint crds bench
setup:
	bash hack/setup.sh

# The main job on this machine: a local cluster upgraded, configured and rolled back.
demo:
	.venv/bin/kubeos-sim demo

# The second line is the whole vm tier: real boots under qemu (about 10 min under TCG here with
# the image cache, 11-12 min without; it skips without root or qemu). docs/vm-tests.md.
test: lint
	$(PY) -m pytest
	$(PY) -m pytest -m vm -s

lint:
	.venv/bin/ruff check src tests hack
	.venv/bin/mypy
	.venv/bin/lint-imports

crds:
	$(PY) -m kubeos.api.crd write config/crd/bases

bench:
	$(PY) -m pytest -m bench -s

# Release artifacts (wheels, os-operator/os-proxy/admin-container OCI archives) into out/release;
# needs root (mmdebstrap), no Docker daemon. docs/release.md. out/ keeps itself out of git.
release:
	mkdir -p out && printf '*\n' > out/.gitignore
	.venv/bin/kbimg release --output out/release
