"""Bounded retries with exponential backoff for calls to remote services.

Why: a tracking server or a DVC remote that is briefly away (a restart, a
network blip) should cost a few seconds, and one that is really down should
fail the step fast with the URL it could not reach, not hang for minutes
inside a client's own retry loop or fail with a bare connection error.

Example::

    with_retries(lambda: repo.push(...), service="DVC remote", url="s3://team-data/dvc")
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class ServiceUnavailable(RuntimeError):
    """A remote service did not answer within the retry budget; the message names its URL."""

    def __init__(self, service: str, url: str, attempts: int, waited: float, error: BaseException):
        self.service, self.url, self.attempts = service, url, attempts
        super().__init__(
            f"{service} at {url} unreachable after {attempts} attempt(s) over {waited:.1f}s: "
            f"{type(error).__name__}: {error}. Local outputs are kept; rerun the step once it is back."
        )


@dataclass(frozen=True)
class Backoff:
    attempts: int = 3  # tries in all, the first included
    first_delay: float = 0.5  # seconds before the second try
    factor: float = 2.0  # each later delay is this many times the previous one
    max_delay: float = 8.0  # no single wait is longer than this

    def delays(self) -> list[float]:
        """The waits between tries: ``attempts - 1`` of them."""
        return [min(self.first_delay * self.factor**i, self.max_delay) for i in range(self.attempts - 1)]


DEFAULT_BACKOFF = Backoff()


def with_retries(
    call: Callable[[], T],
    service: str,
    url: str,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    backoff: Backoff = DEFAULT_BACKOFF,
) -> T:
    """Run ``call``; on ``retry_on`` errors wait and try again, then raise ``ServiceUnavailable``."""
    started = time.monotonic()
    delays = backoff.delays()
    for attempt in range(1, backoff.attempts + 1):
        try:
            return call()
        except retry_on as exc:
            if attempt == backoff.attempts:
                raise ServiceUnavailable(service, url, attempt, time.monotonic() - started, exc) from exc
            log.warning("%s at %s: attempt %d/%d failed (%s); retrying in %.1fs",
                        service, url, attempt, backoff.attempts, exc, delays[attempt - 1])
            time.sleep(delays[attempt - 1])
    raise AssertionError("unreachable")  # the loop returns or raises
