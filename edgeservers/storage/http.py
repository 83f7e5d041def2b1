"""http:// and https://: one file, with urllib3 (present wherever boto3 is).

Retries are urllib3's Retry: connection errors, read errors and HTTP 408/425/429/5xx (not 501/505) are
retried STORAGE_RETRIES times with its exponential backoff (STORAGE_RETRY_DELAY is the first wait), 4xx
answers are not. A body that breaks off half-way (or stalls) is resumed under the same Retry, which
urllib3 cannot do itself once the body is being streamed: a Range request for the rest, with If-Range
naming the ETag (or Last-Modified) the first answer had, so a file that changed in between comes whole.

`probe()` is the model cache's cheap look: one conditional GET (If-None-Match / If-Modified-Since)
whose body is never read.
"""

from __future__ import annotations

import base64
import logging
import re
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    LocationValueError,
    MaxRetryError,
    ProtocolError,
    ReadTimeoutError,
    ResponseError,
    SSLError,
)
from urllib3.util.retry import Retry

from .common import (
    CHANGED,
    UNCHANGED,
    UNREACHABLE,
    USER_AGENT,
    Budget,
    Check,
    Limits,
    Source,
    StorageError,
    causes,
    env_number,
    gave_up,
    os_reason,
    redact,
    safe_name,
)
from .partial import Partial

log = logging.getLogger("edgeservers.storage")
_STALL_BYTES = 64 << 10  # each read; the stall watch wants one of these every stall-timeout seconds
_RETRY_STATUSES = frozenset([408, 425, 429, 500, 502, 503, 504, *range(506, 600)])
_BODY = ""  # the one file's key in the Partial state


def fetch(uri: str, out: Partial, need_single: bool, budget: Budget) -> tuple[str, Source]:
    """Save the body of GET `uri` in `out` under its file name, resuming what `out` already holds of it;
    return the file's path and what the server said about it."""
    shown = redact(uri)
    uri, headers, parts = _request_parts(uri)
    limits = budget.limits
    retries = int(env_number("STORAGE_RETRIES", 4))
    # Statuses are retried here rather than by urllib3's status_forcelist, which reads the whole
    # error body into memory before retrying (an endless 503 body would fill it).
    retry = Retry(
        total=None,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        redirect=10,
        backoff_factor=env_number("STORAGE_RETRY_DELAY", 1.0) / 2,
        respect_retry_after_header=False,  # a Retry-After of a day would be a stall
    )
    timeout = urllib3.Timeout(connect=min(limits.connect_timeout, limits.stall_timeout), read=limits.stall_timeout)
    stalled = limits.describe("stall_timeout", f"transfer from {shown} stalled (less than 64 KiB in that time)")
    pool = _pool_for(parts.scheme, parts.hostname or "")
    failure, last = "", None  # the latest failure urllib3 did not see itself, and its message
    try:
        while True:
            response = pool.request(
                "GET",
                uri,
                headers={**headers, **_range_headers(out)},
                retries=retry,
                timeout=timeout,
                preload_content=False,
                decode_content=False,
                enforce_content_length=False,  # _save() compares with Content-Length, the same in urllib3 1.26 and 2.x
            )
            retry = response.retries or retry  # what connection errors and redirects used up
            try:
                if response.status == 416:  # the range we asked for no longer fits the file: start over
                    out.discard(out.get(_BODY).get("name", ""))
                    out.discard(_BODY)
                    failure = f"HTTP 416 from {shown} to a resumed request"
                    retry = retry.increment("GET", uri, response=response)
                elif response.status in _RETRY_STATUSES:
                    failure = f"HTTP {response.status} {response.reason} from {shown}"
                    retry = retry.increment("GET", uri, response=response)
                elif response.status >= 400:
                    raise StorageError(f"HTTP {response.status} {response.reason} from {shown}")
                else:
                    return _save(response, shown, parts.path, out, budget)
            except (ProtocolError, ReadTimeoutError) as e:  # the body broke off or stalled
                failure, last = (stalled if isinstance(e, ReadTimeoutError) else _broken(e, shown)), e
                retry = retry.increment("GET", uri, error=e)
            finally:
                response.close()  # never drained: the rest of the body may be endless
            log.warning("%s; retry %d/%d in %.1f s", failure, len(retry.history), retries, retry.get_backoff_time())
            retry.sleep()
    except MaxRetryError as e:
        reason = e.reason
        attempts = gave_up(retries + 1)
        if reason is last or (failure and isinstance(reason, ResponseError)):
            raise StorageError(f"{failure} ({attempts})") from None
        if isinstance(reason, ReadTimeoutError):
            raise StorageError(f"{stalled} ({attempts})") from None
        if isinstance(reason, SSLError):
            raise _tls_error(reason, shown) from None
        raise StorageError(f"cannot reach {shown}: {os_reason(reason) if reason else e} ({attempts})") from None
    except LocationValueError as e:
        raise StorageError(f"bad URL {shown}: {e}") from None
    except HTTPError as e:
        raise StorageError(f"cannot fetch {shown}: {os_reason(e)}") from None


