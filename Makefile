# The two commands a new user needs: `make demo` and `make test`.
# Everything they need is installed here (Python packages in .venv, Debian packages via apt).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT    := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get
SAMPLE := 2014-10-clusterpolisee-03
OUT    := out

.PHONY: help install install-test system-deps lint test demo bench bench-postfix clean

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
# /usr/bin/chromium, it never downloads a browser), fonts with Romanian glyphs, and the
# PostgreSQL server programs (the test session runs its own cluster in a temporary folder;
# the package's own service is not used), and Dovecot's IMAP server (likewise: the IMAP
# tests run a private instance from a configuration in a temporary folder).
# postgresql's and dovecot-core's postinst start their services; in a container
# (no init) or beside another server on port 5432 that start fails, and so would the
# install. A policy-rc.d that says "do not start services" (what Debian's Docker images
# ship) is put in place for the install when there is none, and removed after.
system-deps:
	@pkgs=""; \
	command -v chromium >/dev/null 2>&1 || pkgs="$$pkgs chromium fonts-dejavu-core"; \
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || pkgs="$$pkgs postgresql"; \
	{ command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ]; } || pkgs="$$pkgs dovecot-imapd"; \
	if [ -n "$$pkgs" ]; then \
	  echo "Installing Debian packages for the tests:$$pkgs"; \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    trap '$(SUDO) rm -f /usr/sbin/policy-rc.d' EXIT INT TERM; \
	    printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee /usr/sbin/policy-rc.d >/dev/null; \
	    $(SUDO) chmod 755 /usr/sbin/policy-rc.d; \
	  fi; \
	  $(APT) update -qq && $(APT) install -y -qq --no-install-recommends $$pkgs >/dev/null; \
	fi

lint: install-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# The whole suite on SQLite, then again on PostgreSQL (tests about SQLite itself are skipped).
test: install-test system-deps lint
	$(BIN)/pytest
	$(BIN)/pytest --db=postgresql

# The demo sends for real, into the local capture server (`bulletin sink`, started here and
# stopped at the end): nothing leaves the machine. The ledger lives in subscribers/bulletin.db,
# so running `make demo` again resumes the same send and reports it is already sent; delete
# that file to run the whole send again.
demo: install
	@mkdir -p $(OUT)
	$(BIN)/bulletin check $(SAMPLE)
	$(BIN)/bulletin render $(SAMPLE) -o $(OUT)/$(SAMPLE).html --eml $(OUT)/$(SAMPLE).eml
	@echo
	@echo "Rendered: $(OUT)/$(SAMPLE).html, $(OUT)/$(SAMPLE).txt, $(OUT)/$(SAMPLE).eml"
	@echo
	@echo "Starting the local capture server (bulletin sink) and sending to subscribers/sample.csv..."
	@$(BIN)/bulletin sink > $(OUT)/sink.log 2>&1 & sink=$$!; \
	stop_sink() { kill -TERM $$sink 2>/dev/null && wait $$sink 2>/dev/null; tail -n 1 $(OUT)/sink.log; }; \
	trap stop_sink EXIT; \
	for i in $$(seq 100); do \
	  grep -q "Capturing mail" $(OUT)/sink.log 2>/dev/null && break; \
	  if ! kill -0 $$sink 2>/dev/null; then cat $(OUT)/sink.log; echo "(sending to whatever already listens there)"; break; fi; \
	  sleep 0.1; \
	done; \
	$(BIN)/bulletin subscribers import subscribers/sample.csv --list demo --create-list && \
	$(BIN)/bulletin send $(SAMPLE) --list demo --yes && \
	echo && $(BIN)/bulletin status $(SAMPLE) --list demo && \
	echo "Captured mail, one file per recipient (any mail client opens them): mail/sink/" && \
	echo "The ledger remembers the send: make demo again sends nothing (delete subscribers/bulletin.db to start over)." && \
	echo "Preview the issue live in your browser:  $(BIN)/bulletin preview $(SAMPLE)"

# Official MJML (npm, pinned by bench/package-lock.json) is only for comparison: installed into
# bench/node_modules the first time. Without npm the bench still prints bulletin's own figures.
# bench/scale.py runs several senders on a private PostgreSQL server (system-deps installs it).
bench: install-test bench-postfix system-deps
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
	$(BIN)/python bench/send.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/scale.py

# bench/send.py runs Postfix's smtp-sink and smtp-source (Debian package postfix) on loopback.
# Preseeded "No configuration": no /etc/postfix/main.cf is written, so neither the init script
# nor postfix.service starts the Postfix daemon; the bench only runs the two test programs.
# --no-remove: postfix replaces another MTA (exim4...); rather than remove it, skip those runs.
bench-postfix:
	@if [ ! -x /usr/sbin/smtp-sink ] || [ ! -x /usr/sbin/smtp-source ]; then \
	  echo "Installing Debian postfix for smtp-sink and smtp-source (the daemon stays off)..."; \
	  { echo "postfix postfix/main_mailer_type select No configuration" \
	      | $(SUDO) debconf-set-selections && \
	    { $(APT) update -qq || true; } && \
	    $(APT) install -y -qq \
	      --no-install-recommends --no-remove postfix >/dev/null; } || \
	  echo "Could not install postfix: bench/send.py will skip its SMTP runs."; \
	fi

clean:
	rm -rf $(OUT) .pytest_cache .mypy_cache .ruff_cache
