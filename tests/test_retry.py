"""openeds.retry and openeds.timeouts: the one retry loop of the Hub and Kaggle paths, and the
timeouts every request of both clients runs under.

The schedule is checked with an explicit clock (no sleeping); which errors count as an
unreachable network is checked against real sockets: a refused connection on a closed local
port, a DNS failure on an `.invalid` host, and a server that accepts and then hangs up. The
timeouts are checked with the real clients against local servers that never answer, that stop
sending mid-body, and that send slowly but steadily (which no timeout may cut).
"""

from __future__ import annotations

import argparse
import email.utils
import socket
import threading
import time
from collections.abc import Iterator

import httpx2
import pytest
import requests
from huggingface_hub import HfApi, constants, get_session, set_client_factory
from huggingface_hub.utils._http import default_client_factory

from openeds import timeouts
from openeds.retry import (
    GaveUp,
    RetryPolicy,
    Transient,
    call_with_retries,
    describe_timeout,
    endpoint_of,
    is_unreachable,
    parse_retry_after,
    request_timeout,
    retry_timeout,
)
from openeds.timeouts import (
    TimeoutAdapter,
    bound_session,
    use_hub_timeouts,
    use_kaggle_timeouts,
)
from tests.hub_server import SilentServer

pytestmark = pytest.mark.datasets_independent("the retry loop on real sockets")

SERVER_ERROR = Transient("HTTP 503")
UNREACHABLE = Transient("ConnectionRefusedError: [Errno 111] Connection refused", unreachable=True)


# --- the schedule -------------------------------------------------------------------------------


@pytest.mark.parametrize("retries", [0, 1, 10, 63, 64, 65, 1100, 10**9])
def test_delay_is_bounded_for_any_attempt_count(retries):
    policy = RetryPolicy(first_delay=1.0, max_delay=60.0)
    for _ in range(200):
        delay = policy.delay(retries)  # RetryPolicy().delay(1100) used to raise OverflowError
        assert policy.floor <= delay <= min(60.0, 2.0 ** min(retries, 64)), (retries, delay)


def test_no_wait_is_shorter_than_the_floor_jitter_and_retry_after_included():
    policy = RetryPolicy(first_delay=0.2, max_delay=1.0)
    assert policy.floor == pytest.approx(0.1)
    assert min(policy.delay(0) for _ in range(2000)) >= 0.1
    assert policy.wait(0, retry_after=0.0) == pytest.approx(0.1)  # `Retry-After: 0` still waits
    assert policy.wait(5, retry_after=7.5) == 7.5


def test_network_budget_is_the_smaller_of_the_two():
    assert RetryPolicy().network_budget == 60
    assert RetryPolicy(total=5).network_budget == 5
    assert RetryPolicy(total=600, network_total=2).network_budget == 2


