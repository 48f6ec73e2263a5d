"""Real servers on loopback for the tracking tests: MLflow, PostgreSQL, an S3 endpoint (moto).

Each starts as a child process of the test session and is stopped by its own pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; log:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer in {timeout:.0f}s; log:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def _process(args: list[str], log: Path, health_url: str, env: dict[str, str] | None = None) -> Iterator[None]:
    with log.open("w") as handle:
        process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        _wait_http(health_url, process, log)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)  # the process group started for the server and its workers
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


@contextlib.contextmanager
def mlflow_server(backend_uri: str, root: Path) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 with proxied artifacts under ``root``; yields its URL."""
    port = free_port()
    (root / "artifacts").mkdir(parents=True, exist_ok=True)
    args = [
        str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", backend_uri, "--artifacts-destination", (root / "artifacts").as_uri(),
    ]
    url = f"http://127.0.0.1:{port}"
    with _process(args, root / "mlflow-server.log", f"{url}/health"):
        yield url


def postgres_missing() -> str | None:
    """Why a PostgreSQL server cannot be started here, or None when it can."""
    if not (shutil.which("initdb") and shutil.which("pg_ctl")):
        return "no initdb/pg_ctl on PATH (Debian: apt-get install postgresql)"
    try:
        import psycopg2  # noqa: F401  (SQLAlchemy's PostgreSQL driver, used by the MLflow server)
    except ImportError:
        return "psycopg2 is not installed (pip install psycopg2-binary)"
    return None


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1; yields a SQLAlchemy URI.

    initdb refuses to run as root, so as root the cluster runs as the
    ``postgres`` system user the Debian package creates.
    """
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    base = Path(tempfile.mkdtemp(prefix="bettersynth-pg-"))
    data = base / "data"
    try:
        if as_root:
            shutil.chown(base, "postgres")
        run = lambda *args: subprocess.run(prefix + list(args), check=True, capture_output=True, text=True)  # noqa: E731
        run("initdb", "-D", str(data), "-A", "trust", "-U", "bettersynth", "--no-sync")
        port = free_port()
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        run("pg_ctl", "-D", str(data), "-o", options, "-l", str(base / "postgres.log"), "-w", "start")
        try:
            yield f"postgresql+psycopg2://bettersynth@127.0.0.1:{port}/postgres"
        finally:
            run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def s3_server(root: Path) -> Iterator[str]:
    """moto's S3-compatible server on 127.0.0.1; yields its endpoint URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with _process(args, root / "moto.log", f"{url}/moto-api/"):
        yield url


@contextlib.contextmanager
def s3_bucket(root: Path, monkeypatch, bucket: str):
    """A moto S3 server with ``bucket`` made, test credentials in the environment (never in a config file);
    yields (boto3 client, endpoint URL)."""
    import boto3

    with s3_server(root) as endpoint:
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(key, value)
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket=bucket)
        yield client, endpoint
