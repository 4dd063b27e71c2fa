# The two set-up commands of the README: `make run` and `make test`.
# Both create or refresh .venv/ idempotently: pip re-runs only when pyproject.toml changes.
# The interpreter for a new .venv: PYTHON=... if given, else the newest supported one that runs
# (python3.13, python3.12, python3.11 on PATH; pyenv shims of versions not enabled exist but fail).
SUPPORTED_PYTHONS := 3.13 3.12 3.11
PYTHON ?= $(firstword $(foreach version,$(SUPPORTED_PYTHONS),$(shell python$(version) -c 'import sys; print(sys.executable)' 2>/dev/null)))
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test check venv bench installer

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || test -n "$(PYTHON)" || { echo "No Python 3.11, 3.12 or 3.13 found on PATH; install one (with its venv module) or run make PYTHON=/path/to/python3.x" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q torch==2.14.1 torchvision==0.29.1 -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/sembridge-studio

test: $(STAMP)
	$(MAKE) check

# What `make test` checks, on an existing environment (PY= another interpreter, e.g. in a worktree):
# the import contracts (engine never imports Qt; engine layers), ruff, then the test suite. The app
# tests run under a real X server when one can be had, else offscreen (tools/xserver.py).
check:
	$(dir $(PY))lint-imports --no-cache
	$(PY) -m ruff check --quiet
	$(PY) -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) tests/benchmarks/speed.py

# Installers (installers/README.md): PyInstaller folders of the app (CPU torch) and of the torch-free
# labeller, built from their own venvs under INSTALLER_DIR; not part of `make test`.
INSTALLER_DIR ?= build/installer
INSTALLER_VARIANTS ?= cpu,label
installer: $(STAMP)
	$(PY) installers/build.py --build-dir $(INSTALLER_DIR) --variants $(INSTALLER_VARIANTS) --python "$$($(PY) -c 'import sys; print(sys._base_executable)')"
