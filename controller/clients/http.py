"""The one door to the network: pooled sessions, login, retries and error mapping.

Every API client (``era``, ``element``, ``vcda``, ``commvault``) sends its calls through an
:class:`HttpSession`. This is the only module that imports ``httpx``; every ``httpx``
exception is translated here into ``controller.errors`` (``raise ... from exc``) and no
``httpx`` type leaves it. What a session guarantees, so the clients need not:

1. at most ``concurrency`` requests in flight, at most ``rate_limit`` per second;
2. one login shared by all threads, made lazily; after an expired session, one new login
   (only one, even when many threads notice at once) and one repeat of the call;
3. retries with full-jitter backoff, bounded in count and time, only where repeating is
   safe: a non-idempotent call whose answer was lost raises
   ``TransientApiError(maybe_applied=True)`` so the caller re-reads before repeating;
4. errors that name the connection, the call and the server's own words, with every
   known secret (passwords, tokens) masked.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import random as random_module
import ssl
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from controller import errors, redaction
from controller.clients import logins, ratelimit, responses, retrying, stats

if TYPE_CHECKING:
    from controller.manifests import Connection

log = logging.getLogger("converge.http")

# What we keep of an error answer's body: enough for any server message, and a bound on
# memory when a proxy answers with a multi-megabyte HTML page.
MAX_ERROR_BODY = 64 * 1024
OK_STATUSES = (200, 201, 202, 204)
# Paths whose full URL a session keeps ready: a client's fixed paths are a handful; item
# paths (one per object id) would grow without bound, so past this many they are not kept.
URL_CACHE_SIZE = 256

# The answer types live in their own modules; these names are this module's interface.
Headers = responses.Headers
HttpResponse = responses.HttpResponse
RequestStats = stats.RequestStats
default_error_message = responses.default_error_message


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HttpSettings:
    base_url: str
    connection: str  # the Connection's name, for error messages
    timeout: float = 30.0
    concurrency: int = 8  # most requests in flight (a semaphore)
    rate_limit: float | None = None  # most requests per second (token bucket)
    verify: bool | str = True  # False, True or a CA file path
    max_attempts: int = 5  # per call, for retryable failures
    max_retry_seconds: float = 60.0  # total time budget of one call's retries
    backoff_base: float = 0.2  # exponential backoff with full jitter

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    @classmethod
    def from_connection(
        cls, connection: Connection, *, base_url: str | None = None, **overrides: Any
    ) -> HttpSettings:
        """Settings for a Connection manifest; ``base_url`` replaces ``url: sandbox``."""
        verify: bool | str = connection.tls.verify
        if verify and connection.tls.ca_file:
            verify = connection.tls.ca_file
        values: dict[str, Any] = {
            "base_url": base_url or connection.url,
            "connection": connection.name,
            "timeout": connection.timeout,
            "concurrency": connection.concurrency,
            "rate_limit": connection.rate_limit,
            "verify": verify,
        }
        values.update(overrides)
        return cls(**values)


class Authenticator(Protocol):
    def login(self, session: HttpSession) -> Mapping[str, str]:
        """Log in (with ``authenticated=False`` calls); return the auth headers to send."""
        ...

    def logout(self, session: HttpSession, headers: Mapping[str, str]) -> None: ...

    def is_expired(self, response: HttpResponse) -> bool:
        """True when the answer means "log in again" (401; element's 400 invalid_request)."""
        ...


class _Failure(Exception):
    """A transport failure, classified: ``sent`` is False when the server never saw it."""

    def __init__(self, message: str, *, sent: bool, permanent: bool = False) -> None:
        super().__init__(message)
        self.sent = sent
        self.permanent = permanent


class HttpSession:
    def __init__(
        self,
        settings: HttpSettings,
        *,
        authenticator: Authenticator | None = None,
        secrets: Iterable[str] = (),
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        error_message: Callable[[HttpResponse], str] = default_error_message,
        random: Callable[[], float] = random_module.random,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.stats = stats.RequestStats()
        self._authenticator = authenticator
        self._secrets = frozenset(s for s in secrets if s)
        self._sleep = sleep
        self._error_message = error_message
        self._random = random
        self._clock = clock
        self._now = now
        self._slots = threading.BoundedSemaphore(settings.concurrency)
        self._bucket = (
            ratelimit.TokenBucket(settings.rate_limit, clock=clock, sleep=sleep)
            if settings.rate_limit
            else None
        )
        self._logins = logins.SharedLogin(self._login)
        self._closed = False
        # path → its URL joined to base_url. Joining parses both again on every call
        # (~60 us, a tenth of a request's CPU); a ready httpx.URL is taken as it is.
        self._urls: dict[str, httpx.URL] = {}
        self._client = httpx.Client(
            base_url=settings.base_url,
            timeout=httpx.Timeout(settings.timeout),
            headers=dict(headers or {}),
            transport=(
                transport
                if transport is not None
                else _Lanes(size=settings.concurrency, verify=_ssl_verify(settings.verify))
            ),
            trust_env=False,  # the manifest's URL and TLS settings are the whole truth
        )

    @property
    def connection(self) -> str:
        return self.settings.connection

    @property
    def secrets(self) -> frozenset[str]:
        return self._secrets

    def add_secrets(self, *values: str) -> None:
        """Mask these in every later message too (tokens learnt at login)."""
        self._secrets = self._secrets | {v for v in values if v}

    def redact(self, text: str) -> str:
        return redaction.redact(text, self._secrets)

    # -- the call --------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        authenticated: bool = True,
        ok: Collection[int] = OK_STATUSES,
        error_message: Callable[[HttpResponse], str] | None = None,
    ) -> HttpResponse:
        """Send one call, with login, retries and error mapping; returns an ``ok`` answer."""
        if self._closed:
            raise RuntimeError(f"{self.connection}: the HTTP session is closed")
        method = method.upper()
        path = path.split("?", 1)[0]  # never let a query string (maybe a secret) into errors
        if idempotent is None:
            idempotent = method in retrying.IDEMPOTENT_METHODS
        use_auth = authenticated and self._authenticator is not None
        budget = retrying.RetryBudget(
            max_attempts=self.settings.max_attempts,
            max_seconds=self.settings.max_retry_seconds,
            backoff_base=self.settings.backoff_base,
            clock=self._clock,
            random=self._random,
        )
        logged_in_again = False
        while True:
            budget.start_attempt()
            auth, generation = self._logins.headers() if use_auth else ({}, 0)
            sent_headers = {**auth, **(headers or {})}
            try:
                response = self._send(method, path, params, json, content, sent_headers)
            except _Failure as failure:
                if failure.permanent:
                    raise self._error(
                        errors.PermanentApiError, str(failure), method, path
                    ) from failure.__cause__
                if not failure.sent or idempotent:
                    delay = budget.next_delay()
                    if delay is not None:
                        self._pause(method, path, delay, str(failure))
                        continue
                raise self._error(
                    errors.TransientApiError, str(failure), method, path, maybe_applied=failure.sent
                ) from failure.__cause__

            if use_auth and self._authenticator and self._authenticator.is_expired(response):
                if not logged_in_again:
                    logged_in_again = True
                    budget.forgive_attempt()
                    self._logins.renew(generation)
                    continue
                raise self._status_error(response, error_message, cls=errors.AuthError)

            if response.status in ok:
                return response

            status = response.status
            if status in retrying.RETRY_ALWAYS or (
                idempotent and status in retrying.RETRY_IF_IDEMPOTENT
            ):
                retry_after = retrying.parse_retry_after(
                    response.headers.get("retry-after"), now=self._now()
                )
                delay = budget.next_delay(retry_after)
                if delay is not None:
                    self._pause(method, path, delay, f"HTTP {status}")
                    continue
                raise self._status_error(response, error_message, retry_after=retry_after)
            raise self._status_error(response, error_message, idempotent=idempotent)

    def close(self) -> None:
        """Log out if logged in (a failed logout never fails a run), then close the pool."""
        if self._closed:
            return
        auth = self._logins.take()
        if auth is not None and self._authenticator is not None:
            try:
                self._authenticator.logout(self, auth)
            except Exception as exc:  # by design: logout is best effort
                log.debug("%s: logout failed: %s", self.connection, self.redact(str(exc)))
        self._closed = True
        self._client.close()

    def __enter__(self) -> HttpSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- login -----------------------------------------------------------------------

    def _login(self) -> Mapping[str, str]:
        assert self._authenticator is not None
        self.stats.count_login()
        headers = self._authenticator.login(self)
        for value in headers.values():
            # "Bearer <token>": mask the whole value and the bare token.
            self.add_secrets(value, *value.split(None, 1)[1:])
        return headers

    # -- the wire --------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        json: Any,
        content: bytes | None,
        headers: Mapping[str, str],
    ) -> HttpResponse:
        if self._bucket is not None:
            self._bucket.acquire()
        with self._slots:
            self.stats.count_sent(method)
            started = time.perf_counter()
            try:
                url = self._urls.get(path)
                request = self._client.build_request(
                    method,
                    path if url is None else url,
                    params=params,
                    json=json,
                    content=content,
                    headers=headers,
                )
                if url is None and params is None and len(self._urls) < URL_CACHE_SIZE:
                    self._urls[path] = request.url
                raw = self._client.send(request, stream=True)
                try:
                    # Error answers are read only in part: a message needs the start.
                    body = _read_body(raw, whole=raw.status_code < 400)
                    status, raw_headers = raw.status_code, raw.headers.multi_items()
                finally:
                    raw.close()
            except Exception as exc:
                ms = (time.perf_counter() - started) * 1000
                failure = _classify(exc)
                log.debug(
                    "%s %s %s failed after %.0f ms: %s",
                    self.connection,
                    method,
                    path,
                    ms,
                    type(exc).__name__,
                )
                if failure is None:
                    raise
                raise failure from exc
        ms = (time.perf_counter() - started) * 1000
        log.debug("%s %s %s %d %.0f ms", self.connection, method, path, status, ms)
        return HttpResponse(
            status=status,
            headers=Headers(raw_headers),
            body=body,
            method=method,
            path=path,
            connection=self.connection,
            secrets=self._secrets,
        )

    def _pause(self, method: str, path: str, delay: float, why: str) -> None:
        self.stats.count_retry(method)
        log.debug("%s %s %s: %s, retrying in %.2f s", self.connection, method, path, why, delay)
        if delay > 0:
            self._sleep(delay)

    # -- errors ----------------------------------------------------------------------

    def _error(
        self, cls: type[errors.ApiError], message: str, method: str, path: str, **extra: Any
    ) -> errors.ApiError:
        return cls(
            self.redact(message), connection=self.connection, method=method, path=path, **extra
        )

    def _status_error(
        self,
        response: HttpResponse,
        error_message: Callable[[HttpResponse], str] | None,
        *,
        cls: type[errors.ApiError] | None = None,
        retry_after: float | None = None,
        idempotent: bool = True,
    ) -> errors.ApiError:
        extract = error_message or self._error_message
        try:
            message = extract(response)
        except Exception:  # an odd error body must not hide the error itself
            message = default_error_message(response)
        message = " ".join(str(message).split())[: responses.MAX_MESSAGE] or "(no message)"
        status = response.status
        where = {
            "connection": self.connection,
            "method": response.method,
            "path": response.path,
            "status": status,
        }
        if cls is None:
            cls = (
                errors.TransientApiError
                if status >= 500 or status == 429
                else errors.PermanentApiError
            )
        if cls is errors.TransientApiError:
            # A 5xx other than 503 may come after the work was done (a gateway timeout, a
            # crash while answering): a non-idempotent caller must re-read before repeating.
            maybe = not idempotent and status not in retrying.RETRY_ALWAYS
            return errors.TransientApiError(
                self.redact(message), retry_after=retry_after, maybe_applied=maybe, **where
            )
        return cls(self.redact(message), **where)  # type: ignore[arg-type]


