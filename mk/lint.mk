# Lint (issue 10): ruff (lint + format check) over the repo and mypy over the package, with the
# settings in pyproject.toml. .ci/run runs `make lint` before `make test`; `make format` rewrites.

.PHONY: lint format

## lint: ruff check, ruff format --check, mypy edgeservers/
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## format: apply ruff's fixes and formatting
format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
