"""Stop sending requests to an S3 endpoint that has stopped answering.

Why: an endpoint that hangs (it accepts connections and answers nothing) is not bounded by
per-request timeouts alone. s3fs tries every call five times and DVC goes on to the next file
after a failed one, so each object still to push waits out its own timeouts: a push of 12
objects frozen after 4 outlived a 6 s outage budget by over a minute.

Inside ``watch_s3()``, requests go without ``Expect: 100-continue`` (aiohttp waits for its answer
with no timeout at all), a request that times out marks the endpoint stalled, and from then on
every request is refused at once (``EndpointStalled``) instead of being sent, until a response
arrives from a request already in flight. ``StallWatch.reset()`` lets a retry probe the endpoint
again. Outside a watch the hooks do nothing. They are botocore event handlers registered for
every S3 client created after the first watch (``before-send`` and ``needs-retry``), so
aiobotocore (s3fs, DVC) and boto3 clients alike are covered.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from collections.abc import Iterator
from typing import Any


class EndpointStalled(ConnectionError):
    """A request not sent because an earlier one to the same endpoint timed out unanswered."""


@dataclass
class StallWatch:
    """The URL of a request that timed out with no answer since, if any; shared by the S3 client's threads
    (each change is one reference assignment)."""

    stalled_url: str | None = None

    def reset(self) -> None:
        self.stalled_url = None

    def note_timeout(self, url: str) -> None:
        self.stalled_url = url


_active: StallWatch | None = None
_registered = False
_register_lock = threading.Lock()


def _before_send(request: Any = None, **_: Any) -> None:
    """Refuse the request if the endpoint is stalled; otherwise send it without ``Expect: 100-continue``.

    Why drop the header: aiohttp waits for the "100 Continue" of a PUT with no timeout, so a
    hung endpoint holds each upload forever (the read timeout only starts once the body is
    sent). botocore never signs ``Expect``, and S3 takes a PUT without it.
    """
    watch = _active
    if watch is None:
        return
    if watch.stalled_url is not None:
        raise EndpointStalled(f"not sent: an earlier request to {watch.stalled_url} timed out unanswered")
    if request is not None and "Expect" in request.headers:
        del request.headers["Expect"]


def _note_outcome(response: Any = None, caught_exception: BaseException | None = None, **_: Any) -> None:
    """Record an answer or a timeout; returns None, so botocore's own retry decision stands."""
    from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

    watch = _active
    if watch is None:
        return
    if response is not None:
        watch.reset()
    elif isinstance(caught_exception, ReadTimeoutError | ConnectTimeoutError):
        watch.note_timeout(str(caught_exception.kwargs.get("endpoint_url", "the endpoint")))


def _register_hooks() -> None:
    """Add the two handlers to botocore's built-in list, which every new session registers."""
    global _registered
    with _register_lock:
        if _registered:
            return
        from botocore import handlers

        handlers.BUILTIN_HANDLERS.extend([("before-send.s3", _before_send), ("needs-retry.s3", _note_outcome)])
        _registered = True


@contextlib.contextmanager
def watch_s3() -> Iterator[StallWatch]:
    """Refuse S3 requests once one has timed out unanswered, for the block; a nested block shares the outer watch."""
    global _active
    _register_hooks()
    if _active is not None:
        yield _active
        return
    _active = StallWatch()
    try:
        yield _active
    finally:
        _active = None
