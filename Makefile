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

.PHONY: install serve test
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

## serve: the bundled demo model on 127.0.0.1 only (bind_address): REST :$(REST_PORT), gRPC :$(GRPC_PORT), metrics :$(METRICS_PORT)
serve: install
	@echo "Serving $(DEMO_MODEL) on 127.0.0.1 only (REST, gRPC, metrics). In another shell:"
	@echo "  curl -s -F binData=@images/parrot.jpg http://127.0.0.1:$(REST_PORT)/api/v1.0/predictions"
	@echo "  curl -s http://127.0.0.1:$(REST_PORT)/v2/models/$$(basename $$(ls $(DEMO_MODEL)/*.tflite | head -1) .tflite)   # Open Inference Protocol (README)"
	PREDICTIVE_UNIT_PARAMETERS='[{"name":"model_uri","value":"$(abspath $(DEMO_MODEL))","type":"STRING"},{"name":"postprocess","value":"$(POSTPROCESS)","type":"STRING"},{"name":"bind_address","value":"127.0.0.1","type":"STRING"}]' \
	PREDICTIVE_UNIT_HTTP_SERVICE_PORT=$(REST_PORT) PREDICTIVE_UNIT_GRPC_SERVICE_PORT=$(GRPC_PORT) \
	PREDICTIVE_UNIT_METRICS_SERVICE_PORT=$(METRICS_PORT) \
	$(VENV)/bin/seldon-core-microservice TFLiteServer --service-type MODEL --http-port $(REST_PORT) --grpc-port $(GRPC_PORT)

## test: everything `make test` promises in the README (CI runs this through .ci/run)
test: install $(TEST_DEPS)
	$(PY) -m pytest -ra tests
