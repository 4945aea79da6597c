"""Connect, read and write timeouts for every request the Hub and Kaggle clients make.

Neither client bounds a request by default: huggingface_hub 2.4 builds its shared `httpx2.Client`
with `timeout=None`, and kagglesdk's `requests.Session` sends without a timeout. A server that
accepts a connection and never answers would then hang a run whatever its retry budget. Both
functions here give one number of seconds (`RetryPolicy.timeout`, `--timeout`) to each phase of
each request: connecting, each read, each write (httpx2 also bounds the wait for a pooled
connection). It is never a deadline for a whole request, so a long transfer that keeps moving
is not cut; a transfer that stops moving fails with the client's timeout error, which
`openeds.retry` counts as transient and `openeds.retry.describe_timeout` puts into one line.

`use_hub_timeouts(seconds)` (called by `openeds.hub.connect`, before its first request):

* `huggingface_hub.set_client_factory`, the client's configurable HTTP backend: the client it
  makes is huggingface_hub's default one (its own event hooks, redirects) with `timeout` set,
  plus one request hook that fills in the phases a call left unbounded. Some calls pass
  `timeout=None` explicitly (`HfApi.dataset_info`, `repo_info`), which httpx2 takes as "no
  timeout" rather than "the client's default";
* `HF_HUB_ETAG_TIMEOUT` and `HF_HUB_DOWNLOAD_TIMEOUT`, the timeouts huggingface_hub passes
  itself to metadata calls and downloads (the card and the parquet footers are read through
  `get_session()` instead, each GET one attempt of the project's retry loop): the same
  value, in `huggingface_hub.constants`, where huggingface_hub reads them at each call (the
  environment variables are read once, at import). `--timeout` thus replaces whatever those
  variables say, so that one flag bounds every request.

The async client factory is left alone: nothing push.py runs uses it.

`use_kaggle_timeouts(seconds)` (called by `openeds.download` before it imports kaggle):
kagglesdk exposes no session setting, so every session a `KaggleHttpClient` opens gets an
`HTTPAdapter` whose requests without a timeout get `(seconds, seconds)` (requests' connect and
read timeouts; requests has no write timeout, and Kaggle's calls send small bodies). It is set
on the class, because `import kaggle` already authenticates, and checks an access token with a
request, before any of this project's code can reach its session. kaggle's own resume requests
in `KaggleApi.download_file` take their timeout as an argument, which `openeds.download` passes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import httpx2
import requests
from requests.adapters import HTTPAdapter

#: the phases of an httpx2 request's timeout
_PHASES = ("connect", "read", "write", "pool")


def use_hub_timeouts(seconds: float) -> None:
    """Every request huggingface_hub makes in this process from now on waits at most `seconds` per phase."""
    # imported here: openeds.download, which needs only the Kaggle half, does not import huggingface_hub
    from huggingface_hub import constants, set_client_factory

    constants.HF_HUB_ETAG_TIMEOUT = seconds  # type: ignore[assignment]  # the environment variable's int
    constants.HF_HUB_DOWNLOAD_TIMEOUT = seconds  # type: ignore[assignment]
    set_client_factory(functools.partial(_hub_client, seconds))  # closes the current client: the next call builds one


def _hub_client(seconds: float) -> httpx2.Client:
    """huggingface_hub's default client, with `seconds` for every phase of every request."""
    # the factory set_client_factory replaces (not exported: huggingface_hub.utils has no name for it)
    from huggingface_hub.utils._http import default_client_factory

    client = default_client_factory()
    client.timeout = httpx2.Timeout(seconds)
    hooks = client.event_hooks
    client.event_hooks = {**hooks, "request": [*hooks.get("request", []), _bounded_phases(seconds)]}
    return client


def _bounded_phases(seconds: float) -> Callable[[httpx2.Request], None]:
    def bound(request: httpx2.Request) -> None:
        """Give the phases this request left unbounded (`timeout=None`) `seconds`; keep those it set."""
        phases: Mapping[str, Any] = request.extensions.get("timeout") or {}
        request.extensions["timeout"] = {
            phase: seconds if phases.get(phase) is None else phases[phase] for phase in _PHASES
        }

    return bound


class TimeoutAdapter(HTTPAdapter):
    """An `HTTPAdapter` that sends a request given no timeout with `(seconds, seconds)` (connect, read)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        timeout = (self.seconds, self.seconds) if timeout is None else timeout
        return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)


def bound_session(session: requests.Session, seconds: float) -> requests.Session:
    """Mount a `TimeoutAdapter` on `session` for http and https; returns it."""
    for prefix in ("https://", "http://"):
        session.mount(prefix, TimeoutAdapter(seconds))
    return session


#: the seconds sessions of kagglesdk get; read when a session is opened
_kaggle_seconds: float | None = None


def use_kaggle_timeouts(seconds: float) -> None:
    """Every requests session kagglesdk opens in this process from now on bounds its requests by `seconds`."""
    # kagglesdk alone: importing kaggle would authenticate before the sessions are bounded
    from kagglesdk.kaggle_http_client import KaggleHttpClient

    global _kaggle_seconds
    _kaggle_seconds = seconds
    if getattr(KaggleHttpClient._init_session, "bounds_sessions", False):
        return
    opened = KaggleHttpClient._init_session

    @functools.wraps(opened)
    def init_session(self: KaggleHttpClient) -> requests.Session:
        fresh = self._session is None
        opened(self)
        if fresh and _kaggle_seconds is not None:
            bound_session(self._session, _kaggle_seconds)
        return self._session

    init_session.bounds_sessions = True  # type: ignore[attr-defined]
    KaggleHttpClient._init_session = init_session  # type: ignore[method-assign]
