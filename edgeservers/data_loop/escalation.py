"""Uncertain answers escalated to a bigger model: when the edge model is unsure, the image goes to another model
over the Open Inference Protocol (another edgeservers on a bigger node, Triton, KServe, OVMS) and its answer is
returned instead, tagged, with the edge's own answer kept beside it. Joint inference as Sedna and edge
endpoints do it, with the edge answer as the fallback whenever the bigger model cannot answer in time.

The call is bounded and can only go where `escalate_url` says: one connection pool to that host (urllib3, no
redirects followed, no retries), the image sent as tritonclient sends a BYTES input (binary tensor data
extension), and the request stops waiting after `escalate_timeout` seconds, whatever the network does (the
call runs on a small pool of threads; one past its deadline ends by its own socket timeouts). The remote
model's input and outputs are read from its metadata once per process: its `answer` output when it has one
(an edgeservers model), else its first output through the classification extension (top `top_k`), as
[{label, index, score}] like the local answer.

A circuit breaker keeps an offline site from paying the timeout on every uncertain frame: after
`escalate_breaker_failures` consecutive failures no call is tried for `escalate_breaker_cooldown` seconds, then
one trial call decides (per worker process). Headers from `escalate_headers_file` (credentials) are sent with
every call and never written anywhere: not in logs, messages or tags.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.postprocess import Answer
from ..errors import ModelLoadError
from ..metrics import RequestMetrics
from ..settings import Settings

log = logging.getLogger(__name__)

ESCALATED, EDGE = "escalated", "edge"  # who answered (tag answered_by)
ESCALATIONS = "edgeservers_escalations_total"  # answered by the bigger model
FAILURES = "edgeservers_escalation_failures_total"  # tried and failed (label reason)
SKIPPED = "edgeservers_escalations_skipped_total"  # not tried: the breaker was open
# The breaker's state as events (open now: opened - closed > 0). Not a gauge of 0 and 1: Seldon's v1 gRPC path
# turns meta.metrics into JSON through protobuf, which leaves a value of 0 out, and then fails on the metric.
BREAKER_OPENED = "edgeservers_escalation_breaker_opened_total"
BREAKER_CLOSED = "edgeservers_escalation_breaker_closed_total"
ESCALATION_SECONDS = "edgeservers_escalation_seconds"  # the wait for a tried escalation

_CALL_THREADS = 4  # escalations in flight per process (a call past its deadline holds one until its socket times out)
_HEADER_LENGTH = "Inference-Header-Content-Length"
_MODEL_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?(?:/infer)?/?")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name
_OURS = {"host", "content-length", "content-type", "transfer-encoding", "connection", _HEADER_LENGTH.lower()}


@dataclass(frozen=True)
class Escalation:
    """Who answered a request the edge model was asked (when escalate_url is set): `answered_by` escalated, with
    the edge model's own answer beside; or edge, with the reason when the answer was uncertain."""

    answered_by: str
    edge_answer: Answer | None = None
    error: str = ""

    def report(self) -> dict[str, Any]:
        """What an answer says of it: answered_by, edge_answer (the edge's body), escalation_error."""
        report: dict[str, Any] = {"answered_by": self.answered_by}
        if self.edge_answer is not None:
            report["edge_answer"] = self.edge_answer.body
        if self.error:
            report["escalation_error"] = self.error
        return report


AT_EDGE = Escalation(EDGE)  # a certain answer: the edge model's, nothing tried


@dataclass(frozen=True)
class Target:
    """The model escalate_url names: where its metadata and its infer endpoint are."""

    origin: str  # scheme://host:port
    model_path: str  # /v2/models/NAME[/versions/V]

    @classmethod
    def parse(cls, url: str) -> Target:
        """The target of an http(s)://host[:port]/v2/models/NAME[/versions/V][/infer] URL (ValueError: what is wrong)."""
        from urllib3.util import parse_url

        try:
            parts = parse_url(url)
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.host:
            raise ValueError("expected an http:// or https:// URL")
        if parts.auth:
            raise ValueError("credentials in the URL are refused: put them in escalate_headers_file")
        match = _MODEL_PATH.fullmatch(parts.path or "")
        if match is None or parts.query or parts.fragment:
            raise ValueError("expected the path /v2/models/NAME[/versions/V][/infer] and no query")
        port = f":{parts.port}" if parts.port else ""
        name, version = match.groups()
        return cls(
            f"{parts.scheme}://{parts.host}{port}", f"/v2/models/{name}" + (f"/versions/{version}" if version else "")
        )


