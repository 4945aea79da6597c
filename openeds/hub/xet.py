"""The Xet upload: hf_xet bounded by the run's budgets, watched while it runs, its failures as one line.

huggingface_hub 2.4 sends every file of `preupload_lfs_files` through hf_xet whenever hf_xet
imports and `HF_HUB_DISABLE_XET` is unset (`uses_xet`). hf_xet's Rust client then fetches a
write token from the Hub's `xet-write-token` route and talks to the Xet storage service (CAS)
itself: neither the project's HTTP timeouts (`openeds.timeouts`, huggingface_hub's httpx client)
nor its retry loop (`openeds.retry`) reach those requests. This module bounds them three ways, and
has hf_xet record each xorb it uploads for a re-run after a kill.

* **hf_xet's own settings** (`xet_settings`, set by `use_xet_settings` before the session that
  reads them starts): its connect timeout is `--timeout`, its read timeout `--timeout` plus the time
  one xorb takes at the slowest uplink provided for (`upload_wait`); its retries are as many as fit
  in `--retry-timeout` (`_retries`). hf_xet 1.8 reads them from the environment as durations
  with a unit (`"1500ms"`; a bare number is ignored, silently, for its default), when its session
  is made: huggingface_hub makes one per process, at the first Xet call, so a process whose
  settings change drops the old session (its next call makes one with the new settings). hf_xet
  waits `base * k**n` seconds before retry `n+1` (times a random factor in [0, 1)), `k` being the
  whole seconds of the base delay: a base of 1 s never grows, so the base is 2 s (2, 4, 8, ... s,
  each at most `RetryPolicy.max_delay`, which hf_xet calls `retry_max_duration`: the cap of one
  wait, not of all of them). Its published defaults were a 60 s connect and 300 s read timeout,
  5 retries up to 6 minutes apart, and none of it applied to the final shard upload, which has no
  read timeout at all (xet-core#685). Its read timeout runs from the last byte received, and an
  upload receives none until its answer: a xorb upload (up to 64 MiB, `XORB_BYTES`) not answered
  within the read timeout is cut and sent again from its start, however its body moves. A read
  timeout of `--timeout` alone cut every xorb upload longer than 30 s: one 64 MiB xorb on an uplink
  under 2.2 MB/s, and on faster ones the several xorbs hf_xet sends at once (it adds uploads while
  each would take under a minute: at `benchmarks/bench_xet_resume.py`'s uplink of 8.6 MB/s, 12 of 23
  xorb uploads cut, 1,204 MB sent for 515 MB). So the read timeout gives a xorb the time it takes at
  `SLOWEST_UPLINK` (256 KiB/s, 2 Mbit/s: 256 s) on top of `--timeout`, 286 s by default, near
  hf_xet's own 300 s: a slow upload that keeps moving is not cut above that rate, a transient hang
  is sent again after it, and a lasting one is the watchdog's (below) after `--retry-timeout` plus
  one `--timeout` of no byte moved. hf_xet's targets for its parallel uploads are lowered
  (`TARGET_RTT`, `HEALTHY_RTT`: it adds an upload while each would take under 15 s, not 60): as
  fast where the uplink is the limit (68 s against 67 for the 60 s upload above), and fewer xorbs
  in flight when a run is killed, which a re-run sends again (below: 0.97-0.99x what was unfinished,
  against up to 1.39x at hf_xet's own targets).
* **A record of each xorb as it is uploaded** (`resume_settings`): hf_xet records the xorbs it has
  uploaded in a shard under `HF_XET_CACHE` (`.../staging/shard-session/xorb_metadata`); a later
  session on the same cache merges those records and deduplicates against them, so a re-run after a
  kill does not send those xorbs again. By default it writes a record only at a xorb's completion
  20 s after the session began or 40 s after its last record (it dates each record 20 s ahead), or
  when 64 xorbs wait, and a re-run sends again every xorb completed since
  (`benchmarks/bench_xet_resume.py`, killed 18 and 54 s into a 60 s upload: 1.35x and 2.48x what
  the killed run had not finished).
  push.py has it write one after every xorb (`HF_XET_DATA_SESSION_XORB_METADATA_FLUSH_MAX_COUNT=1`;
  a value the user set stays): about 60 kB per xorb, kept until the next session's upload
  succeeds, whose shard registers those xorbs once more. The re-run then sends what the killed run
  had not finished (0.95-1.00x measured), and again the xorbs in flight at the kill that reached the
  service all the same (a killed process's sockets still send what they hold), unknown to hf_xet.
  The service's own deduplication knows only the chunks of files that an uploaded shard registers,
  and that shard is uploaded last: it does nothing for a killed run.
* **A watchdog** (`watch`): a thread that aborts the Xet session (huggingface_hub's
  `abort_xet_session`, written for Ctrl-C) when no TCP connection of the process has moved a byte
  for `--retry-timeout` plus one `--timeout`, as the kernel counts them (`TCP_INFO` of each socket
  in `/proc/self/fd`: bytes acknowledged plus bytes received; a file's read and write counters
  would not do, since the progress bars' redrawing keeps them moving). A long upload that keeps
  moving is never cut; an upload that hangs where hf_xet has no timeout (the shard upload), or waits
  for a xorb's answer longer than the budget, is.
  If the call still has not returned `GRACE` seconds after the abort, the watchdog prints the run's
  one `error:` line and ends the process (`os._exit(1)`): nothing was committed, since the commit
  comes after the upload. Without
  `/proc` or `TCP_INFO` (not Linux) there is no watchdog, and hf_xet's own settings are the bound.
* **One line per failure** (`describe_xet_error`): hf_xet raises Python's built-in
  `ConnectionError` (network errors, and the 4xx and 5xx of the token route and of the CAS),
  `TimeoutError`, `PermissionError` (`hf_xet.XetAuthenticationError`), `OSError` and
  `RuntimeError`; `openeds.hub.publishing._upload` turns them into `PublishError`s with what
  failed and what to do.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Final

from openeds import cli
from openeds.retry import RetryPolicy

logger = logging.getLogger(__name__)

#: seconds the watchdog waits, after aborting the Xet session, for the upload call to return
GRACE: Final = 5.0
#: hf_xet's base delay between retries: the smallest whose waits grow (see the module docstring)
BASE_DELAY: Final = 2.0
#: the largest xorb (the Xet protocol's limit), and the slowest uplink whose xorb uploads hf_xet's read timeout
#: waits for (bytes a second; the module docstring): hf_xet hears nothing back while it sends a xorb
XORB_BYTES: Final = 64 * 1024**2
SLOWEST_UPLINK: Final = 256 * 1024
#: hf_xet sends several xorbs at once, adding one while each upload would take under its target time (60 s by
#: default) and removing one when an upload takes longer than the healthy time (90 s): targets of 15 and 24 s keep
#: fewer xorbs in flight, so a killed run loses less (the module docstring), as fast where the uplink is the limit
TARGET_RTT: Final = 15.0
HEALTHY_RTT: Final = 24.0
_FDS = "/proc/self/fd"
#: where `struct tcp_info` (linux/tcp.h) holds tcpi_bytes_acked, then tcpi_bytes_received (u64 each)
_BYTES_ACKED = 120
_TCP_INFO_SIZE = 136


def uses_xet() -> bool:
    """Whether huggingface_hub sends this process's uploads through hf_xet (read at each call, as it does)."""
    from huggingface_hub.utils._runtime import is_xet_available  # not exported; _commit_api asks the same

    return is_xet_available()


