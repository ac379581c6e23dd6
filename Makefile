# The two commands a new user needs: `make demo` and `make test`.
# Everything they need is installed here (Python packages in .venv, Debian packages via apt).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT    := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get
SAMPLE := 2014-10-clusterpolisee-03
OUT    := out

.PHONY: help install install-test system-deps lint test demo bench clean

help:
	@echo "make demo   - install into .venv and run the sample issue end to end"
	@echo "make test   - install test dependencies, run ruff, mypy and pytest"
	@echo "make bench  - benchmarks (figures and ratios, not pass/fail)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# Debian packages the tests drive for real: Chromium (browser tests; Playwright uses
# /usr/bin/chromium, it never downloads a browser) and fonts with Romanian glyphs.
system-deps:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  echo "Installing Debian chromium for browser tests..."; \
	  $(APT) update -qq && $(APT) install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; \
	fi

lint: install-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: install-test system-deps lint
	$(BIN)/pytest

demo: install
	@mkdir -p $(OUT)
	$(BIN)/bulletin check $(SAMPLE)
	$(BIN)/bulletin render $(SAMPLE) -o $(OUT)/$(SAMPLE).html --eml $(OUT)/$(SAMPLE).eml
	@echo
	@echo "Rendered: $(OUT)/$(SAMPLE).html, $(OUT)/$(SAMPLE).txt, $(OUT)/$(SAMPLE).eml"
	@echo "Preview it live in your browser:  $(BIN)/bulletin preview $(SAMPLE)"

# Official MJML (npm, pinned by bench/package-lock.json) is only for comparison: installed into
# bench/node_modules the first time. Without npm the bench still prints bulletin's own figures.
bench: install-test
	@if [ ! -f bench/node_modules/mjml/package.json ]; then \
	  if command -v npm >/dev/null 2>&1; then \
	    echo "Installing official MJML into bench/node_modules..."; \
	    npm ci --prefix bench --no-audit --no-fund --loglevel=error; \
	  else \
	    echo "npm not found: skipping the official MJML comparison (apt-get install npm)"; \
	  fi; \
	fi
	$(BIN)/python bench/render.py
	$(BIN)/python bench/import.py

clean:
	rm -rf $(OUT) .pytest_cache .mypy_cache .ruff_cache
