"""The one retry loop for the calls a client library does not retry itself (Hub and Kaggle).

`call_with_retries(call, what=..., classify=..., policy=...)` runs `call()` until it succeeds,
fails in a way `classify` says is not worth another try (the error is re-raised untouched), or
the budget is spent (`GaveUp`, carrying the last error). Two budgets:

* transient server errors (5xx, 429, a connection dropped mid-answer, a server that accepted the
  request and then sent nothing for `policy.timeout`): `policy.total` seconds from the first
  attempt, `--retry-timeout` on the command lines (default 600 s);
* an unreachable network or endpoint (DNS failure, connection refused, connect timeout):
  `min(policy.network_total, policy.total)` seconds, 60 s at most by default, counted from the
  first of an unbroken run of such failures. Retrying those for ten minutes only hides that the
  machine is offline or the endpoint is wrong.

Each wait is `RetryPolicy.wait`: exponential backoff with jitter, the exponent capped, never
less than `policy.floor` (half the first delay), jitter and `Retry-After: 0` included. A
`Retry-After` header is parsed by `parse_retry_after` only (delta-seconds or an HTTP-date); a
wait that would end past the budget is not started: the loop gives up at once instead.

The budgets bound the retries, not the attempts: an attempt ends on its own, because every
request runs under `policy.timeout` (`--timeout`, default 30 s), the longest a connect, or one
read or write of a request, may wait (`openeds.timeouts` gives it to both clients). It is not a
deadline for the whole request: a long upload or download that keeps moving is never cut. A
server that stops answering is therefore a transient failure like a 503, and a run whose server
never answers ends about `policy.total` plus one timeout after its first attempt. A caller whose
attempt can be long and make progress (the Kaggle download) passes `fresh_start`: a failure
after such progress starts the budgets again, so a download cut once after an hour is resumed
rather than given up, while one that keeps failing still ends.

`describe_timeout` turns a timeout of either client into one line naming the request, its host
and the phase that waited.

tenacity or stamina could run this loop, but the two budgets, the floor and the `Retry-After`
rule would be custom wait and stop callbacks anyway; a function this size needs no dependency.
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import errno
import math
import random
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import httpx2
import requests
import urllib3

_JITTER = random.Random()  # jitter needs no seed, and must not draw from the global random state
_MAX_EXPONENT = 64  # 2**64 times any first delay is past every max_delay; no float overflow after it
#: errno values of a connection that could not be made (the network, the route or the port)
_UNREACHABLE_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN}
)

DEFAULT_RETRY_TIMEOUT = 600.0
DEFAULT_NETWORK_TIMEOUT = 60.0
#: seconds a connect, or one read or write of a request, may wait (`--timeout`)
DEFAULT_TIMEOUT = 30.0

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter and two bounded budgets (see the module docstring).

    Retry ``n`` (0-based) waits between half and all of ``min(max_delay, first_delay * 2**n)``
    seconds, or what a ``Retry-After`` asks for, and never less than ``floor``. ``timeout`` is the
    per-phase timeout of each request an attempt makes (connect, each read, each write), not a
    deadline for the attempt.
    """

    first_delay: float = 1.0
    max_delay: float = 60.0
    total: float = DEFAULT_RETRY_TIMEOUT
    network_total: float = DEFAULT_NETWORK_TIMEOUT
    timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        numbers = (self.first_delay, self.max_delay, self.total, self.network_total, self.timeout)
        if (
            not all(math.isfinite(n) for n in numbers)
            or not (0 < self.first_delay <= self.max_delay)
            or min(self.total, self.network_total) < 0
            or self.timeout <= 0
        ):
            raise ValueError(
                f"RetryPolicy(first_delay={self.first_delay}, max_delay={self.max_delay}, total={self.total}, "
                f"network_total={self.network_total}, timeout={self.timeout}); expected finite numbers with "
                "0 < first_delay <= max_delay, total, network_total >= 0 and timeout > 0"
            )

    @property
    def floor(self) -> float:
        """The shortest wait between two attempts, whatever the jitter or a ``Retry-After`` says."""
        return self.first_delay / 2

    @property
    def network_budget(self) -> float:
        """Seconds an unreachable network or endpoint is retried: the smaller of the two budgets."""
        return min(self.network_total, self.total)

    def delay(self, retries: int) -> float:
        """Seconds to wait before retry number ``retries`` (0-based), jitter included."""
        ceiling = min(self.max_delay, self.first_delay * 2.0 ** min(max(retries, 0), _MAX_EXPONENT))
        return max(self.floor, _JITTER.uniform(ceiling / 2, ceiling))

    def wait(self, retries: int, retry_after: float | None = None) -> float:
        """The wait before retry ``retries``: the server's ``Retry-After`` if it gave one, never below ``floor``."""
        return self.delay(retries) if retry_after is None else max(self.floor, retry_after)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait: delta-seconds or an HTTP-date; None if absent or unreadable.

    A date in the past, or a negative number, means 0 (the caller's floor still applies).
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


@dataclass(frozen=True)
class Transient:
    """Why a failed attempt is worth another: a short description, the server's Retry-After, the kind."""

    description: str  # e.g. "HTTP 503: Service Unavailable" or "ConnectError: [Errno 111] Connection refused"
    retry_after: float | None = None
    unreachable: bool = False  # DNS failure, connection refused, connect timeout: the short network budget


class GaveUp(Exception):
    """The retries of `what` ran out of budget; `__cause__` is the last error."""

    def __init__(self, what: str, last: Transient, attempts: int, elapsed: float, budget: float, next_wait: float):
        self.what, self.last, self.attempts, self.elapsed = what, last, attempts, elapsed
        self.budget, self.next_wait = budget, next_wait
        super().__init__(f"could not {what}: {last.description} ({self.tally})")

    @property
    def tally(self) -> str:
        """e.g. `after 4 attempts in 9.6 s; the retry budget is 10 s`."""
        kind = "network budget" if self.last.unreachable else "retry budget"
        attempts = f"{self.attempts} attempt{'s' * (self.attempts != 1)}"
        text = f"after {attempts} in {self.elapsed:.1f} s; the {kind} is {self.budget:g} s"
        if self.last.retry_after is not None and self.last.retry_after > self.budget - self.elapsed:
            text += f", and the server asked to wait {self.last.retry_after:g} s more"
        return text


def call_with_retries(
    call: Callable[[], T],
    *,
    what: str,
    classify: Callable[[Exception], Transient | None],
    policy: RetryPolicy,
    on_retry: Callable[[Transient, int, float], None] | None = None,
    fresh_start: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, retried while ``classify(error)`` says the error is transient and the budget allows.

    ``classify`` returns None for an error not worth retrying (it is re-raised as is).
    ``on_retry(failure, retry_number, wait)`` is told of each retry before its wait (1-based).
    ``fresh_start()``, asked after each transient failure, says whether the failed attempt made
    enough progress to count as a new beginning: the budgets, the attempt count and the backoff
    then start again from that failure.
    Raises `GaveUp` from the last error when the next wait would end past the budget.
    """
    start = clock()
    unreachable_since: float | None = None
    attempts = 0
    while True:
        attempt_start = clock()
        attempts += 1
        try:
            return call()
        except Exception as error:
            failure = classify(error)
            if failure is None:
                raise
            now = clock()
            if fresh_start is not None and fresh_start():
                start, attempt_start, unreachable_since, attempts = now, now, None, 1
            if failure.unreachable:
                unreachable_since = attempt_start if unreachable_since is None else unreachable_since
                budget, since = policy.network_budget, unreachable_since
            else:
                unreachable_since = None
                budget, since = policy.total, start
            wait = policy.wait(attempts - 1, failure.retry_after)
            if now - since + wait > budget or now - start + wait > policy.total:
                raise GaveUp(what, failure, attempts, now - start, budget, wait) from error
            if on_retry is not None:
                on_retry(failure, attempts, wait)
            sleep(wait)


# -- classifying errors of httpx2 (huggingface_hub) and requests (kaggle) ----------------------------


def error_chain(error: BaseException) -> Iterator[BaseException]:
    """`error`, then its causes and contexts: clients wrap the socket error in one or more of their own."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def is_unreachable(error: BaseException) -> bool:
    """Whether `error` means no connection could be made: DNS failure, connection refused, no route, connect timeout.

    A connection that was made and then dropped, or a read timeout, is not: the server was there.
    """
    for link in error_chain(error):
        if isinstance(link, (socket.gaierror, ConnectionRefusedError, httpx2.ConnectTimeout, requests.ConnectTimeout)):
            return True
        if isinstance(link, OSError) and link.errno in _UNREACHABLE_ERRNOS:
            return True
    return False


def endpoint_of(error: BaseException) -> str | None:
    """The host (and port) a failed connection was aimed at, when the client recorded it."""
    for link in error_chain(error):
        conn = getattr(link, "conn", None)  # urllib3's NewConnectionError (requests): the proxy if there is one
        if conn is not None and getattr(conn, "host", None):
            return f"{conn.host}:{conn.port}" if getattr(conn, "port", None) else str(conn.host)
    for link in error_chain(error):
        if isinstance(link, httpx2.RequestError):
            try:
                url = link.request.url
            except RuntimeError:  # no request attached
                continue
            return f"{url.scheme}://{url.netloc.decode()}"
    return None


#: the phase each client's timeout exception names
_PHASES: tuple[tuple[type[BaseException], str], ...] = (
    (httpx2.ConnectTimeout, "connect"),
    (httpx2.ReadTimeout, "read"),
    (httpx2.WriteTimeout, "write"),
    (httpx2.PoolTimeout, "pool"),
    (urllib3.exceptions.ConnectTimeoutError, "connect"),
    (urllib3.exceptions.ReadTimeoutError, "read"),
    (requests.ConnectTimeout, "connect"),
    (requests.ReadTimeout, "read"),
)
_WAITED = {
    "connect": "could not connect",
    "read": "got no data",
    "write": "could send no data",
    "pool": "got no free connection",
}


def describe_timeout(error: BaseException, seconds: float | None = None, *, url: str | None = None) -> str | None:
    """One line for a timeout of httpx2 (huggingface_hub) or requests (kaggle), None if `error` is none.

    It names the request, its host, the phase that waited and for how long, e.g.
    `GET http://host/api/whoami-v2 got no data for 5 s (read timeout; --timeout sets it)`. An httpx2
    request records its own timeouts; for requests, `seconds` is the one the caller set, and `url`
    the request's URL when the error does not record it (a body that stopped arriving). The query
    string is left out: a storage URL signs its query, and the signature is a credential.
    """
    # urllib3's NewConnectionError (refused, no route) subclasses ConnectTimeoutError: it is no timeout
    chain = [link for link in error_chain(error) if not isinstance(link, urllib3.exceptions.NewConnectionError)]
    phase = next((name for link in chain for kind, name in _PHASES if isinstance(link, kind)), None)
    if phase is None:
        return None
    for link in chain:
        if isinstance(link, httpx2.TimeoutException):
            with contextlib.suppress(RuntimeError):  # RuntimeError: no request attached
                recorded = (link.request.extensions.get("timeout") or {}).get(phase)
                seconds = recorded if isinstance(recorded, (int, float)) else seconds
            break
    method, recorded_url = _request_of(chain)
    where = " ".join(filter(None, (method, recorded_url or (url and url.split("?", 1)[0])))) or "a request"
    if seconds is None:
        waited = "until its timeout"
    else:
        waited = f"for {seconds:g} s" if phase == "read" else f"within {seconds:g} s"
    return f"{where} {_WAITED[phase]} {waited} ({phase} timeout; --timeout sets it)"


def _request_of(chain: list[BaseException]) -> tuple[str | None, str | None]:
    """The method and the URL (without its query) of the request a chain of errors is about, when recorded."""
    for link in chain:
        request = None
        if isinstance(link, httpx2.RequestError):
            with contextlib.suppress(RuntimeError):
                request = link.request
        elif isinstance(link, requests.RequestException):
            request = link.request
        if request is not None and request.url:
            return request.method, str(request.url).split("?", 1)[0]
    for link in chain:  # urllib3 records the URL (absolute when sent through a proxy) and the connection pool
        url, pool = getattr(link, "url", None), getattr(link, "pool", None)
        if isinstance(url, str) and url:
            if url.startswith("/") and pool is not None:
                port = f":{pool.port}" if getattr(pool, "port", None) else ""
                url = f"{getattr(pool, 'scheme', 'http')}://{pool.host}{port}{url}"
            return None, url.split("?", 1)[0]
    return None, None


def one_line(error: BaseException) -> str:
    """`Type: first line of the message`, whitespace collapsed."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# -- command line ------------------------------------------------------------------------------------


def retry_timeout(text: str) -> float:
    """argparse type of `--retry-timeout`: a finite number of seconds, 0 or more."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds; expected 0 or more, e.g. 600")
    return seconds


def request_timeout(text: str) -> float:
    """argparse type of `--timeout`: a finite number of seconds, more than 0."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds; expected more than 0, e.g. {DEFAULT_TIMEOUT:g}"
        )
    return seconds


def add_retry_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--retry-timeout SECONDS`` (default 600) and ``--timeout SECONDS`` (default 30)."""
    parser.add_argument(
        "--retry-timeout",
        type=retry_timeout,
        default=DEFAULT_RETRY_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to keep retrying transient server errors (5xx, 429, a server that stopped answering) "
        f"(default {DEFAULT_RETRY_TIMEOUT:g}); an unreachable network or endpoint is retried for the smaller "
        f"of this and {DEFAULT_NETWORK_TIMEOUT:g} s",
    )
    parser.add_argument(
        "--timeout",
        type=request_timeout,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long one network request may wait to connect, or for the next data to arrive or leave "
        f"(default {DEFAULT_TIMEOUT:g}); a request that waits longer is retried as a transient error. "
        "It bounds each wait, not a whole transfer: a slow upload or download that keeps moving is not cut "
        "(through Xet, whose server answers a xorb of up to 64 MiB once it has all of it, each xorb is given "
        "this plus the time it takes at 256 KiB/s)",
    )