def _ms(seconds: float) -> str:
    """A duration as hf_xet reads one: whole milliseconds, rounded up (past a float's last bit: 1.5 * 0.8 s is 1200)."""
    return f"{max(1, math.ceil(round(seconds * 1000, 6)))}ms"


def _retries(policy: RetryPolicy) -> int:
    """How many retries fit in the retry budget when each attempt waits its timeout, then hf_xet's next delay."""
    spent, retries = policy.timeout, 0
    while True:
        spent += min(BASE_DELAY * 2**retries, policy.max_delay) + policy.timeout
        if spent > policy.total + policy.timeout:
            return retries
        retries += 1


def upload_wait(policy: RetryPolicy) -> float:
    """hf_xet's read timeout: `--timeout`, plus the time one xorb takes to send at `SLOWEST_UPLINK`, since its
    answer (the first byte read) comes only once the whole body is sent."""
    return policy.timeout + XORB_BYTES / SLOWEST_UPLINK


def xet_settings(policy: RetryPolicy) -> dict[str, str]:
    """hf_xet's settings (environment variables) for the budgets of `policy`."""
    return {
        "HF_XET_CLIENT_CONNECT_TIMEOUT": _ms(policy.timeout),
        "HF_XET_CLIENT_READ_TIMEOUT": _ms(upload_wait(policy)),
        "HF_XET_CLIENT_AC_TARGET_RTT": _ms(TARGET_RTT),
        "HF_XET_CLIENT_AC_MAX_HEALTHY_RTT": _ms(HEALTHY_RTT),
        "HF_XET_CLIENT_RETRY_MAX_ATTEMPTS": str(_retries(policy)),
        "HF_XET_CLIENT_RETRY_BASE_DELAY": _ms(BASE_DELAY),
        "HF_XET_CLIENT_RETRY_MAX_DURATION": _ms(policy.max_delay),
    }


#: hf_xet's setting of how many uploaded xorbs may wait before it records them (module docstring), and its
#: older name, which hf_xet still reads (the newer wins where both are set)
FLUSH_MAX_COUNT: Final = "HF_XET_DATA_SESSION_XORB_METADATA_FLUSH_MAX_COUNT"
_FLUSH_MAX_COUNT_ALIAS: Final = "HF_XET_SESSION_XORB_METADATA_FLUSH_MAX_COUNT"


