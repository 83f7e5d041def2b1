"""Request bodies as clients write them: JSON `binData`, S3 bucket notification records, multipart/form-data
(the one builder, whole or a part at a time for bodies too large to hold), and the WSGI environ of a request
for code that reads one.
Standard library only: docker/image_test.py runs it with the host's python3."""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote_plus

# A multipart field: text, or a file as (filename, data) or (filename, data, content type).
Field = str | tuple[str, bytes] | tuple[str, bytes, str]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def rest_image(image: bytes) -> bytes:
    """The JSON body of a v1 REST prediction of an encoded image: {"binData": base64}."""
    return json.dumps({"binData": b64(image)}).encode()


def s3_record(bucket: str, key: str, event: str = "ObjectCreated:Put") -> dict[str, Any]:
    """One record of an S3 bucket notification as AWS and Ceph RGW write it (keys URL-encoded)."""
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": event,
        "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key), "size": 1}},
    }


def part_head(boundary: str, name: str, filename: str | None = None, content_type: str | None = None) -> bytes:
    """The start of one multipart part, up to its data: the boundary line, Content-Disposition (and
    Content-Type), the blank line."""
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    headers = f"Content-Disposition: {disposition}\r\n" + (f"Content-Type: {content_type}\r\n" if content_type else "")
    return f"--{boundary}\r\n{headers}\r\n".encode()


def part_end() -> bytes:
    """What follows a part's data, before the next part's head or the closing boundary."""
    return b"\r\n"


def closing(boundary: str) -> bytes:
    """The closing boundary, after the last part."""
    return f"--{boundary}--\r\n".encode()


def form_content_type(boundary: str) -> str:
    return f"multipart/form-data; boundary={boundary}"


def multipart(fields: Mapping[str, Field], boundary: str | None = None) -> tuple[str, bytes]:
    """(Content-Type, body) of a multipart/form-data form of `fields`, with a random boundary unless one is given."""
    boundary = boundary or uuid.uuid4().hex
    body = bytearray()
    for name, value in fields.items():
        if isinstance(value, str):
            body += part_head(boundary, name) + value.encode()
        else:
            body += part_head(boundary, name, value[0], value[2] if len(value) == 3 else None) + value[1]
        body += part_end()
    return form_content_type(boundary), bytes(body + closing(boundary))


def wsgi_environ(content_type: str, body: bytes, path: str = "/api/v1.0/predictions") -> dict[str, Any]:
    """The WSGI environ of a POST of `body`, as a WSGI server hands it to the app."""
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "9000",
        "wsgi.url_scheme": "http",
    }