def read_headers(path: str) -> dict[str, str]:
    """`Name: value` lines (blank lines and # comments skipped); a ValueError names the line, never its text."""
    headers = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, colon, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not colon or not _TOKEN.fullmatch(name) or not value or any(c in value for c in "\r\0"):
            raise ValueError(f"line {number} is not `Name: value` (not shown: it may hold a credential)")
        if name.lower() in _OURS:
            raise ValueError(f"line {number} sets {name}, which the escalation sets itself")
        headers[name] = value
    return headers


class CircuitBreaker:
    """Closed: every call is tried. After `failures` consecutive failures, open: none is tried for `cooldown`
    seconds; then one trial call at a time (half-open): success closes it, failure opens it again."""

    def __init__(self, failures: int, cooldown: float):
        self.failures, self.cooldown = failures, cooldown
        self._lock = threading.Lock()
        self._failed = 0
        self._open_until = 0.0
        self._trial = False

    @property
    def is_open(self) -> bool:
        return self._failed >= self.failures

    def wait(self) -> float | None:
        """None: try the call (and record its outcome); else the seconds until a call will be tried again."""
        with self._lock:
            if self._failed < self.failures:
                return None
            now = time.monotonic()
            if now >= self._open_until and not self._trial:
                self._trial = True
                return None
            return max(0.0, self._open_until - now)

    def record(self, ok: bool) -> bool:
        """The outcome of a call that was tried; True when it changed the state (opened or closed)."""
        with self._lock:
            was_open, self._trial = self.is_open, False
            self._failed = 0 if ok else self._failed + 1
            if self.is_open:
                self._open_until = time.monotonic() + self.cooldown
            return was_open != self.is_open


class Failed(Exception):
    """An escalation that did not give an answer: `kind` (the metric's reason label) and what happened."""

    def __init__(self, kind: str, text: str):
        super().__init__(f"{kind}: {text}")
        self.kind = kind


@dataclass(frozen=True)
class _Remote:
    """What the remote model's metadata says to send and read: its one input, the outputs to request, and
    whether the answer is its `answer` output (else the classification extension of `output`)."""

    input: str
    output: str
    outputs: list[dict[str, Any]]

    @classmethod
    def from_metadata(cls, meta: Any, top_k: int) -> _Remote:
        inputs = meta.get("inputs") if isinstance(meta, dict) else None
        outputs = meta.get("outputs") if isinstance(meta, dict) else None
        if not isinstance(inputs, list) or not isinstance(outputs, list) or not outputs:
            raise Failed("answer", "the target's model metadata lists no inputs and outputs")
        if len(inputs) != 1 or not isinstance(inputs[0], dict) or not isinstance(inputs[0].get("name"), str):
            raise Failed("answer", f"the target's model has {len(inputs)} inputs; one image input is needed")
        names = [o.get("name") for o in outputs if isinstance(o, dict)]
        if "answer" in names:
            return cls(inputs[0]["name"], "answer", [{"name": "answer", "parameters": {"binary_data": False}}])
        if not isinstance(names[0], str):
            raise Failed("answer", "the target's model metadata names no output")
        wanted = {"name": names[0], "parameters": {"classification": top_k, "binary_data": False}}
        return cls(inputs[0]["name"], names[0], [wanted])

    def request(self, image: bytes) -> tuple[bytes, str]:
        """The infer request tritonclient sends for one BYTES element (binary extension), and its header length."""
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": self.input,
                        "shape": [1],
                        "datatype": "BYTES",
                        "parameters": {"binary_data_size": len(image) + 4},
                    }
                ],
                "outputs": self.outputs,
            }
        ).encode()
        return header + struct.pack("<I", len(image)) + image, str(len(header))

    def answer(self, body: bytes, header_length: str | None) -> Any:
        """The answer in the local answer's form, from an infer response (JSON, or the binary extension)."""
        data = _output_elements(body, header_length, self.output)
        if not data:
            raise Failed("answer", f"the target's output {self.output!r} is empty")
        if self.output == "answer":
            try:
                return json.loads(data[0])
            except ValueError:
                raise Failed("answer", "the target's answer output is not JSON") from None
        body_out = []
        for element in data:
            text = element.decode() if isinstance(element, bytes) else str(element)
            score, _, rest = text.partition(":")
            index, _, label = rest.partition(":")
            try:
                body_out.append({"label": label or index, "index": int(index), "score": float(score)})
            except ValueError:
                raise Failed(
                    "answer", f"the target's classification {text[:80]!r} is not score:index[:label]"
                ) from None
        return body_out


