# Dependency audit (docs/security.md "Dependencies"). Offline: it matches the packages
# against the committed PyPA advisory snapshot in security/advisories/ and fails on any finding that has
# no reachability note. tests/unit/test_audit.py runs the same code in `make test`.
#   make audit                                  the server venv and the armv7 image's pinned closure
#   make audit AUDIT_ARGS="--freeze image.txt"  also an image's package list (see docs/security.md)

AUDIT_ARGS ?=

.PHONY: audit measure-multipart

## audit: installed packages (.venv, requirements-armv7.txt) against the advisory snapshot, then the figures docs/security.md shows
audit: install
	$(PY) security/audit.py --python $(PY) --requirements requirements-armv7.txt $(AUDIT_ARGS)
	$(PY) -m security.summary

## measure-multipart: CPU cost of CVE-2023-46136 (crafted vs normal multipart bodies, 1-32 MB); prints, asserts nothing
measure-multipart: install
	$(PY) -m security.measure_cve_2023_46136 1 2 4 5 8 10 16 20 32