def probe(uri: str, known: Source, limits: Limits) -> Check:
    """Has the file at `uri` changed since `known`? One conditional GET, no retries, every wait bounded
    by the connect timeout; the body is never read. 4xx answers other than 408/425/429 raise, as a
    download would."""
    shown = redact(uri)
    uri, headers, parts = _request_parts(uri)
    if known.etag:
        headers["If-None-Match"] = known.etag
    if known.last_modified:
        headers["If-Modified-Since"] = known.last_modified
    seconds = limits.connect_timeout
    retry = Retry(total=None, connect=0, read=0, status=0, other=0, redirect=10, raise_on_redirect=True)
    try:
        response = _pool_for(parts.scheme, parts.hostname or "").request(
            "GET",
            uri,
            headers=headers,
            retries=retry,
            timeout=urllib3.Timeout(connect=seconds, read=seconds),
            preload_content=False,
            decode_content=False,
        )
    except MaxRetryError as e:
        if isinstance(e.reason, SSLError):
            raise _tls_error(e.reason, shown) from None
        if isinstance(e.reason, (ReadTimeoutError, ConnectTimeoutError)):
            return Check(UNREACHABLE, f"no answer from {shown} within {seconds:g} s")
        return Check(UNREACHABLE, f"cannot reach {shown}: {os_reason(e.reason) if e.reason else e}")
    except (LocationValueError, HTTPError) as e:
        return Check(UNREACHABLE, f"cannot reach {shown}: {os_reason(e)}")
    try:
        status, reason = response.status, response.reason
        now = _source(response)
    finally:
        response.close()
    if status == 304:
        return Check(UNCHANGED, f"HTTP 304 Not Modified from {shown}", known)
    if status in _RETRY_STATUSES:
        return Check(UNREACHABLE, f"HTTP {status} {reason} from {shown}")
    if status >= 400:
        raise StorageError(f"HTTP {status} {reason} from {shown}")
    same = (known.etag and now.etag == known.etag) or (
        not known.etag and known.last_modified and now.last_modified == known.last_modified
    )
    if same:  # a server that ignores conditional requests but names the same version
        return Check(UNCHANGED, f"same {'ETag' if known.etag else 'Last-Modified'} from {shown}", known)
    return Check(CHANGED, f"HTTP {status} from {shown} names another version", now)


def _request_parts(uri: str) -> tuple[str, dict[str, str], urllib.parse.SplitResult]:
    """The URL without user-info, the headers (basic auth from the user-info), and its parts."""
    shown = redact(uri)
    try:
        parts = urllib.parse.urlsplit(uri)
        parts.port  # noqa: B018  # raises ValueError on a bad port
    except ValueError as e:
        raise StorageError(f"bad URL {shown}: {e}") from None
    if not parts.hostname:
        raise StorageError(f"no host in {shown}")
    headers = {"User-Agent": USER_AGENT}
    if parts.username is not None or parts.password is not None:  # https://user:password@host/...: basic auth
        pair = f"{urllib.parse.unquote(parts.username or '')}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = (
            "Basic " + base64.b64encode(pair.encode()).decode()
        )  # dropped on redirects to another host
        uri = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))
    return uri, headers, parts


def _tls_error(reason: BaseException, shown: str) -> StorageError:
    cert = next((c for c in causes(reason) if isinstance(c, ssl.SSLCertVerificationError)), None)
    return StorageError(f"TLS error with {shown}: {cert.verify_message if cert else os_reason(reason)}")


def _source(response: urllib3.HTTPResponse) -> Source:
    length = response.headers.get("Content-Length", "").strip()
    return Source(
        etag=response.headers.get("ETag", "").strip(),
        last_modified=response.headers.get("Last-Modified", "").strip(),
        size=int(length) if length.isdigit() else None,
    )


def _range_headers(out: Partial) -> dict[str, str]:
    """Range and If-Range for the rest of a body begun earlier, when the server named its version with a
    strong ETag or a Last-Modified date; none when there is nothing to resume."""
    state = out.get(_BODY)
    validator = state.get("etag", "") if not state.get("etag", "").startswith("W/") else ""
    validator = validator or state.get("last_modified", "")
    if not state.get("name") or not validator:
        return {}
    have = out.have(state["name"])
    return {"Range": f"bytes={have}-", "If-Range": validator} if have else {}