def _output_elements(body: bytes, header_length: str | None, name: str) -> list[Any]:
    """The elements of output `name` in an infer response: JSON data, or BYTES in the binary extension."""
    try:
        size = int(header_length) if header_length is not None else len(body)
        doc = json.loads(body[:size])
        outputs = doc["outputs"]
        (output,) = [o for o in outputs if o.get("name") == name]
        if "data" in output:
            return list(output["data"])
        offset = size
        for o in outputs:  # the binary blobs follow the header in the outputs' order
            length = int((o.get("parameters") or {})["binary_data_size"])
            if o is output:
                return _bytes_elements(body[offset : offset + length])
            offset += length
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    raise Failed("answer", f"the target's response has no readable output {name!r}")


def _bytes_elements(blob: bytes) -> list[bytes]:
    """BYTES elements as the binary extension writes them: each a 4-byte little-endian length, then the bytes."""
    elements, offset = [], 0
    while offset + 4 <= len(blob):
        (length,) = struct.unpack_from("<I", blob, offset)
        elements.append(blob[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return elements


class Escalator:
    """Escalates uncertain answers to the model at `target`, within `timeout` seconds, behind a circuit breaker."""

    def __init__(
        self,
        target: Target,
        timeout: float,
        headers: Mapping[str, str],
        breaker: CircuitBreaker,
        top_k: int,
        max_bytes: int,
    ):
        self.target, self.timeout = target, timeout
        self._headers = dict(headers)
        self.breaker = breaker
        self._top_k, self._max_bytes = top_k, max_bytes
        self._remote: _Remote | None = None
        self._lock = threading.Lock()
        self._pid = -1  # the process the pool and the threads below belong to (they are made after the fork)
        self._pool: Any = None
        self._threads: ThreadPoolExecutor | None = None

    @classmethod
    def from_settings(cls, settings: Settings, postprocess_kind: str) -> Escalator | None:
        """The escalator escalate_url asks for (None without one), checked at start."""
        if not settings.escalate_url:
            return None
        if postprocess_kind not in ("classification", "detection"):
            raise ModelLoadError(
                f"parameter escalate_url needs answers that can be uncertain (postprocess classification or "
                f"detection); this model's postprocess is {postprocess_kind}"
            )
        try:
            target = Target.parse(settings.escalate_url)
        except ValueError as e:
            raise ModelLoadError(f"parameter escalate_url={settings.escalate_url!r}: {e}") from None
        headers = {}
        if settings.escalate_headers_file:
            try:
                headers = read_headers(settings.escalate_headers_file)
            except (OSError, UnicodeDecodeError, ValueError) as e:
                reason = e.strerror if isinstance(e, OSError) else str(e)
                raise ModelLoadError(
                    f"parameter escalate_headers_file={settings.escalate_headers_file}: {reason}"
                ) from None
        breaker = CircuitBreaker(settings.escalate_breaker_failures, settings.escalate_breaker_cooldown)
        return cls(target, settings.escalate_timeout, headers, breaker, settings.top_k, settings.max_request_bytes)

    def answer(self, image: bytes, edge: Answer, metrics: RequestMetrics) -> tuple[Answer, Escalation]:
        """The bigger model's answer to an uncertain image and the escalation's tags; the edge's answer and why,
        when the bigger model cannot give one within escalate_timeout or the breaker is open."""
        wait = self.breaker.wait()
        if wait is not None:
            metrics.count(SKIPPED)
            error = f"breaker open: {self.breaker.failures} escalations failed in a row; next try in {wait:.0f} s"
            return edge, Escalation(EDGE, error=error)
        try:
            with metrics.timed(ESCALATION_SECONDS):
                body = self._ask(image)
        except Failed as e:
            if self.breaker.record(False):
                metrics.count(BREAKER_OPENED)
                log.warning(
                    "escalate_url %s: %d escalations failed in a row (last: %s); none tried for %g s",
                    self.target.origin + self.target.model_path,
                    self.breaker.failures,
                    e,
                    self.breaker.cooldown,
                )
            with self._lock:
                self._remote = None  # read the metadata again next time: the target may have changed
            metrics.count(FAILURES, reason=e.kind)
            return edge, Escalation(EDGE, error=str(e))
        if self.breaker.record(True):
            metrics.count(BREAKER_CLOSED)
            log.info("escalate_url %s answers again", self.target.origin + self.target.model_path)
        metrics.count(ESCALATIONS)
        return Answer(body), Escalation(ESCALATED, edge_answer=edge)

    def _ask(self, image: bytes) -> Any:
        """The remote answer, or Failed once the deadline passes, whatever the call is doing."""
        deadline = time.monotonic() + self.timeout
        future: Future[Any] = self._pool_threads().submit(self._call, image, deadline)
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            future.cancel()  # a call not yet started; one under way ends by its own timeouts
            raise Failed("timeout", f"no answer within escalate_timeout={self.timeout:g} s") from None
        except Failed:
            raise
        except Exception as e:  # whatever else the target sent (metadata that is not JSON, ...): the edge answers
            raise Failed("answer", f"the target's metadata or answer is unreadable ({type(e).__name__})") from None

    def _call(self, image: bytes, deadline: float) -> Any:
        remote = self._remote
        if remote is None:
            meta = json.loads(self._request("GET", self.target.model_path, None, {}, deadline)[0])
            remote = self._remote = _Remote.from_metadata(meta, self._top_k)
        body, header_length = remote.request(image)
        headers = {"Content-Type": "application/octet-stream", _HEADER_LENGTH: header_length}
        reply, reply_header_length = self._request("POST", self.target.model_path + "/infer", body, headers, deadline)
        return remote.answer(reply, reply_header_length)

    def _request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str], deadline: float
    ) -> tuple[bytes, str | None]:
        """One call to the target's host only: no retries, no redirects, no decoding, at most max_bytes read;
        its body and Inference-Header-Content-Length."""
        import urllib3
        from urllib3 import exceptions as ux

        remaining = max(0.001, deadline - time.monotonic())
        try:
            response = self._connection_pool().urlopen(
                method,
                path,
                body=body,
                headers={**self._headers, **headers},
                retries=False,
                redirect=False,
                timeout=urllib3.Timeout(connect=remaining, read=remaining),
                preload_content=False,
                decode_content=False,
            )
        except ux.NewConnectionError as e:  # before TimeoutError: urllib3 1.26 makes it a ConnectTimeoutError
            raise Failed("unreachable", f"cannot connect to {self.target.origin} ({_reason(e)})") from None
        except ux.TimeoutError:
            raise Failed("timeout", f"no answer within escalate_timeout={self.timeout:g} s") from None
        except ux.HTTPError as e:
            raise Failed("connection", f"{type(e).__name__}: {_reason(e)}") from None
        try:
            data = response.read(self._max_bytes + 1, decode_content=False)
            status, encoding = response.status, response.headers.get("Content-Encoding", "identity")
        except ux.HTTPError as e:
            kind = "timeout" if isinstance(e, ux.TimeoutError) else "connection"
            raise Failed(kind, f"the answer was cut ({type(e).__name__})") from None
        finally:
            response.release_conn()
        if 300 <= status < 400:
            raise Failed("redirect", f"the target answered {status}; redirects are not followed")
        if status >= 400:
            raise Failed("status", f"the target answered {status}: {_error_text(data)}")
        if len(data) > self._max_bytes:
            raise Failed("answer", f"the target's answer is over {self._max_bytes} bytes (max_request_bytes)")
        if encoding.lower() != "identity":
            raise Failed("answer", f"the target's answer is encoded ({encoding[:40]}); none was asked for")
        return data, response.headers.get(_HEADER_LENGTH)

    def _connection_pool(self) -> Any:
        return self._resources()[1]

    def _pool_threads(self) -> ThreadPoolExecutor:
        return self._resources()[0]

    def _resources(self) -> tuple[ThreadPoolExecutor, Any]:
        """This process's call threads and its connection pool to the target (a forked worker makes its own)."""
        from urllib3 import connectionpool

        with self._lock:
            if self._pid != os.getpid() or self._threads is None:
                self._pid = os.getpid()
                self._threads = ThreadPoolExecutor(_CALL_THREADS, thread_name_prefix="escalation")
                self._pool = connectionpool.connection_from_url(self.target.origin, maxsize=_CALL_THREADS)
            return self._threads, self._pool


def _reason(e: Exception) -> str:
    """An exception's text without urllib3's object reprs, short."""
    text = str(e)
    return re.sub(r"<[^>]*>: ", "", text)[:200]


def _error_text(data: bytes) -> str:
    """The first 200 characters of an error answer (OIP: {"error": "..."})."""
    try:
        doc = json.loads(data)
        text = doc.get("error", data.decode()) if isinstance(doc, dict) else data.decode()
    except ValueError:
        text = data.decode(errors="replace")
    return str(text)[:200]
