"""Everything the tests share, and the benchmark and the image test use too: imported as
`from tests.support import <module>` from the repository root (tests/README.md lists the modules).

`paths`, `harness` and `payloads` use the standard library only at import time: docker/image_test.py runs
them with the host's python3.
"""
