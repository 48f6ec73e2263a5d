"""Bounded retries with exponential backoff for calls to remote services, and the one error an outage raises.

Why: a tracking server or a DVC remote that is briefly away (a restart, a
network blip) should cost a few seconds, and one that is really down should
fail fast with the URL it could not reach, not hang for minutes inside a
client's own retry loop or fail with a bare connection error. Every retry
path (``with_retries``, MLflow's HTTP client at the entry points and in the
steps, the DVC remote) ends in ``ServiceUnavailable``, which says in one line
which service, where, what was kept and how to resume; the time an outage
may cost is one budget, ``$BETTERSYNTH_OUTAGE_BUDGET_S`` (default 30 s).

Example::

    with_retries(lambda: repo.push(...), service="DVC remote", url="s3://team-data/dvc")
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

BUDGET_ENV = "BETTERSYNTH_OUTAGE_BUDGET_S"  # seconds an unreachable service may cost before the command fails
DEFAULT_BUDGET_S = 30.0
DEFAULT_KEPT = "local outputs"
DEFAULT_RESUME = "rerun the step once it answers"


def outage_budget() -> float:
    """The retry budget in seconds: ``$BETTERSYNTH_OUTAGE_BUDGET_S``, else 30."""
    raw = os.environ.get(BUDGET_ENV, "").strip()
    if not raw:
        return DEFAULT_BUDGET_S
    try:
        budget = float(raw)
    except ValueError:
        raise ValueError(f"{BUDGET_ENV}: {raw!r} is not a number of seconds") from None
    if not budget > 0:
        raise ValueError(f"{BUDGET_ENV}: {raw!r} must be above 0 seconds")
    return budget


class ServiceUnavailable(RuntimeError):
    """A remote service did not answer within the retry budget.

    Its text is one line: the service, its URL, the attempts made, the last
    error, what was kept and how to resume. Entry points fill in ``kept`` and
    ``resume`` with what they know (``explain``); ``parse`` reads the line back
    from a step's log.
    """

    LINE = re.compile(r"(?P<service>.+?) at (?P<url>.+?) unreachable after (?P<attempts>\d+) attempt\(s\)"
                      r"(?: over (?P<waited>[\d.]+)s)? \((?P<cause>.*)\); kept: (?P<kept>.*?); to resume: (?P<resume>.*)$")

    def __init__(self, service: str, url: str, attempts: int, waited: float | None, error: BaseException | str,
                 kept: str = "", resume: str = ""):
        super().__init__(service, url)
        self.service, self.url, self.attempts, self.waited = service, url, attempts, waited
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.cause = _first_line(text)
        self.kept, self.resume = kept or DEFAULT_KEPT, resume or DEFAULT_RESUME

    def explain(self, kept: str | None = None, resume: str | None = None) -> ServiceUnavailable:
        """Replace the defaults of ``kept`` and ``resume`` with what the caller knows (explicit ones stay)."""
        if kept and self.kept == DEFAULT_KEPT:
            self.kept = kept
        if resume and self.resume == DEFAULT_RESUME:
            self.resume = resume
        return self

    def __str__(self) -> str:
        waited = "" if self.waited is None else f" over {self.waited:.1f}s"
        return (f"{self.service} at {self.url} unreachable after {self.attempts} attempt(s){waited} ({self.cause}); "
                f"kept: {self.kept}; to resume: {self.resume}")

    @classmethod
    def parse(cls, text: str) -> ServiceUnavailable | None:
        """The last ``ServiceUnavailable`` line in ``text`` (a failed step's log), rebuilt; None if there is none."""
        marker = f"{cls.__name__}: "
        for line in reversed(text.splitlines()):
            if marker in line:
                found = cls.LINE.match(line.split(marker, 1)[1].strip())
                if found:
                    waited = float(found["waited"]) if found["waited"] else None
                    return cls(found["service"], found["url"], int(found["attempts"]), waited, found["cause"],
                               found["kept"], found["resume"])
        return None


def _first_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.strip().splitlines()[0].split()) if text.strip() else "no answer"
    return line if len(line) <= limit else line[:limit - 1] + "…"


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
    budget_s: float | None = None,
) -> T:
    """Run ``call``; on ``retry_on`` errors wait and try again, then raise ``ServiceUnavailable``.

    No try starts when the time spent, the next wait and one more try as long
    as the last would pass ``budget_s`` (default ``outage_budget()``).
    """
    budget_s = outage_budget() if budget_s is None else budget_s
    started = time.monotonic()
    delays = backoff.delays()
    for attempt in range(1, backoff.attempts + 1):
        tried = time.monotonic()
        try:
            return call()
        except retry_on as exc:
            now = time.monotonic()
            spent = now - started
            if attempt == backoff.attempts or spent + delays[attempt - 1] + (now - tried) > budget_s:
                raise ServiceUnavailable(service, url, attempt, spent, exc) from exc
            log.debug("%s at %s: attempt %d/%d failed (%s); retrying in %.1fs",
                      service, url, attempt, backoff.attempts, exc, delays[attempt - 1])
            time.sleep(delays[attempt - 1])
    raise AssertionError("unreachable")  # the loop returns or raises