def _broken(e: BaseException, shown: str) -> str:
    """The message for a body that broke off: ours when we noticed it, else the connection error."""
    if isinstance(e, _ShortBody):
        return str(e)
    return f"connection to {shown} broke during the body: {os_reason(e)}"


class _ShortBody(ProtocolError):
    """Fewer bytes than Content-Length and then EOF: a read error to urllib3's Retry."""


def _save(
    response: urllib3.HTTPResponse, shown: str, url_path: str, out: Partial, budget: Budget
) -> tuple[str, Source]:
    """Write the body to `out` (appending to what it holds for a 206 answer), checking its size against
    the budget as it arrives."""
    state = out.get(_BODY)
    have = 0
    if response.status == 206 and state.get("name"):
        have = _range_start(response.headers.get("Content-Range", ""), shown)
        if have != out.have(state["name"]):
            raise StorageError(f"{shown} answered a resumed request with the wrong range")
        name, source = state["name"], Source(state.get("etag", ""), state.get("last_modified", ""), state.get("size"))
    else:  # the whole body: a first request, or the server ignored the range (or the file changed)
        name = safe_name(_disposition_name(response.headers.get("Content-Disposition", ""))) or safe_name(
            urllib.parse.unquote(url_path)
        )
        if not name:
            raise StorageError(f"cannot tell a file name from {shown}: end the URL path with the file name")
        if state.get("name"):
            out.discard(state["name"])
        source = _source(response)
        out.begin(_BODY, name=name, etag=source.etag, last_modified=source.last_modified, size=source.size)
    length = response.headers.get("Content-Length", "").strip()
    expected = have + int(length) if length.isdigit() else None
    if expected is not None:
        budget.check(expected, f"{shown} (Content-Length {expected})")
    target = out.path(name)
    got = have
    with open(target, "ab" if have else "wb") as f, _StallWatch(response, budget.limits.stall_timeout) as watch:
        try:
            for chunk in response.stream(_STALL_BYTES, decode_content=False):
                watch.progress()
                got += len(chunk)
                budget.check(got, shown)
                f.write(chunk)
        except ProtocolError:
            if not watch.fired:
                raise
    if watch.fired:  # however the cut-off read ended
        raise ReadTimeoutError(None, shown, f"fewer than {_STALL_BYTES} bytes in {budget.limits.stall_timeout:g} s")
    if expected is not None and got != expected:
        raise _ShortBody(f"connection to {shown} closed after {got} of {expected} bytes")
    budget.commit(got)
    return target, source


def _range_start(content_range: str, shown: str) -> int:
    """The first byte of a 206 answer (`bytes 100-199/200`)."""
    m = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*", content_range)
    if not m:
        raise StorageError(f"{shown} answered a resumed request without a usable Content-Range")
    return int(m.group(1))


class _StallWatch:
    """Closes the connection when a read of _STALL_BYTES has not completed for `seconds`.

    The socket's read timeout only fires after `seconds` without a single byte, so a server that
    trickles a byte every few seconds would be waited on for ever; this thread bounds the wait for
    every 64 KiB instead (1 KiB/s at the default 60 s is the slowest transfer accepted).
    """

    def __init__(self, response: urllib3.HTTPResponse, seconds: float) -> None:
        self.sock = response.connection.sock if response.connection else None
        self.seconds = seconds
        self.last = time.monotonic()
        self.fired = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="storage-stall-watch", daemon=True)

    def __enter__(self) -> _StallWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def progress(self) -> None:
        self.last = time.monotonic()

    def _watch(self) -> None:
        while not self._done.wait(min(self.seconds / 4, 1.0)):
            if time.monotonic() - self.last > self.seconds and self.sock is not None:
                self.fired = True
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)  # the blocked read returns, short
                except OSError:  # already closed: the read has ended anyway
                    pass
                return


def _disposition_name(header: str) -> str:
    """The filename parameter of a Content-Disposition header (quoted or not), or ""."""
    m = re.search(r'filename\s*=\s*(?:"([^"]*)"|([^;\s]+))', header, flags=re.I)
    return (m.group(1) or m.group(2)) if m else ""


def _pool_for(url_scheme: str, host: str) -> urllib3.PoolManager:
    """A pool that honours http_proxy / https_proxy / no_proxy as urllib (and boto3) do."""
    proxy = urllib.request.getproxies().get(url_scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        return urllib3.ProxyManager(proxy)
    return urllib3.PoolManager()
