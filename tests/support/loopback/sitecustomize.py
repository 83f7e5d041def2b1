"""Test harnesses only: put on PYTHONPATH of a server under test, this keeps Seldon's listeners on loopback.

seldon-core-microservice binds its REST and metrics servers to 0.0.0.0 (hard-coded); on a shared
machine the tests keep them on 127.0.0.1 instead. (gRPC binds in grpc's C core, which this does not reach.)
"""

import socket

_bind = socket.socket.bind


def _loopback_bind(self, address):
    if self.family == socket.AF_INET and isinstance(address, tuple) and address[0] in ("", "0.0.0.0"):
        address = ("127.0.0.1",) + tuple(address[1:])
    return _bind(self, address)


socket.socket.bind = _loopback_bind  # type: ignore[method-assign]  # the shim's whole point: wrap bind
