"""Error classification: the Hub's HTTP errors as one-line `PublishError`s, and which are worth a retry.

Every request of `openeds.hub` that huggingface_hub sends once goes through `_retry`: connection
errors, 5xx, 408 and 429 are retried within the budgets of a `RetryPolicy` (`openeds.retry`); any
other failure becomes one line naming the step, what the Hub said, what the failure leaves on the
Hub (`outcome`) and whether re-running helps. A 401 says the Hub rejected the token; a 403 is left to
`_explain_access`, which names the user and the namespace, or the gate of a gated repo; an answer
that is not what the Hub's API sends (not JSON, or JSON of another shape) names the endpoint.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, TypeVar

import httpx2
import huggingface_hub
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

from openeds.retry import (
    GaveUp,
    RetryPolicy,
    Transient,
    call_with_retries,
    describe_timeout,
    endpoint_of,
    error_chain,
    is_unreachable,
    parse_retry_after,
)

logger = logging.getLogger(__name__)


NOTHING_PUBLISHED: Final = "nothing was published"
#: What to do after the Hub refused a request (a status retrying cannot change).
_REFUSAL_ADVICE: Final = {
    400: "re-running will not help: the Hub found the request malformed; report it with the Hub's message",
    413: "re-running will not help: the request is too large for the Hub; publish fewer splits per run (--splits)",
    422: "re-running will not help until what the Hub's message names is fixed",
}

T = TypeVar("T")


class PublishError(RuntimeError):
    """A publication that cannot go on. One line: what was wrong, the value seen, what was expected, the fix."""


DEFAULT_RETRY: Final = RetryPolicy()


def _token_rejected(endpoint: str, what: str, outcome: str) -> PublishError:
    return PublishError(
        f"the Hugging Face token was rejected by {endpoint} (401 Unauthorized) when trying to {what}; "
        "expected a valid token with write access (one the Hub accepted earlier in the run may have been revoked "
        f"or expired since); {outcome}; create one at https://huggingface.co/settings/tokens "
        "and set HF_TOKEN or run `hf auth login --force`"
    )


def _not_the_hub(what: str, endpoint: str, seen: str, outcome: str) -> PublishError:
    """The one line for an answer that is not what the Hub API sends (a captive portal, a wrong HF_ENDPOINT)."""
    return PublishError(
        f"could not {what}: {endpoint} answered with {seen}, not what the Hugging Face Hub API sends; expected the "
        f"Hub's API at {endpoint}; {outcome}; check HF_ENDPOINT and the proxy settings (a captive portal or a wrong "
        "endpoint answers with a web page), then re-run"
    )


class _explain_access:
    """Turn a 403 from the Hub inside the block into one PublishError naming the user and the namespace,
    or the gate of a gated repo (403 or 401 with `X-Error-Code: GatedRepo`)."""

    def __init__(self, api: HfApi, repo_id: str, user: str) -> None:
        self.api, self.repo_id, self.user = api, repo_id, user

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: object) -> None:
        http = _http_error(error) if isinstance(error, Exception) and not isinstance(error, PublishError) else None
        if http is None:
            return
        status = _status(http)
        namespace, name = self.repo_id.split("/")
        if isinstance(http, GatedRepoError):
            raise PublishError(
                f"{self.repo_id} is a gated dataset and user {self.user!r} has not been granted access to it "
                f"({status} GatedRepo from {self.api.endpoint}); expected a token that may read and write it; "
                f"{NOTHING_PUBLISHED}; ask for access at {self.api.endpoint}/datasets/{self.repo_id}, use the token "
                f"of a member of {namespace!r} with write rights, or publish to {own_repo(self.user, self.repo_id)}"
            ) from error
        if status != 403:
            return
        raise PublishError(
            f"user {self.user!r} may not write to {self.repo_id} ({status} from {self.api.endpoint}); "
            f"expected a token with write access to the namespace {namespace!r}; "
            f"use the token of a member of {namespace!r} with write rights, or publish to "
            f"{own_repo(self.user, self.repo_id)}"
        ) from error


def own_repo(user: str, repo_id: str) -> str:
    """The repo the advice of a refusal of `repo_id` names: the user's own of the same name, never `repo_id` again."""
    namespace, name = repo_id.split("/")
    return f"{user}/{name}" if namespace != user else f"another repo of your own (--repo-id {user}/NAME)"


def _storage_refusal(error: BaseException) -> tuple[str, str] | None:
    """``(url, what it said)`` if `error` is a 403 of an upload to storage (the PUT to the URL the LFS batch call
    handed out: a signed URL that expired, or whose signature the storage refuses), not of the Hub's API, which
    huggingface_hub calls with GET and POST only. The URL without its query (the signature)."""
    for link in error_chain(error):
        response = getattr(link, "response", None)
        try:
            request = response.request if response is not None else None  # httpx raises when it has none
        except RuntimeError:
            request = None
        if request is not None and request.method == "PUT" and _status(link) == 403:
            said = " ".join(response.text.split()) if response.text else ""
            return str(request.url).split("?")[0], said[:300] or _server_message(link)
    return None


#: how huggingface_hub says the LFS batch call answered an `error` for an object (a ValueError, the call itself a 200)
_BATCH_ERROR: Final = re.compile(r"Encountered error for file with OID (\S+): `?(.*)")


def _lfs_refusals(error: BaseException) -> list[tuple[str, str]] | None:
    """``[(oid, what the Hub said)]`` if `error` is huggingface_hub's for an LFS batch answer that refuses objects
    one by one (each with an ``error`` of its own, in an answer that is a 200), else None."""
    for link in error_chain(error):
        if isinstance(link, ValueError) and str(link).startswith("LFS batch API returned errors"):
            return [(m[1], " ".join(m[2].split())) for m in map(_BATCH_ERROR.search, str(link).splitlines()) if m]
    return None