def resume_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """hf_xet's settings that make a re-run after a kill send only the xorbs not uploaded: record each xorb as it
    completes; none where the environment `environ` sets it already (the user's choice)."""
    if FLUSH_MAX_COUNT in environ or _FLUSH_MAX_COUNT_ALIAS in environ:
        return {}
    return {FLUSH_MAX_COUNT: "1"}


_applied: dict[str, str] | None = None


def use_xet_settings(policy: RetryPolicy) -> None:
    """Give hf_xet the budgets of `policy` from its next session on (dropping a session made with others), and
    have it record each xorb it uploads (`resume_settings`)."""
    global _applied
    settings = xet_settings(policy)
    os.environ.update(resume_settings(os.environ))
    os.environ.update(settings)
    if _applied is not None and _applied != settings:
        from huggingface_hub.utils._xet import abort_xet_session  # the one way to drop the process's session

        abort_xet_session()
    _applied = settings


def _tcp_bytes() -> dict[str, int] | None:
    """Bytes each TCP connection of this process has moved (sent and acknowledged, plus received), by socket;
    None where the kernel does not tell (no `/proc/self/fd` or no `TCP_INFO`: not Linux)."""
    try:
        fds = os.listdir(_FDS)
    except OSError:
        return None
    moved = {}
    for fd in fds:
        with contextlib.suppress(OSError, ValueError):
            target = os.readlink(f"{_FDS}/{fd}")
            if not target.startswith("socket:"):
                continue
            with socket.fromfd(int(fd), socket.AF_INET, socket.SOCK_STREAM) as sock:  # a duplicate: closed here
                info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
            if len(info) >= _TCP_INFO_SIZE:
                acked, received = struct.unpack_from("<QQ", info, _BYTES_ACKED)
                moved[target] = acked + received
    return moved


class Watch:
    """What `watch` saw: whether it aborted the session, and the line it would end the run with."""

    def __init__(self, line: Callable[[float], str]) -> None:
        self.fired = False
        self.idle = 0.0  # seconds without a byte moved when it fired
        self._line = line

    def line(self) -> str:
        return self._line(self.idle)


@contextlib.contextmanager
def watch(policy: RetryPolicy, line: Callable[[float], str]) -> Iterator[Watch]:
    """Run the block (a Xet upload) under a watchdog: when the process moves no byte for
    `policy.total + policy.timeout` seconds, abort the Xet session; if the block has not ended `GRACE`
    seconds later, print `error: {line(idle seconds)}` and end the process. The block sees the abort as
    an exception from hf_xet; `Watch.fired` then says it was the watchdog's."""
    state = Watch(line)
    if _tcp_bytes() is None or not hasattr(socket, "TCP_INFO"):
        yield state
        return
    limit = policy.total + policy.timeout
    done = threading.Event()

    def run() -> None:
        last, since = _tcp_bytes(), time.monotonic()
        while not done.wait(min(0.25, policy.timeout / 4)):
            moved = _tcp_bytes()
            if any(size > (last or {}).get(sock, 0) for sock, size in (moved or {}).items()):
                since = time.monotonic()
            last = moved
            if time.monotonic() - since > limit:
                state.fired, state.idle = True, time.monotonic() - since
                logger.debug("the Xet upload moved no byte for %.1f s: aborting it", state.idle)
                from huggingface_hub.utils._xet import abort_xet_session

                abort_xet_session()
                if not done.wait(GRACE):
                    _end(state.line())
                return

    thread = threading.Thread(target=run, name="xet-watchdog", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        done.set()
        thread.join()


def _end(line: str) -> None:
    """The last resort: the run's one error line, its progress bars closed first, then the end of the process
    (the upload call never returned): `openeds.cli.end_now`."""
    cli.end_now(f"error: {line}")


#: hf_xet's words for what failed, in the order they are looked for
_WHAT = (
    (re.compile(r"xet-(write|read)-token"), "the Hub's Xet token route"),
    (re.compile(r"/v\d/xorb"), "a xorb upload to the Xet storage service"),
    (re.compile(r"/v\d/shards"), "the shard upload to the Xet storage service"),
    (re.compile(r"/v\d/reconstructions"), "the Xet storage service"),
)
_STATUS = re.compile(r"\((\d{3}) [A-Z]")  # hf_xet: "HTTP status client error (401 Unauthorized)"
_URL = re.compile(r"https?://[^\s,;)\"']+")


def xet_status(error: BaseException) -> int | None:
    """The HTTP status an hf_xet error names, if any."""
    match = _STATUS.search(str(error))
    return int(match.group(1)) if match else None


def xet_target(error: BaseException) -> str:
    """What the failed request of an hf_xet error was for (the token route, a xorb, the shard), from its text."""
    text = str(error)
    return next((what for pattern, what in _WHAT if pattern.search(text)), "the Xet storage service")


def short_xet_error(error: BaseException) -> str:
    """An hf_xet error on one line: its type and text, URLs without their query (a signed URL's query is a
    credential), at most 300 characters."""
    text = " ".join(str(error).split())
    text = _URL.sub(lambda m: m.group(0).split("?", 1)[0], text)
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."
