VENV := .venv
PYTHON := $(VENV)/bin/python
INSTALL_STAMP := $(VENV)/.install.stamp
SERVER_CONFIG := config/kinto.ini
LOCAL_SECRET := .kinto-local-secret

.DEFAULT_GOAL := help
.PHONY: help install run test lint format functional remote-settings bench clean

help:
	@echo "make run         start Kinto with kinto_emailer on http://127.0.0.1:8888 (memory storage)"
	@echo "make test        run the whole test suite (lint, unit, plugin and functional tests)"
	@echo "make lint        check the code with ruff"
	@echo "make functional  run the functional tests against a Kinto server they start"
	@echo "make remote-settings  run Mozilla Remote Settings' own tests with this plugin"
	@echo "make bench       run the benchmarks and print their ratios (ROWS=\"flood ...\": some)"

$(PYTHON):
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip

$(INSTALL_STAMP): $(PYTHON) setup.cfg pyproject.toml
	$(PYTHON) -m pip install --quiet -e ".[test]"
	touch $(INSTALL_STAMP)

install: $(INSTALL_STAMP)

# A random secret of this checkout, made once (git-ignored), given through the
# environment: no shipped file holds one that anyone could read. ("local-" keeps Kinto
# from reading it as a JSON number.)
$(LOCAL_SECRET):
	umask 077 && python3 -c "import secrets; print('local-' + secrets.token_hex(32))" > $@

run: $(INSTALL_STAMP) $(LOCAL_SECRET)
	KINTO_USERID_HMAC_SECRET="$$(cat $(LOCAL_SECRET))" $(VENV)/bin/kinto start --ini $(SERVER_CONFIG)

lint: $(INSTALL_STAMP)
	$(VENV)/bin/ruff check kinto_emailer tests functional benchmarks
	$(VENV)/bin/ruff format --check kinto_emailer tests functional benchmarks

format: $(INSTALL_STAMP)
	$(VENV)/bin/ruff check --fix kinto_emailer tests functional benchmarks
	$(VENV)/bin/ruff format kinto_emailer tests functional benchmarks

test: lint
	$(PYTHON) -m pytest tests functional

functional: $(INSTALL_STAMP)
	$(PYTHON) -m pytest functional

# Also part of `make test` (under functional/).
remote-settings: $(INSTALL_STAMP)
	$(PYTHON) -m pytest functional/remote_settings

# procrastinate only serves as a point of comparison. ROWS="flood writers" runs only those
# groups of rows (python benchmarks/run.py --help lists them).
bench: $(INSTALL_STAMP)
	$(PYTHON) -m pip install --quiet -e ".[test,bench]"
	$(PYTHON) benchmarks/run.py $(ROWS)

clean:
	rm -rf $(VENV) mail .pytest_cache *.egg-info