def _http_error(error: BaseException) -> HfHubHTTPError | None:
    """The first HTTP error of the Hub in the chain of `error` (a client may wrap it in an error of its own)."""
    return next((link for link in error_chain(error) if isinstance(link, HfHubHTTPError)), None)


def _not_the_api(error: BaseException) -> str | None:
    """What was seen, if `error` comes from an answer that is not what the Hub's API sends, else None: text that
    is not JSON, or JSON that huggingface_hub fails to read (a key missing, a list for an object)."""
    if decode := next((link for link in error_chain(error) if isinstance(link, json.JSONDecodeError)), None):
        return f"text that is not JSON ({_describe(decode)})"
    if isinstance(error, (KeyError, TypeError, AttributeError, IndexError)) and _raised_in(error, _CLIENT_DIR):
        return f"JSON of another shape ({_describe(error)})"
    return None


#: The client's own code: an error raised there while reading an answer is the answer's fault.
_CLIENT_DIR: Final = str(Path(huggingface_hub.__file__).parent)


def _raised_in(error: BaseException, folder: str) -> bool:
    """Whether the innermost frame of `error`'s traceback is code under `folder`."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename.startswith(folder)


def _status(error: BaseException) -> int | None:
    """The HTTP status of the first response in the chain of `error`, if any."""
    for link in error_chain(error):
        if isinstance(status := getattr(getattr(link, "response", None), "status_code", None), int):
            return status
    return None


def _server_message(error: BaseException) -> str:
    for link in error_chain(error):
        if isinstance(link, HfHubHTTPError) and link.server_message:
            return " ".join(link.server_message.split())
    return _describe(error)


def _describe(error: BaseException) -> str:
    first_line = next(iter(str(error).strip().splitlines()), "")
    return f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__


def _classify(error: Exception) -> Transient | None:
    """A 5xx, a 408 or 429, or a transport error is worth another try; anything else is not."""
    if isinstance(error, PublishError):
        return None
    status = _status(error)
    if status is not None:
        if status in (408, 429) or status >= 500:
            response = next(link.response for link in error_chain(error) if getattr(link, "response", None) is not None)
            retry_after = parse_retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None
            return Transient(f"HTTP {status}: {_server_message(error)}", retry_after)
        return None
    transport = next((link for link in error_chain(error) if isinstance(link, httpx2.TransportError)), None)
    if transport is None:
        return None
    root = list(error_chain(error))[-1]
    description = describe_timeout(error) or _describe(root if root is not transport else transport)
    return Transient(description, unreachable=is_unreachable(error))


def _refused(what: str, error: BaseException, outcome: str, *, advice: str | None = None) -> PublishError:
    """The one line for a request the Hub answered with a status that retrying cannot change."""
    status = _status(error)
    advice = advice or _REFUSAL_ADVICE.get(
        status or 0, "re-running will not help until the cause the Hub names is fixed"
    )
    return PublishError(
        f"could not {what}: the Hub answered HTTP {status}: {_server_message(error)}; "
        f"expected it to accept the request; {outcome}; {advice}"
    )


def _retry(
    policy: RetryPolicy,
    what: str,
    call: Callable[[], T],
    *,
    passthrough: Sequence[int] = (403,),
    outcome: str | Callable[[], str] = NOTHING_PUBLISHED,
    endpoint: str = "",
) -> T:
    """`call()`, retried on transient errors within `policy`; every failure becomes one PublishError line.

    HTTP errors with a status in `passthrough` are re-raised for the caller to explain; `outcome`
    says what the failure leaves on the Hub (the default: nothing was published). A 401 says the Hub
    rejected the token (unless 401 is passed through and the error is a `RepositoryNotFoundError`,
    the Hub's answer for a repo it does not show); an answer that is not JSON says that `endpoint`
    (default: HF_ENDPOINT) is not the Hub's API.
    """

    def said() -> str:
        return outcome() if callable(outcome) else outcome

    try:
        return call_with_retries(
            call,
            what=what,
            classify=_classify,
            policy=policy,
            on_retry=lambda failure, n, wait: logger.warning(
                "Could not %s (%s); retry %d in %.1f s", what, failure.description, n, wait
            ),
        )
    except GaveUp as gave_up:
        error = gave_up.__cause__ or gave_up
        if gave_up.last.unreachable:
            endpoint = endpoint_of(error) or endpoint or constants.ENDPOINT
            raise PublishError(
                f"could not {what}: the network or the Hub endpoint {endpoint} is unreachable "
                f"({gave_up.last.description}; {gave_up.tally}); expected a connection to {endpoint}; "
                f"check the network connection, the proxy settings and HF_ENDPOINT, then re-run; {said()}"
            ) from error
        raise PublishError(
            f"could not {what}: {gave_up.last.description} ({gave_up.tally}); expected the Hub to answer; "
            f"{said()}; re-run later, or with a longer --retry-timeout"
        ) from error
    except Exception as error:
        if isinstance(error, PublishError):
            raise
        endpoint = endpoint or constants.ENDPOINT
        http = _http_error(error)
        if isinstance(http, GatedRepoError):
            raise  # explained by _explain_access
        if http is None:
            if seen := _not_the_api(error):
                raise _not_the_hub(what, endpoint, seen, said()) from error
            raise
        status = _status(http)
        if status == 401 and not (401 in passthrough and isinstance(http, RepositoryNotFoundError)):
            raise _token_rejected(endpoint, what, said()) from error
        if status in passthrough:
            raise
        raise _refused(what, http, said()) from error
