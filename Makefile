# The two commands of the README, and the install step they share. The install runs once and again
# only when pyproject.toml changes (the stamp file records it), so both commands are idempotent.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
STAMP  := $(VENV)/.lepton-installed

.PHONY: demo test install system clean-state

demo: $(STAMP)  ## install (first time) and run the full migration on the bundled demo
	$(VENV)/bin/lepton run

test: $(STAMP) system  ## install (first time) and run the test suite
	$(VENV)/bin/python -m pytest

system:  ## Debian packages the end-to-end tests use (Chromium for the UI test, PostgreSQL for the scaled server), installed with apt-get as root when missing
	@missing=""; \
	command -v chromium >/dev/null || missing="chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	    if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	    else \
	        echo "not installed:$$missing (apt-get install$$missing): the tests that need them are skipped"; \
	    fi; \
	fi

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "lepton needs Python 3.11 or newer, found " + sys.version.split()[0])'
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

clean-state:  ## stop the embedded store and delete the state folder (.lepton)
	-$(VENV)/bin/lepton store down
	rm -rf .lepton
