# Images (issue 3): the servers and the storage initializer for amd64, arm64 and arm/v7.
# docs/images.md explains; none of this is part of `make test` (heavy: builds, qemu).
#   make images                      build all arches, manifest lists, OCI archive in build/
#   make images REGISTRY=reg/ns      ... and push the manifest lists there instead
#   make image-test                  build on local Debian bases and run each arch for real
# With `docker buildx` available (and no BUILDER=buildah), `make images` uses it instead.

IMAGE_VERSION ?= $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' edgeservers/__init__.py)
IMAGE_ARCHES  ?= amd64 arm64 armv7
BASE_IMAGE    ?= python:3.11-slim-bookworm
REGISTRY      ?=
SOURCE_URL    ?= $(shell git remote get-url origin 2>/dev/null)
# pip inside RUN steps trusts this CA bundle (mounted read-only, never in the image) when set;
# the default follows pip's own PIP_CERT, e.g. behind a TLS-intercepting proxy.
PIP_CA        ?= $(PIP_CERT)
BUILDER       ?= $(if $(shell docker buildx version 2>/dev/null),buildx,buildah)
IMAGE_OCI     ?= build/edgeservers-$(IMAGE_VERSION).oci.tar

IMAGES_ENV = VERSION=$(IMAGE_VERSION) BASE_IMAGE=$(BASE_IMAGE) PIP_CA=$(PIP_CA) SOURCE_URL=$(SOURCE_URL)
BUILDX_PLATFORMS = linux/amd64 linux/arm64 linux/arm/v7

.PHONY: images images-buildah images-buildx base-images image-build image-test image-sizes

## images: all arches as manifest lists edgeservers:VERSION, edgeservers:VERSION-openvino and
## edgeservers-storage-initializer:VERSION, in $(IMAGE_OCI) or pushed to $(REGISTRY)
images: images-$(BUILDER)

images-buildah:
	$(if $(filter local,$(BASE_IMAGE)),$(IMAGES_ENV) docker/images.sh base $(IMAGE_ARCHES))
	$(IMAGES_ENV) docker/images.sh build $(IMAGE_ARCHES)
	$(IMAGES_ENV) docker/images.sh manifest $(IMAGE_ARCHES)
	$(if $(REGISTRY),$(IMAGES_ENV) docker/images.sh push $(REGISTRY),mkdir -p build && $(IMAGES_ENV) docker/images.sh export $(IMAGE_OCI))
	@$(MAKE) --no-print-directory image-sizes

# docker buildx: one multi-platform build per image, pushed (REGISTRY set) or written as an OCI archive.
images-buildx:
	@for a in $(IMAGE_ARCHES); do case $$a in amd64) f=Dockerfile.amd64;; arm64) f=Dockerfile.arm64v8;; armv7) f=Dockerfile.arm32v7;; esac; \
	  p=$$(echo $$a | sed 's,armv7,arm/v7,'); t=$(or $(REGISTRY),edgeservers)/edgeservers:$(IMAGE_VERSION)-$$a; \
	  echo "docker buildx build --platform linux/$$p -f $$f -t $$t"; \
	  docker buildx build --platform linux/$$p -f $$f --build-arg BASE_IMAGE=$(BASE_IMAGE) \
	    --build-arg VERSION=$(IMAGE_VERSION) --build-arg SOURCE_URL=$(SOURCE_URL) -t $$t \
	    $(if $(REGISTRY),--push,--output type=oci$(,)dest=build/edgeservers-$(IMAGE_VERSION)-$$a.oci.tar) . || exit 1; \
	done
	docker buildx build --platform $(subst $() ,$(,),$(BUILDX_PLATFORMS)) -f storage-initializer/Dockerfile \
	  --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg VERSION=$(IMAGE_VERSION) \
	  -t $(or $(REGISTRY),edgeservers)/edgeservers-storage-initializer:$(IMAGE_VERSION) \
	  $(if $(REGISTRY),--push,--output type=oci$(,)dest=build/edgeservers-storage-initializer-$(IMAGE_VERSION).oci.tar) .
	$(if $(REGISTRY),docker buildx imagetools create -t $(REGISTRY)/edgeservers:$(IMAGE_VERSION) \
	  $(foreach a,$(IMAGE_ARCHES),$(REGISTRY)/edgeservers:$(IMAGE_VERSION)-$(a)))
	$(if $(REGISTRY),for a in $(filter-out armv7,$(IMAGE_ARCHES)); do docker buildx build --platform linux/$$a \
	  -f docker/openvino.Dockerfile --build-arg IMAGE=$(REGISTRY)/edgeservers:$(IMAGE_VERSION)-$$a \
	  -t $(REGISTRY)/edgeservers:$(IMAGE_VERSION)-openvino-$$a --push . || exit 1; done; \
	  docker buildx imagetools create -t $(REGISTRY)/edgeservers:$(IMAGE_VERSION)-openvino \
	  $(foreach a,$(filter-out armv7,$(IMAGE_ARCHES)),$(REGISTRY)/edgeservers:$(IMAGE_VERSION)-openvino-$(a)))

, := ,

## base-images: Debian bookworm bases made here with debootstrap (stand-ins for python:3.11-slim-bookworm)
base-images:
	$(IMAGES_ENV) docker/images.sh base $(IMAGE_ARCHES)

## image-test: local bases, all images, then each arch for real: the initializer fills a directory
## from a loopback HTTP server, the server runs read-only with the operator's env and classifies
image-test: BASE_IMAGE = local
image-test:
	$(IMAGES_ENV) docker/images.sh base $(IMAGE_ARCHES)
	$(IMAGES_ENV) docker/images.sh build $(IMAGE_ARCHES)
	python3 docker/image_test.py --version $(IMAGE_VERSION) $(IMAGE_ARCHES)
	@$(MAKE) --no-print-directory image-sizes

image-sizes:
	@podman images --filter reference='*/edgeservers*' --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | sort
