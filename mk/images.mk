# Images: the TFLite server, the OpenVINO server (amd64, arm64) and the storage
# initializer for amd64, arm64 and arm/v7, all built by buildah from one Dockerfile per image.
# docs/images.md explains; none of this is part of `make test` (heavy: builds, qemu).
#   make images                      build all arches, manifest lists, OCI archive in build/
#   make images REGISTRY=reg/ns      ... and push the manifest lists there instead
#   make publish                     ... pushed to IMAGE_REGISTRY, where the charts say the images are
#   make image-refs IMAGE_REGISTRY=reg/ns   point the charts, operator values and KServe manifests there
#   make image-test                  build on local Debian bases and run each arch for real

# The version, read in this one place (the tag and the org.opencontainers.image.version label).
IMAGE_VERSION ?= $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' edgeservers/__init__.py)
# Where the images are published and the names they have: the one place the charts, the operator values and
# the KServe manifests take them from (`make image-refs` writes them there; a test checks they agree), and
# where `make publish` (the release workflow) pushes.
IMAGE_REGISTRY    ?= ghcr.io/edgeservers
SERVER_IMAGE      ?= edgeservers
INITIALIZER_IMAGE ?= edgeservers-storage-initializer
IMAGE_ARCHES  ?= amd64 arm64 armv7
BASE_IMAGE    ?= python:3.11-slim-bookworm
REGISTRY      ?=
SOURCE_URL    ?= $(shell git remote get-url origin 2>/dev/null)
# pip inside RUN steps trusts this CA bundle (mounted read-only, never in the image) when set;
# the default follows pip's own PIP_CERT, e.g. behind a TLS-intercepting proxy.
PIP_CA        ?= $(PIP_CERT)
IMAGE_OCI     ?= build/edgeservers-$(IMAGE_VERSION).oci.tar

IMAGES_ENV = VERSION=$(IMAGE_VERSION) BASE_IMAGE=$(BASE_IMAGE) PIP_CA=$(PIP_CA) SOURCE_URL=$(SOURCE_URL) \
  REPO=localhost/$(SERVER_IMAGE) INIT_REPO=localhost/$(INITIALIZER_IMAGE)
IMAGE_REFS_ARGS ?=

.PHONY: images publish image-refs base-images image-test image-sizes model-image

## images: all arches as manifest lists edgeservers:VERSION, edgeservers:VERSION-openvino and
## edgeservers-storage-initializer:VERSION, in $(IMAGE_OCI) or pushed to $(REGISTRY)
images:
	$(if $(filter local,$(BASE_IMAGE)),$(IMAGES_ENV) docker/images.sh base $(IMAGE_ARCHES))
	$(IMAGES_ENV) docker/images.sh build $(IMAGE_ARCHES)
	$(IMAGES_ENV) docker/images.sh manifest $(IMAGE_ARCHES)
	$(if $(REGISTRY),$(IMAGES_ENV) docker/images.sh push $(REGISTRY),mkdir -p build && $(IMAGES_ENV) docker/images.sh export $(IMAGE_OCI))
	$(IMAGES_ENV) docker/images.sh sizes $(IMAGE_ARCHES)

## publish: `make images` pushed to $(IMAGE_REGISTRY), the registry the charts name (the release workflow runs this)
publish: REGISTRY = $(IMAGE_REGISTRY)
publish: images

## image-refs: write $(IMAGE_REGISTRY)/$(SERVER_IMAGE) and /$(INITIALIZER_IMAGE):$(IMAGE_VERSION) into every image
## reference in charts/ (IMAGE_REFS_ARGS=--check: only say which files differ)
image-refs:
	$(PY) docker/image_refs.py --registry $(IMAGE_REGISTRY) --server $(SERVER_IMAGE) \
	  --initializer $(INITIALIZER_IMAGE) --version $(IMAGE_VERSION) $(IMAGE_REFS_ARGS)

## base-images: Debian bookworm bases made here with debootstrap (stand-ins for python:3.11-slim-bookworm)
base-images:
	$(IMAGES_ENV) docker/images.sh base $(IMAGE_ARCHES)

## image-test: local bases, all images, then each arch for real: the initializer fills a directory
## from a loopback HTTP server, each server image runs read-only with the operator's env and classifies
image-test: BASE_IMAGE = local
image-test:
	$(IMAGES_ENV) docker/images.sh base $(IMAGE_ARCHES)
	$(IMAGES_ENV) docker/images.sh build $(IMAGE_ARCHES)
	$(IMAGES_ENV) docker/images.sh test $(IMAGE_ARCHES)
	$(IMAGES_ENV) docker/images.sh sizes $(IMAGE_ARCHES)

## image-sizes: every built image's size, uncompressed and compressed (what a pull downloads)
image-sizes:
	$(IMAGES_ENV) docker/images.sh sizes $(IMAGE_ARCHES)

## model-image: MODEL=dir IMAGE=ref, a FROM scratch image of the model's files for a Kubernetes image volume
## (docs/kubernetes.md, "Models as OCI images"); push it with `buildah push $(IMAGE)`
model-image:
	@test -n "$(MODEL)" -a -n "$(IMAGE)" || { echo "usage: make model-image MODEL=models/face_mask IMAGE=registry/models/face-mask:1"; exit 2; }
	PYTHON=$(PY) PYTHONPATH=$(CURDIR) docker/model-image.sh "$(MODEL)" "$(IMAGE)"