@pytest.mark.parametrize(
    "options",
    [
        {"first_delay": 0},
        {"first_delay": 2, "max_delay": 1},
        {"total": -1},
        {"network_total": -1},
        {"total": float("inf")},
        {"first_delay": float("nan")},
        {"timeout": 0},
        {"timeout": -1},
        {"timeout": float("inf")},
    ],
)
def test_bad_policies_are_refused(options):
    with pytest.raises(ValueError, match=r"RetryPolicy\(.*expected finite numbers"):
        RetryPolicy(**options)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("-3", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(value, seconds):
    assert parse_retry_after(value) == seconds


def test_parse_retry_after_reads_an_http_date():
    now = time.time()
    header = email.utils.formatdate(now + 90, usegmt=True)
    assert parse_retry_after(header, now=now) == pytest.approx(90, abs=1)


# --- the loop, on an explicit clock ----------------------------------------------------------------


class Clock:
    """`clock` and `sleep` for call_with_retries: sleeping advances the time, nothing waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Flaky:
    """A call that fails with the given outcomes in turn (an exception class's failure, or a value to return)."""

    def __init__(self, *outcomes: Transient | str) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self) -> str:
        outcome = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        if isinstance(outcome, Transient):
            raise _Failure(outcome)
        return outcome


class _Failure(Exception):
    def __init__(self, transient: Transient) -> None:
        super().__init__(transient.description)
        self.transient = transient


def run(call: Flaky, policy: RetryPolicy, clock: Clock) -> str:
    def classify(error: Exception) -> Transient | None:
        return error.transient if isinstance(error, _Failure) else None

    return call_with_retries(call, what="fetch x", classify=classify, policy=policy, clock=clock, sleep=clock.sleep)


def test_transient_failures_are_retried_until_success():
    clock = Clock()
    assert run(Flaky(SERVER_ERROR, SERVER_ERROR, "ok"), RetryPolicy(), clock) == "ok"
    assert len(clock.sleeps) == 2 and 0.5 <= clock.sleeps[0] <= 1 and 1 <= clock.sleeps[1] <= 2


def test_server_errors_stop_within_the_total_budget():
    clock = Clock()
    call = Flaky(SERVER_ERROR)
    with pytest.raises(GaveUp) as gave_up:
        run(call, RetryPolicy(total=100), clock)
    assert 40 < clock.now <= 100  # most of the budget, never past it
    assert gave_up.value.attempts == call.calls == len(clock.sleeps) + 1
    assert str(gave_up.value).startswith(f"could not fetch x: HTTP 503 (after {call.calls} attempts in ")
    assert "the retry budget is 100 s" in str(gave_up.value)
    assert isinstance(gave_up.value.__cause__, _Failure)


def test_an_unreachable_network_gets_the_short_budget():
    clock = Clock()
    with pytest.raises(GaveUp) as gave_up:
        run(Flaky(UNREACHABLE), RetryPolicy(total=600), clock)
    assert 30 < clock.now <= 60  # not ten minutes
    assert gave_up.value.last.unreachable and "the network budget is 60 s" in str(gave_up.value)


def test_the_network_budget_counts_an_unbroken_run_of_unreachable_failures():
    clock = Clock()
    policy = RetryPolicy(first_delay=1, max_delay=1, total=600, network_total=3)
    # Unreachable for ~2 s, then a server error, then unreachable again for ~2 s: never 3 s in a row.
    outcomes = [UNREACHABLE] * 3 + [SERVER_ERROR] + [UNREACHABLE] * 3 + ["ok"]
    assert run(Flaky(*outcomes), policy, clock) == "ok"
    with pytest.raises(GaveUp):
        run(Flaky(*[UNREACHABLE] * 10, "ok"), policy, Clock())


def test_retry_after_zero_still_waits_the_floor():
    clock = Clock()
    rate_limited = Transient("HTTP 429", retry_after=0.0)
    with pytest.raises(GaveUp) as gave_up:
        run(Flaky(rate_limited), RetryPolicy(first_delay=1, total=3), clock)
    assert clock.sleeps and min(clock.sleeps) == 0.5
    assert gave_up.value.attempts <= 3 / 0.5 + 1  # no hammering


def test_a_retry_after_past_the_budget_gives_up_at_once():
    clock = Clock()
    with pytest.raises(GaveUp) as gave_up:
        run(Flaky(Transient("HTTP 429", retry_after=3600.0)), RetryPolicy(total=600), clock)
    assert clock.sleeps == [] and gave_up.value.attempts == 1
    assert "the server asked to wait 3600 s more" in str(gave_up.value)


def test_other_errors_are_raised_untouched():
    def call() -> str:
        raise KeyError("not transient")

    with pytest.raises(KeyError, match="not transient"):
        call_with_retries(call, what="x", classify=lambda e: None, policy=RetryPolicy(), sleep=pytest.fail)


def test_a_zero_budget_tries_once():
    clock = Clock()
    with pytest.raises(GaveUp) as gave_up:
        run(Flaky(SERVER_ERROR), RetryPolicy(total=0), clock)
    assert gave_up.value.attempts == 1 and clock.sleeps == []


def test_a_failure_after_real_progress_starts_the_budgets_again():
    clock = Clock()
    call = Flaky(SERVER_ERROR)
    restarted = []

    def fresh_start() -> bool:  # the third attempt had moved the download on before it failed
        if call.calls == 3:
            restarted.append(clock.now)
        return call.calls == 3

    with pytest.raises(GaveUp) as gave_up:
        call_with_retries(
            call,
            what="fetch x",
            classify=lambda e: e.transient,
            policy=RetryPolicy(max_delay=2, total=10),
            fresh_start=fresh_start,
            clock=clock,
            sleep=clock.sleep,
        )
    [since] = restarted
    assert since + 8 < clock.now <= since + 10  # (waits of 2 s at most) the second budget, used nearly whole
    assert gave_up.value.elapsed <= 10 and gave_up.value.attempts == call.calls - 2  # counted from the fresh start
    assert 1 <= clock.sleeps[1] <= 2 and clock.sleeps[2] <= 1  # the backoff started again too


def test_retry_timeout_argument():
    assert retry_timeout("30") == 30.0 and retry_timeout("0") == 0.0
    for bad in ("-1", "soon", "inf", "nan"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected 0 or more"):
            retry_timeout(bad)


def test_timeout_argument():
    assert request_timeout("30") == 30.0 and request_timeout("0.5") == 0.5
    for bad in ("0", "-1", "soon", "inf", "nan"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected more than 0, e.g. 30"):
            request_timeout(bad)


# --- unreachable or not: real sockets --------------------------------------------------------------


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local port bound but not listening: a connection to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def hangs_up() -> Iterator[int]:
    """A local server that accepts a connection and closes it without answering; yields its port."""
    for url in _serve(lambda connection, released: connection.close()):
        yield int(url.rsplit(":", 1)[1])


def _error_of(call) -> Exception:
    try:
        call()
    except Exception as error:
        return error
    raise AssertionError("the call did not fail")


def test_refused_and_dns_failures_are_unreachable_for_httpx2(closed_port):
    refused = _error_of(lambda: get_session().get(f"http://127.0.0.1:{closed_port}/api/whoami-v2"))
    assert isinstance(refused, httpx2.ConnectError) and is_unreachable(refused)
    assert endpoint_of(refused) == f"http://127.0.0.1:{closed_port}"
    unknown = _error_of(lambda: get_session().get("http://hub.openeds.invalid/api/whoami-v2"))
    assert is_unreachable(unknown) and endpoint_of(unknown) == "http://hub.openeds.invalid"


def test_refused_and_dns_failures_are_unreachable_for_requests(closed_port):
    refused = _error_of(lambda: requests.post(f"http://127.0.0.1:{closed_port}/api", timeout=5))
    assert isinstance(refused, requests.ConnectionError) and is_unreachable(refused)
    assert endpoint_of(refused) == f"127.0.0.1:{closed_port}"
    proxy = {"http": "http://proxy.openeds.invalid:3128"}
    unknown = _error_of(lambda: requests.post("http://localhost/api", proxies=proxy, timeout=5))
    assert is_unreachable(unknown) and endpoint_of(unknown) == "proxy.openeds.invalid:3128"


def test_a_server_that_hangs_up_is_not_unreachable(hangs_up):
    dropped = _error_of(lambda: get_session().get(f"http://127.0.0.1:{hangs_up}/api/whoami-v2"))
    assert isinstance(dropped, httpx2.TransportError) and not is_unreachable(dropped)
    dropped = _error_of(lambda: requests.get(f"http://127.0.0.1:{hangs_up}/", timeout=5))
    assert isinstance(dropped, requests.ConnectionError) and not is_unreachable(dropped)


# --- timeouts: the real clients against servers that stop answering --------------------------------

TIMEOUT = 0.3


@pytest.fixture
def silent() -> Iterator[str]:
    """An endpoint that accepts connections and never answers."""
    with SilentServer() as server:
        yield server.url


def _serve(answer) -> Iterator[str]:
    """A local HTTP/1.1 server whose connections get `answer(connection, released)`; yields its URL."""
    server = socket.create_server(("127.0.0.1", 0))
    released = threading.Event()

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            connection.recv(65536)
            threading.Thread(target=answer, args=(connection, released), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    released.set()
    server.close()


@pytest.fixture
def stalls() -> Iterator[str]:
    """Sends the headers and 5 of the 100 bytes announced, then nothing, the connection kept open."""

    def answer(connection: socket.socket, released: threading.Event) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello")
        released.wait(30)
        connection.close()

    yield from _serve(answer)


@pytest.fixture
def trickles() -> Iterator[str]:
    """Sends 20 bytes, one every 0.1 s: 2 s in all, but never TIMEOUT seconds without data."""

    def answer(connection: socket.socket, released: threading.Event) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n")
        for _ in range(20):
            time.sleep(0.1)
            connection.sendall(b"x")
        connection.close()

    yield from _serve(answer)


@pytest.fixture
def hub_timeouts() -> Iterator[float]:
    """huggingface_hub bounded by TIMEOUT for the test; its default client and timeouts after it."""
    etag, download = constants.HF_HUB_ETAG_TIMEOUT, constants.HF_HUB_DOWNLOAD_TIMEOUT
    use_hub_timeouts(TIMEOUT)
    yield TIMEOUT
    set_client_factory(default_client_factory)
    constants.HF_HUB_ETAG_TIMEOUT, constants.HF_HUB_DOWNLOAD_TIMEOUT = etag, download


@pytest.fixture
def kaggle_timeouts() -> Iterator[float]:
    before = timeouts._kaggle_seconds
    use_kaggle_timeouts(TIMEOUT)
    yield TIMEOUT
    timeouts._kaggle_seconds = before


def _timed(call) -> tuple[Exception, float]:
    started = time.monotonic()
    error = _error_of(call)
    return error, time.monotonic() - started


def test_a_hub_request_without_an_answer_times_out_and_says_where(silent, hub_timeouts):
    error, seconds = _timed(lambda: get_session().get(f"{silent}/api/whoami-v2"))
    assert isinstance(error, httpx2.ReadTimeout) and TIMEOUT <= seconds < TIMEOUT + 2
    assert (
        describe_timeout(error) == f"GET {silent}/api/whoami-v2 got no data for 0.3 s (read timeout; --timeout sets it)"
    )
    assert not is_unreachable(error)  # the server was there: the retry budget, not the network budget


def test_a_hub_call_that_asks_for_no_timeout_gets_one(silent, hub_timeouts):
    # HfApi.dataset_info passes timeout=None, which httpx2 takes as "wait forever".
    error, seconds = _timed(lambda: HfApi(endpoint=silent).dataset_info("someone/data"))
    assert TIMEOUT <= seconds < TIMEOUT + 2
    assert (
        describe_timeout(error) == f"GET {silent}/api/datasets/someone/data got no data for 0.3 s "
        "(read timeout; --timeout sets it)"
    )


def test_huggingface_hubs_own_timeouts_are_the_same(hub_timeouts):
    assert constants.HF_HUB_ETAG_TIMEOUT == constants.HF_HUB_DOWNLOAD_TIMEOUT == TIMEOUT


def test_a_hub_body_that_stalls_times_out_and_the_query_is_not_said(stalls, hub_timeouts):
    error, seconds = _timed(lambda: get_session().get(f"{stalls}/file.parquet?X-Amz-Signature=secret"))
    assert isinstance(error, httpx2.ReadTimeout) and seconds < TIMEOUT + 2
    assert (
        describe_timeout(error) == f"GET {stalls}/file.parquet got no data for 0.3 s (read timeout; --timeout sets it)"
    )


def test_a_slow_transfer_that_keeps_moving_is_not_cut(trickles, hub_timeouts):
    response = get_session().get(f"{trickles}/slow")  # 2 s in all, far past TIMEOUT: no deadline on the whole
    assert response.content == b"x" * 20
    assert requests.get(f"{trickles}/slow", timeout=(TIMEOUT, TIMEOUT)).content == b"x" * 20


def test_a_requests_session_bounded_by_the_adapter_times_out(silent, stalls):
    session = bound_session(requests.Session(), TIMEOUT)
    error, seconds = _timed(lambda: session.post(f"{silent}/api/v1/x", json={}))
    assert isinstance(error, requests.ReadTimeout) and TIMEOUT <= seconds < TIMEOUT + 2
    assert (
        describe_timeout(error, TIMEOUT) == f"POST {silent}/api/v1/x got no data for 0.3 s (read timeout; "
        "--timeout sets it)"
    )
    response = session.get(f"{stalls}/archive.zip?sig=secret", stream=True)  # the headers arrive, the body stalls
    error, seconds = _timed(lambda: b"".join(response.iter_content(1024)))
    assert isinstance(error, requests.ConnectionError) and seconds < TIMEOUT + 2
    assert (
        describe_timeout(error, TIMEOUT, url=response.url) == f"{stalls}/archive.zip got no data for 0.3 s "
        "(read timeout; --timeout sets it)"
    )
    error, seconds = _timed(lambda: session.get(f"{silent}/", timeout=1.0))
    assert isinstance(error, requests.ReadTimeout) and seconds >= 1.0  # a timeout the caller set is kept
    assert isinstance(session.get_adapter("https://kaggle.com"), TimeoutAdapter)


def test_every_session_kagglesdk_opens_is_bounded(silent, kaggle_timeouts):
    from kagglesdk.kaggle_http_client import KaggleHttpClient

    use_kaggle_timeouts(TIMEOUT)  # a second call does not wrap kagglesdk twice
    client = KaggleHttpClient()
    client._init_session()
    error, seconds = _timed(lambda: client._session.post("http://localhost/api/v1/x", proxies={"http": silent}))
    assert isinstance(error, requests.ReadTimeout) and TIMEOUT <= seconds < TIMEOUT + 2


def test_a_refused_connection_is_no_timeout(closed_port):
    refused = _error_of(lambda: requests.post(f"http://127.0.0.1:{closed_port}/api", timeout=5))
    assert describe_timeout(refused, 5) is None  # urllib3's NewConnectionError subclasses ConnectTimeoutError
