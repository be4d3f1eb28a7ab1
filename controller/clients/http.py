"""The one door to the network: pooled sessions, login, retries and error mapping.

Every API client (``era``, ``element``, ``vcda``, ``commvault``) sends its calls through an
:class:`HttpSession`. Below it a wire carries each request (``wire`` builds the bytes,
``lanes`` sends them on plain sockets; ``transports`` carries them through an injected
httpx transport, the tests' fakes, and is the only module that imports ``httpx``). Every
wire failure arrives here as a classified ``wire.Failure`` and leaves as a
``controller.errors`` exception (``raise ... from exc``). What a session guarantees, so
the clients need not:

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
import random as random_module
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from controller import errors, redaction
from controller.clients import lanes, logins, ratelimit, responses, retrying, stats, wire
from controller.clients.wire import K

if TYPE_CHECKING:
    import httpx

    from controller.manifests import Connection

log = logging.getLogger("converge.http")

MAX_ERROR_BODY = wire.MAX_ERROR_BODY  # what we keep of an error answer's body
OK_STATUSES = (200, 201, 202, 204)
# Paths whose encoded target a session keeps ready: a client's fixed paths are a handful; item
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


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """One call for ``send_many``: its path below the base URL, its JSON body, and the
    statuses that mean done."""

    method: str
    path: str
    json: Any = None
    ok: Collection[int] = OK_STATUSES


@dataclasses.dataclass(frozen=True, slots=True)
class FirstAttempt:
    """A call's first attempt, made by ``send_many``: its answer or its wire failure, and
    the login generation it was sent with (for a renewal that must happen only once)."""

    outcome: HttpResponse | wire.Failure
    generation: int


class Authenticator(Protocol):
    def login(self, session: HttpSession) -> Mapping[str, str]:
        """Log in (with ``authenticated=False`` calls); return the auth headers to send."""
        ...

    def logout(self, session: HttpSession, headers: Mapping[str, str]) -> None: ...

    def is_expired(self, response: HttpResponse) -> bool:
        """True when the answer means "log in again" (401; element's 400 invalid_request)."""
        ...


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
        # path → its percent-encoded target below base_url, for the calls without params.
        self._urls: dict[str, str] = {}
        self._endpoint = wire.Endpoint(settings.base_url, headers=headers)
        self._wire: wire.Wire
        if transport is None:
            self._wire = lanes.Lanes(
                self._endpoint,
                size=settings.concurrency,
                timeout=settings.timeout,
                verify=settings.verify,
            )
        else:  # only then is httpx imported: a run against real servers never loads it
            from controller.clients import transports

            self._wire = transports.TransportWire(
                transport, origin=self._endpoint.origin, timeout=settings.timeout
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
        first: FirstAttempt | None = None,
    ) -> HttpResponse:
        """Send one call, with login, retries and error mapping; returns an ``ok`` answer.

        ``first``: what came of this call's first attempt, made by ``send_many``; it counts
        as this call's first attempt, and the call goes on from it.
        """
        if self._closed:
            raise RuntimeError(f"{self.connection}: the HTTP session is closed")
        method = method.upper()
        path = path.split("?", 1)[0]  # never let a query string (maybe a secret) into errors
        if idempotent is None:
            idempotent = method in retrying.IDEMPOTENT_METHODS
        use_auth = authenticated and self._authenticator is not None
        target = self._target(path, params)
        body, content_type = wire.encode_body(json, content)  # once, however many attempts
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
            try:
                if first is not None:
                    made, generation, first = first.outcome, first.generation, None
                    if isinstance(made, wire.Failure):
                        raise made
                    response = made
                else:
                    auth, generation = self._logins.headers() if use_auth else ({}, 0)
                    sent_headers = {**auth, **(headers or {})}
                    response = self._send(method, path, target, body, content_type, sent_headers)
            except wire.Failure as failure:
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

    @property
    def can_send_many(self) -> bool:
        """Whether ``send_many`` sends anything: on the sockets' wire, with no rate limit.

        Why not under a rate limit: its pauses would hold up every exchange under way in
        the one thread (and run down their deadlines), and the rate, not the client's CPU,
        sets the pace anyway, so each call goes from a thread of its own as before.
        """
        return isinstance(self._wire, lanes.Lanes) and self._bucket is None and not self._closed

    def send_many(
        self,
        calls: Iterable[tuple[K, Call]],
        on_answer: Callable[[K, HttpResponse], None],
        on_other: Callable[[K, FirstAttempt], None],
        *,
        most: int | None = None,
    ) -> None:
        """Send each call once, up to ``most`` (or ``concurrency``) at a time, all from
        this thread.

        ``on_answer`` gets each answer whose status is in its call's ``ok``; ``on_other``
        gets every other call that was sent (an error status, an expired login, a failure
        of the connection) with what came of it, to be handed to ``request(first=...)``,
        which carries on from there with its retries, login and errors as if it had made
        that attempt itself. A call that gets neither was never sent (one with a header
        that cannot be sent is passed over, for ``request`` to say why), unless this raises
        (a callback did, or Ctrl-C): the calls under way then are lost to us, as an
        interrupted ``request`` is. Calls are taken from ``calls`` one at a time, as a
        connection becomes free, and none after the first that is not a plain success: a
        429 or 503 asks for backoff, which ``request`` gives, and a server that fails one
        call most likely fails the next. Sends nothing unless ``can_send_many``.

        Its share of the session's ``concurrency`` slots is held for the whole run: it
        waits (up to the timeout) for one, takes as many more as are free, and more as
        other threads' calls end, up to ``most``; ``most`` below ``concurrency`` leaves the
        rest to other threads' calls. With no slot in time it sends nothing: the calls
        are for ``request`` to make.
        """
        lanes_wire = self._wire
        if not self.can_send_many or not isinstance(lanes_wire, lanes.Lanes):
            return
        auth: Mapping[str, str] = {}
        generation = 0
        if self._authenticator is not None:
            try:
                auth, generation = self._logins.headers()
            except errors.ConvergeError:
                return  # request() logs in again, or says why not
        authenticator = self._authenticator
        troubled = False  # an outcome that was not a plain success: send no more
        size = self.settings.concurrency if most is None else min(most, self.settings.concurrency)
        # The login above came first: a login's own request needs a slot, which this run
        # could be holding all of (concurrency 1).
        held = 1 if self._slots.acquire(timeout=self.settings.timeout) else 0
        while 0 < held < size and self._slots.acquire(blocking=False):
            held += 1

        def grow() -> bool:
            """One slot more, if one is free now and ``size`` allows: the run grows as other
            threads' calls end, instead of keeping the few slots that were free at first."""
            nonlocal held
            if held < size and self._slots.acquire(blocking=False):
                held += 1
                return True
            return False

        def requests() -> Iterator[tuple[tuple[K, Call], wire.Request]]:
            pending = iter(calls)
            # ``troubled`` is asked before the next call is taken: taking one may start it
            # (apply reports it as begun).
            while not troubled and (item := next(pending, None)) is not None:
                key, call = item
                target = self._target(call.path, None)
                body, content_type = wire.encode_body(call.json, None)
                try:
                    request = self._endpoint.request(
                        call.method, target, body=body, content_type=content_type, headers=auth
                    )
                except wire.Failure:
                    continue  # a header that cannot be sent: the caller's request() says so
                self.stats.count_sent(call.method)
                yield (key, call), request

        def answered(
            item: tuple[K, Call], outcome: wire.Answer | wire.Failure, seconds: float
        ) -> None:
            nonlocal troubled
            key, call = item
            ms = seconds * 1000
            if isinstance(outcome, wire.Failure):
                log.debug(
                    "%s %s %s failed after %.0f ms: %s",
                    *(self.connection, call.method, call.path, ms, outcome.kind),
                )
                troubled = True
                on_other(key, FirstAttempt(outcome, generation))
                return
            status, raw_headers, body = outcome
            log.debug("%s %s %s %d %.0f ms", self.connection, call.method, call.path, status, ms)
            response = HttpResponse(
                status=status,
                headers=Headers(raw_headers),
                body=body,
                method=call.method,
                path=call.path,
                connection=self.connection,
                secrets=self._secrets,
            )
            if status in call.ok and not (
                authenticator is not None and authenticator.is_expired(response)
            ):
                on_answer(key, response)
            else:
                troubled = True
                on_other(key, FirstAttempt(response, generation))

        try:
            if held:
                lanes_wire.send_many(requests(), answered, size=held, grow=grow)
        finally:
            for _ in range(held):
                self._slots.release()

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
        self._wire.close()

    def __enter__(self) -> HttpSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _target(self, path: str, params: Mapping[str, Any] | None) -> str:
        target = self._urls.get(path) if params is None else None
        if target is None:
            target = self._endpoint.target(path, params)
            if params is None and len(self._urls) < URL_CACHE_SIZE:
                self._urls[path] = target
        return target

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
        target: str,
        body: bytes,
        content_type: str | None,
        headers: Mapping[str, str],
    ) -> HttpResponse:
        if self._bucket is not None:
            self._bucket.acquire()
        with self._slots:
            self.stats.count_sent(method)
            started = time.perf_counter()
            try:
                request = self._endpoint.request(
                    method, target, body=body, content_type=content_type, headers=headers
                )
                status, raw_headers, answer = self._wire.send(request)
            except Exception as exc:
                ms = (time.perf_counter() - started) * 1000
                kind = exc.kind if isinstance(exc, wire.Failure) else type(exc).__name__
                log.debug(
                    "%s %s %s failed after %.0f ms: %s", self.connection, method, path, ms, kind
                )
                raise
        ms = (time.perf_counter() - started) * 1000
        log.debug("%s %s %s %d %.0f ms", self.connection, method, path, status, ms)
        return HttpResponse(
            status=status,
            headers=Headers(raw_headers),
            body=answer,
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
