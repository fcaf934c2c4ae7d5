# The two commands that matter: `make run` and `make test`. See README.md.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: run test sysdeps venv venv-test venv-build lint typecheck sandbox headless bench dist build dist-self-test screenshots faults clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-build: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet -e '.[build]'
	touch $@ $(VENV)/.installed

venv: $(VENV)/.installed
venv-test: $(VENV)/.installed-test
venv-build: $(VENV)/.installed-build

## System libraries Qt, neonize (libmagic, ffmpeg), the Secret Service test and PostgreSQL need.
## Installed with apt-get only when missing and apt-get is usable; otherwise a hint is printed.
sysdeps:
	@scripts/install-system-deps.sh

## Set up and start the app (sandbox mode when no HighLevel credentials are configured).
run: sysdeps venv
	$(VENV)/bin/ghl-desktop

## Set up and run the whole test suite headless (PostgreSQL, Secret Service and Xvfb started for it).
test: sysdeps venv-test
	@scripts/run-tests.sh $(VENV)

## Benchmarks: each script prints a table and appends a JSON line to bench/results/<name>.jsonl.
## `make bench` is sized for under 10 minutes on 2 cores; `make bench QUICK=1` is CI-sized.
bench: venv-test
	QT_QPA_PLATFORM=offscreen $(PY) bench/bridge_throughput.py $(if $(QUICK),--quick)
	QT_QPA_PLATFORM=offscreen $(PY) bench/bridge_anatomy.py $(if $(QUICK),--messages 200 --no-record)
	@if [ -f bench/queue_lease.py ]; then $(PY) bench/queue_lease.py $(if $(QUICK),--quick); fi
	$(PY) bench/relay_load.py $(if $(QUICK),--quick)
	QT_QPA_PLATFORM=offscreen $(PY) bench/message_log.py $(if $(QUICK),--sizes 1000 20000 --no-record)
	$(PY) -m bench.second_launch $(if $(QUICK),--rounds 1)
	QT_QPA_PLATFORM=offscreen $(PY) -m bench.bench_shutdown $(if $(QUICK),--rounds 1 --tasks 10)
	$(PY) bench/budget.py $(if $(QUICK),--quick)
	QT_QPA_PLATFORM=offscreen $(PY) bench/loop_lag.py $(if $(QUICK),--quick)
	$(PY) bench/startup.py $(if $(QUICK),--quick)
	$(PY) bench/cluster_workers.py $(if $(QUICK),--quick)

lint: venv-test
	$(VENV)/bin/ruff check ghl_desktop tests bench
	$(VENV)/bin/lint-imports

typecheck: venv-test
	$(VENV)/bin/mypy

sandbox: venv
	$(VENV)/bin/ghl-desktop sandbox

headless: venv
	$(VENV)/bin/ghl-desktop headless --sandbox

## The double-click bundle for this OS (PyInstaller, build.spec): dist/ghl-desktop/ and, on Linux,
## dist/ghl-desktop-<version>-linux-<arch>.tar.gz; on macOS dist/ghl-desktop.app. Prints its size.
dist: sysdeps venv-build
	$(VENV)/bin/pyinstaller --noconfirm --clean --log-level WARN build.spec

build: dist

## The built bundle's self-test from a folder outside the tree with a clean environment (CI runs it).
dist-self-test:
	@scripts/dist-self-test.sh

## Every screen of the app into docs/screenshots/ (under Xvfb when installed; see scripts/screenshots.py).
screenshots: sysdeps venv-test
	$(PY) scripts/screenshots.py

## The fault suite (faults/run.py): SIGKILLs, HighLevel 5xx/latency, a 429 storm, token expiry, relay
## restarts, a full disk; prints one table and fails on any lost or duplicated message. QUICK=1: CI size.
faults: sysdeps venv-test
	QT_QPA_PLATFORM=offscreen $(PY) -m faults.run $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
