# `make test` and `make serve` set themselves up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU build of torch that lies on the dev/CI machines; an unpinned torch pulls a CUDA build.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: setup system-deps chromium test screenshots lint serve demo-model bench-train docs clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -e ".[serve,export,dev]" "$(TORCH)"
	touch $(STAMP)

setup: $(STAMP)

test: setup system-deps chromium
	$(PY) -m pytest -q

# Debian's Chromium for the web console's browser tests (Playwright drives /usr/bin/chromium; no
# `playwright install` download). Root installs it; elsewhere `sudo make chromium`.
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# redis-server, docker-compose and promtool for the Redis and deploy tests (apt-get when root and missing).
system-deps:
	@bash scripts/system-deps.sh

# The bundled demo model on 127.0.0.1:8000 (exported to models/repository/ on first start).
serve: setup
	$(VENV)/bin/lawm serve

lint: setup
	$(VENV)/bin/ruff check training exporters service tests

# The README's console screenshots, taken by the browser tests (a plain `make test` leaves docs/img alone).
screenshots: setup chromium
	LAWM_UPDATE_SCREENSHOTS=1 $(PY) -m pytest -q tests/e2e/test_console.py

# Rebuilds models/demo/ from this repo (about 50 min on 2 CPU cores; recipe in configs/demo.yaml and training/bundle.py).
demo-model: setup
	$(VENV)/bin/lawm build-demo --out models/demo

bench-train: setup
	$(VENV)/bin/lawm bench train --config demo --json docs/benchmarks/train.json

clean:
	rm -rf $(VENV) runs .pytest_cache

docs: setup
	$(VENV)/bin/lawm docs
