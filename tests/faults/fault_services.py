"""Services that are away, for the fault tests: a closed port, a port that accepts and never answers,
and an S3 endpoint that can be frozen and thawed.

Why both: a stopped server refuses connections at once, a hung one (a stopped
process, a dropped network) lets the client wait for its read timeout; the
outage budget must bound each.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tracking_servers import BIN, _wait_http, free_port


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


@contextlib.contextmanager
def pausable_moto(root: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """moto's S3 server in its own process on loopback; yields (endpoint, process).

    Why the process: SIGSTOP freezes it mid-request, as an endpoint that hangs
    does, and SIGCONT brings it back with its in-memory buckets intact (a
    killed moto would lose them). Stopped by its own process group id.
    """
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with (root / "moto.log").open("w") as log:
        process = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"{endpoint}/moto-api/", process, root / "moto.log")
        yield endpoint, process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGCONT)
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def size_limited_folder(folder: Path, size: str) -> Iterator[Path]:
    """``folder`` as a tmpfs of ``size`` (e.g. ``96k``, ``16m``; root only); skips the test where mounting is refused."""
    import pytest

    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"no size-limited folder: mount -t tmpfs refused ({mounted.stderr.strip() or mounted.returncode})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