class _Lanes(httpx.BaseTransport):
    """``size`` one-connection pools; each request takes a free one for as long as it runs.

    Why not one httpx pool of ``size`` connections: httpcore's pool re-examines every
    connection (polling each idle socket, and counting the idle ones once per idle one)
    under one lock twice per request, which cost ~0.3 ms of CPU per request at 16
    connections and made the threads queue on that lock. A lane's pool has one connection
    to examine. Everything else (HTTP/1.1, keep-alive expiry, TLS, timeouts, the httpx
    exceptions the session classifies) is httpx's own transport, unchanged.
    """

    def __init__(self, *, size: int, verify: bool | ssl.SSLContext) -> None:
        context = httpx.create_ssl_context(verify=verify, trust_env=False)  # one, shared
        one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        self._lanes = [
            httpx.HTTPTransport(verify=context, trust_env=False, limits=one) for _ in range(size)
        ]
        # Last in, first out: the most recently used connection is the one most likely
        # still open, and idle lanes at the bottom simply expire.
        self._free: queue.LifoQueue[httpx.HTTPTransport] = queue.LifoQueue()
        for lane in self._lanes:
            self._free.put(lane)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {}).get("pool")
        try:
            lane = self._free.get(timeout=timeout)
        except queue.Empty:
            raise httpx.PoolTimeout("no connection became free in time") from None
        try:
            response = lane.handle_request(request)
        except BaseException:
            self._free.put(lane)
            raise
        assert isinstance(response.stream, httpx.SyncByteStream)
        response.stream = _LaneStream(response.stream, release=lambda: self._free.put(lane))
        return response

    def close(self) -> None:
        for lane in self._lanes:
            lane.close()


