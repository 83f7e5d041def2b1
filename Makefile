# edgeservers: Seldon Core model servers for TensorFlow Lite and OpenVINO on edge nodes.
# `make serve` and `make test` do all their own set-up (a .venv from the pinned requirements).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
REST_PORT ?= 9000
GRPC_PORT ?= 5000
METRICS_PORT ?= 6000
DEMO_MODEL ?= models/mobilenet_v2_quant
POSTPROCESS ?= auto
PARAMS ?=

.PHONY: install serve test help
.DEFAULT_GOAL := install

# Each concern adds its own targets (and prerequisites of `make test` through TEST_DEPS) in mk/*.mk.
TEST_DEPS :=
include $(wildcard mk/*.mk)

## install: .venv from the pinned requirements, with the parameter check of edgeservers/parameter_check.pth
install: $(VENV)/.installed $(VENV)/.parameter-check

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade "pip<25"
	$(VENV)/bin/pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $@

# Bad parameter values stop seldon-core-microservice with one line (edgeservers/parameter_check.py says how).
$(VENV)/.parameter-check: edgeservers/parameter_check.pth | $(VENV)/.installed
	cp $< "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/edgeservers-parameter-check.pth"
	touch $@

## serve: a model on 127.0.0.1 only (REST :$(REST_PORT), gRPC :$(GRPC_PORT), metrics :$(METRICS_PORT)), with the requests
## that fit it; DEMO_MODEL=models/face_mask POSTPROCESS=detection, PARAMS='top_k=3 confidence_threshold=0.8' (any parameter)
serve: install
	$(PY) -m edgeservers.local_serve $(DEMO_MODEL) postprocess=$(POSTPROCESS) $(PARAMS) \
	  --rest-port $(REST_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)

## test: every test, set-up included, and every example of README.md and docs/ (CI runs this through .ci/run)
test: install $(TEST_DEPS)
	$(PY) -m pytest -ra tests

## help: every target with what it does (the `## ` lines above each rule, here and in mk/*.mk)
help:
	@awk '/^## / { block = block substr($$0, 4) "\n"; next } \
	  /^[a-z][a-z0-9-]*:/ && block { name = substr($$0, 1, index($$0, ":") - 1); sub("^" name ": ", "", block); \
	    n = split(block, lines, "\n"); for (i = 1; i < n; i++) printf "  %-18s %s\n", (i == 1 ? name : ""), lines[i] } \
	  { block = "" }' $(MAKEFILE_LIST)
