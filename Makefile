# `make demo`: install the gateway alone (no development tools) and run it in front of the demo
# upstream (SQLite, demo user).  `make test`: add the development tools and run the whole test
# suite (the browser tests need Debian's chromium and npm; .ci/run installs chromium).
# `make lint`: ruff + mypy.  Both share one ./.venv: `make test` after `make demo` only adds.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev

.PHONY: demo test lint clean

# What the gateway needs to run, and nothing else (what the Dockerfile installs too).
$(RUNTIME): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME)

# The test and lint tools on top.
$(DEV): $(RUNTIME) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps 'httpbin==0.10.4'
	touch $(DEV)

# axios from npm, for the classic-client browser test.
tests/system/browser/node_modules/.package-lock.json: tests/system/browser/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/system/browser --no-audit --no-fund --silent; \
	else echo "npm not found: the classic-client browser test will be skipped"; fi

demo: $(RUNTIME)
	$(BIN)/gateway demo

test: $(DEV) tests/system/browser/node_modules/.package-lock.json
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) gateway.db gateway.db-wal gateway.db-shm