class _LaneStream(httpx.SyncByteStream):
    """A response body that hands its lane back when closed (once, however often closed)."""

    def __init__(self, stream: httpx.SyncByteStream, *, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._stream)

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


def _read_body(raw: httpx.Response, *, whole: bool) -> bytes:
    if whole:
        return raw.read()
    chunks: list[bytes] = []
    size = 0
    for chunk in raw.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_ERROR_BODY:
            break  # the rest is dropped with the connection; messages need only the start
    return b"".join(chunks)[:MAX_ERROR_BODY]


def _classify(exc: Exception) -> _Failure | None:
    """An httpx exception as a _Failure (None: not ours, let it through)."""
    name = type(exc).__name__
    if isinstance(exc, httpx.ConnectError) and _is_certificate_error(exc):
        return _Failure(f"TLS certificate not trusted: {exc}", sent=False, permanent=True)
    if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError | httpx.PoolTimeout):
        return _Failure(f"cannot connect ({name}: {exc or 'no detail'})", sent=False)
    if isinstance(exc, httpx.TimeoutException):
        return _Failure(f"no answer in time ({name}); the request may have been applied", sent=True)
    if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
        return _Failure(
            f"connection lost before the answer ({name}: {exc or 'no detail'}); "
            "the request may have been applied",
            sent=True,
        )
    if isinstance(exc, httpx.HTTPError | httpx.InvalidURL | httpx.StreamError):
        return _Failure(f"{name}: {exc}", sent=False, permanent=True)
    return None


def _is_certificate_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(10):  # a bounded walk down the cause chain
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _ssl_verify(verify: bool | str) -> bool | ssl.SSLContext:
    # httpx 0.28 deprecates verify=<path>; a context built here says the same thing.
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return verify
