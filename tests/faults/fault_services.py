"""Services that are away, for the fault tests: a closed port, and a port that accepts and never answers.

Why both: a stopped server refuses connections at once, a hung one (a stopped
process, a dropped network) lets the client wait for its read timeout; the
outage budget must bound each.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

from tracking_servers import free_port


def closed_port() -> int:
    """A loopback port nothing listens on (taken from the kernel, then released)."""
    return free_port()


@contextlib.contextmanager
def hung_server() -> Iterator[str]:
    """``http://127.0.0.1:<port>``: connections are accepted by the kernel and never read or answered."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
