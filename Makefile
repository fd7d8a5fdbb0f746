# `make demo`: install and run the gateway in front of the demo upstream (SQLite, demo user).
# `make test`: install and run the whole test suite (the browser tests need Debian's chromium
# and npm; .ci/run installs chromium).  `make lint`: ruff + mypy.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps 'httpbin==0.10.4'
	touch $(STAMP)

# axios from npm, for the classic-client browser test.
tests/system/browser/node_modules/.package-lock.json: tests/system/browser/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/system/browser --no-audit --no-fund --silent; \
	else echo "npm not found: the classic-client browser test will be skipped"; fi

demo: $(STAMP)
	$(BIN)/gateway demo

test: $(STAMP) tests/system/browser/node_modules/.package-lock.json
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) gateway.db gateway.db-wal gateway.db-shm
