# Vamp — the two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: run run-gateway test lint compile uncompile bench bench-loadtest install install-test system-deps clean

# pip installs only when pyproject.toml changed since the last install (the stamp files in the venv).
# setuptools says "Editable installation ... folders with the same name" on every editable install; that
# note alone is silenced.
PIP_INSTALL := PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install -q

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Both install the load tester's extra, for `vamp loadtest` (the test extra includes it; [ is quoted for the shell).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e .'[loadtest]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# Debian packages the tests and benchmarks compare against (HAProxy, nginx, wrk), the Prometheus the canary's
# `provider: prometheus` checks are tested against, and the chromium the web UI's browser tests drive (tests/ui/).
system-deps:
	@if ! command -v haproxy >/dev/null || ! command -v nginx >/dev/null || ! command -v wrk >/dev/null \
			|| ! command -v prometheus >/dev/null || ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null \
			|| ! command -v openssl >/dev/null || ! command -v ip >/dev/null || ! test -x /usr/bin/chromium; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy nginx wrk prometheus \
			etcd-server etcd-client iproute2 openssl chromium; \
	fi

# The embedded platform: control plane API on 127.0.0.1:8080, gateway, local processes; state in .vamp/
run: install
	$(BIN)/vamp run

# The gateway alone with examples/gateways.yaml (gateway on 127.0.0.1:8000, admin API on 127.0.0.1:9090) in front
# of two demo backends; it runs next to `make run` (8080) without a clash.
run-gateway: install
	$(BIN)/python -m gateway.demo

# The suite in PYTEST_WORKERS processes (pytest-xdist; PYTEST_WORKERS=0 runs it in this one), the tests handed
# out one by one. (Not by file, `--dist loadfile`: it keys tests by id, and schemathesis' generated cases share
# one, so all but one of them would be lost.) PYTEST_ARGS adds to pytest's arguments.
PYTEST_WORKERS ?= 2
test: install-test system-deps
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# ruff over the whole tree, then mypy over the installed code (strict for gateway/); settings in pyproject.toml.
lint: install-test
	$(BIN)/ruff check .
	$(BIN)/mypy gateway control loadtest

# The optional compiled hot path (mypyc, in place; docs/hot-path.md): `make compile`, and `make uncompile` to
# go back to the Python source (an edited source also runs as source until the next `make compile`).
compile: install-test
	$(BIN)/python -m gateway.compile build

uncompile:
	$(BIN)/python -m gateway.compile clean

# HAProxy, nginx and the gateway side by side under wrk; e.g. `make bench BENCH_ARGS="--duration 5 --only haproxy,gateway"`.
# The gateway runs compiled when it can be built (the "gateway hot path" line says which ran); VAMP_PURE=1 measures
# the Python source.
bench: install-test system-deps
	-$(BIN)/python -m gateway.compile build
	$(BIN)/python benchmarks/proxy.py $(BENCH_ARGS)

# `vamp loadtest` against wrk on one core, against nginx; e.g. `make bench-loadtest BENCH_ARGS="--rounds 5"`.
bench-loadtest: install system-deps
	$(BIN)/python benchmarks/loadtest_vs_wrk.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .vamp build *.egg-info .mypy_cache gateway/compiled.json gateway/hotpath__mypyc.*.so \
		gateway/proxy/*.so gateway/routing/*.so
