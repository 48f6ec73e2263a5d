"""``core.stalled_s3`` against a real hung endpoint: a listening socket that accepts and never answers.

After the first request times out, the next ones are refused without being sent (no second wait);
``reset`` lets one probe again; an answering endpoint clears the mark; outside a watch nothing is refused.
The moto version of the same hang, during a real DVC push, is ``test_faults_s3.py`` (slow).
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from bettersynth.core.stalled_s3 import EndpointStalled, watch_s3

boto3 = pytest.importorskip("boto3")
botocore_config = pytest.importorskip("botocore.config")
from botocore.exceptions import ReadTimeoutError  # noqa: E402

READ_TIMEOUT = 0.5


@pytest.fixture
def hung_endpoint():
    """A TCP endpoint that accepts connections (the kernel's backlog) and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def _client(endpoint: str):
    """A fresh session's client: sessions made after the first watch carry its hooks."""
    config = botocore_config.Config(connect_timeout=READ_TIMEOUT, read_timeout=READ_TIMEOUT, retries={"total_max_attempts": 1})
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1", config=config,
                                          aws_access_key_id="testing", aws_secret_access_key="testing")


def _timed(call) -> tuple[float, BaseException]:
    started = time.monotonic()
    with pytest.raises(Exception) as caught:
        call()
    return time.monotonic() - started, caught.value


def test_faults_after_one_unanswered_timeout_requests_are_refused_unsent_until_reset(hung_endpoint):
    with watch_s3() as watch:
        client = _client(hung_endpoint)
        put = lambda: client.put_object(Bucket="b", Key="k", Body=b"x")  # noqa: E731
        waited, first = _timed(put)
        assert isinstance(first, ReadTimeoutError) and waited >= READ_TIMEOUT
        assert watch.stalled_url is not None and hung_endpoint in watch.stalled_url
        waited, second = _timed(put)
        assert isinstance(second, EndpointStalled) and waited < READ_TIMEOUT / 2, (second, waited)
        watch.reset()  # a retry probes the endpoint again: one more full wait
        waited, third = _timed(put)
        assert isinstance(third, ReadTimeoutError) and waited >= READ_TIMEOUT


def test_faults_an_answer_from_a_request_in_flight_clears_the_mark(tmp_path):
    """Another request, already sent when the mark is set, gets an answer (a 404 is one): sending resumes."""
    answering = socket.socket()
    answering.bind(("127.0.0.1", 0))
    answering.listen(1)
    with watch_s3() as watch:
        client = _client(f"http://127.0.0.1:{answering.getsockname()[1]}")

        def reply() -> None:
            connection, _ = answering.accept()
            connection.recv(65536)
            watch.note_timeout("another request")  # the mark lands while this request is in flight
            connection.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            connection.close()

        replier = threading.Thread(target=reply, daemon=True)
        replier.start()
        _, error = _timed(lambda: client.head_object(Bucket="b", Key="k"))
        replier.join(timeout=5)
        assert not isinstance(error, EndpointStalled)
        assert watch.stalled_url is None
    answering.close()


def test_faults_outside_a_watch_nothing_is_refused(hung_endpoint):
    with watch_s3():  # registers the hooks for sessions made from now on
        pass
    client = _client(hung_endpoint)
    for _ in range(2):
        waited, error = _timed(lambda: client.put_object(Bucket="b", Key="k", Body=b"x"))
        assert isinstance(error, ReadTimeoutError) and waited >= READ_TIMEOUT  # sent and waited for, each time


def test_faults_a_put_through_s3fs_to_a_hung_endpoint_ends_at_its_read_timeout(hung_endpoint):
    """aiohttp waits for a PUT's "100 Continue" with no timeout: within a watch the header is not sent."""
    s3fs = pytest.importorskip("s3fs")
    outcome: list[BaseException] = []

    def put() -> None:
        fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=hung_endpoint, skip_instance_cache=True,
                               config_kwargs={"connect_timeout": READ_TIMEOUT, "read_timeout": READ_TIMEOUT,
                                              "retries": {"total_max_attempts": 1}})
        try:
            fs.pipe("bucket/key", b"x")
        except BaseException as exc:  # noqa: BLE001  handed to the test thread
            outcome.append(exc)

    with watch_s3():
        putter = threading.Thread(target=put, daemon=True)
        started = time.monotonic()
        putter.start()
        putter.join(timeout=20 * READ_TIMEOUT)
        assert not putter.is_alive(), "the PUT still waits for its 100 Continue"
    assert outcome and time.monotonic() - started < 20 * READ_TIMEOUT, outcome
