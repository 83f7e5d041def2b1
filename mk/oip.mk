# Open Inference Protocol: the real Triton client in its own venv for the tests.
# tritonclient 2.73 needs urllib3>=2 and protobuf>=6, which seldon-core 1.17.1's pins (urllib3 1.26,
# protobuf 3.20) rule out in .venv; tests/e2e/test_oip.py runs tests/support/oip_client.py with this venv's python.

CLIENT_VENV := .venv-client

.PHONY: client-venv oip-test bench-oip
TEST_DEPS += client-venv

## client-venv: tritonclient[http,grpc] + numpy in $(CLIENT_VENV), from requirements-client.txt
client-venv: $(CLIENT_VENV)/.installed

$(CLIENT_VENV)/.installed: requirements-client.txt
	$(PYTHON) -m venv $(CLIENT_VENV)
	$(CLIENT_VENV)/bin/pip install --quiet --upgrade "pip<25"
	$(CLIENT_VENV)/bin/pip install --quiet -r requirements-client.txt
	touch $@

## oip-test: the Open Inference Protocol tests (REST, binary extension, gRPC, KServe manifests)
oip-test: install client-venv tools
	$(PY) -m pytest -ra tests/component/test_oip.py tests/e2e/test_oip.py tests/kubernetes/test_kserve.py

## bench-oip: OIP REST (binary) and OIP gRPC against v1 tftensor and invoke(), interleaved request by request
## (robust to a shared machine's drifting load); writes $(BENCH_OUT)/oip/interleaved.{json,md}
bench-oip: install
	$(PY) -m bench.interleaved --out $(BENCH_OUT)/oip $(BENCH_ARGS)
