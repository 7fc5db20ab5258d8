"""Bad networks between ``ServingClient`` and a real ``ModelServer``.

A TCP proxy on 127.0.0.1 (``tcp_proxy.py``) sits between a client and the
server and injects the faults: a client that reads slowly, one that never
reads its answer and then goes away, and a network partition (a black hole
both ways) that heals in three ways. A second client, connected directly,
gives the reference answers and shows that the server keeps serving others.

The partition tests that heal with ``"stale"`` (the old connection stays
black for good) need the client's gRPC keepalive; they shorten its timings
so that a dead connection is found in about a second.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from clinical_ner.text.document import Entity
from clinical_ner.serving import client as client_module
from clinical_ner.serving.client import ServingClient
from clinical_ner.serving.client_errors import RequestTimeoutError, ServerUnavailableError
from clinical_ner.serving.server import ModelServer
from tcp_proxy import Heal, ProxyConnection, TcpProxy
from helpers import MARKER, MODEL, expected_entities, text_request, wait_for

HEALS: list[Heal] = ["resume", "reset", "stale"]
# 64 documents (the server's default limit), 200 entities each: a response of
# about 200 KB, far more than the socket buffers between server and client.
LARGE = [f"note {number} " + "aspirin fever " * 100 for number in range(64)]
# Several requests of 2 documents, with the marker that must never leak.
STREAM = [f"{MARKER} {number} " + "aspirin fever " * (number % 4) for number in range(12)]


@pytest.fixture(scope="module")
def server(model_base: Path) -> Iterator[ModelServer]:
    server = ModelServer(model_base, MODEL, port=0)
    server.start()
    yield server
    server.stop(grace=1)


@pytest.fixture(scope="module")
def direct_target(server: ModelServer) -> str:
    return f"127.0.0.1:{server.bound_port}"


@pytest.fixture
def proxy(direct_target: str) -> Iterator[TcpProxy]:
    with TcpProxy(direct_target) as proxy:
        yield proxy


@pytest.fixture
def fast_keepalive(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients created now find a dead connection ~1 s into a call (by default: up to 70 s)."""
    monkeypatch.setattr(client_module, "_KEEPALIVE_TIME_MS", 200)
    monkeypatch.setattr(client_module, "_PING_TIMEOUT_MS", 1000)


def the_connection(proxy: TcpProxy) -> ProxyConnection:
    (connection,) = proxy.open_connections()
    return connection


def annotate_directly(target: str, texts: list[str]) -> list[list[Entity]]:
    with ServingClient(target, MODEL, batch_size=64, timeout=60, deadline=60) as client:
        return client.annotate(texts)


def partition_at_call(
    client: ServingClient, proxy: TcpProxy, number: int, then: Callable[[], None]
) -> None:
    """Make ``client``'s Predict call ``number`` start a partition, then call ``then``."""
    predict = client._predict_rpc
    calls = 0

    def predict_with_partition(request: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == number:
            proxy.partition()
            then()
        return predict(request, **kwargs)

    client._predict_rpc = predict_with_partition


def test_slow_client_gets_its_whole_answer_and_does_not_hold_up_others(
    direct_target: str, proxy: TcpProxy
) -> None:
    reference = annotate_directly(direct_target, LARGE)
    assert reference == [expected_entities(text) for text in LARGE]
    with ServingClient(
        proxy.target, MODEL, batch_size=64, timeout=60, deadline=60
    ) as slow, futures.ThreadPoolExecutor(max_workers=1) as background:
        slow.status()  # connected before the throttle, so only the answer crawls
        proxy.down_rate = 4096  # bytes/s: about 50 s for the whole answer
        slow_answer = background.submit(slow.annotate, LARGE)
        connection = the_connection(proxy)
        # The server has answered and is writing to a reader that barely reads.
        wait_for(lambda: connection.down_bytes > 8192, timeout=30, what="the answer to flow")
        with ServingClient(direct_target, MODEL, timeout=30, deadline=30) as other:
            for number in range(5):
                text = f"other client request {number}: " + "fever " * number
                assert other.annotate(text) == expected_entities(text)
        # Five answers went out while the slow one is still on its way.
        assert not slow_answer.done()
        proxy.down_rate = 1 << 20  # 1 MB/s: let the rest through so the test ends soon
        assert slow_answer.result(timeout=60) == reference


@pytest.mark.parametrize("goes_away", ["connection reset", "channel closed"])
def test_client_that_never_reads_its_answer_does_not_stop_the_server(
    model_base: Path, goes_away: str
) -> None:
    # One worker: a worker held by the silent client would block everyone.
    with ModelServer(model_base, MODEL, port=0, max_workers=1) as server, TcpProxy(
        f"127.0.0.1:{server.bound_port}"
    ) as proxy:
        direct = f"127.0.0.1:{server.bound_port}"
        channel = grpc.insecure_channel(proxy.target)
        try:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            stub.Predict(text_request(["fever"]), timeout=30)  # connected
            proxy.down_paused = True
            unread = stub.Predict.future(text_request(LARGE), timeout=60)
            connection = the_connection(proxy)
            # The server's answer piles up, unread, at the client's door.
            wait_for(
                lambda: connection.unread_from_server() > 4096, timeout=30, what="the answer"
            )
            with ServingClient(direct, MODEL, timeout=30, deadline=30) as other:
                assert other.annotate("aspirin") == expected_entities("aspirin")
            assert not unread.done()
            if goes_away == "connection reset":
                # As when the client's process dies or its network drops it.
                proxy.reset_connections()
                with pytest.raises(grpc.RpcError) as raised:
                    unread.result(timeout=30)
                assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
        finally:
            channel.close()  # "channel closed": the client cancels and hangs up
        with ServingClient(direct, MODEL, timeout=30, deadline=30) as other:
            assert other.annotate(LARGE[:8]) == [expected_entities(t) for t in LARGE[:8]]
        # New connections through the same path are served in full.
        proxy.reset_connections()
        proxy.down_paused = False
        with ServingClient(proxy.target, MODEL, timeout=30, deadline=30) as again:
            assert again.annotate("fever") == expected_entities("fever")


@pytest.mark.parametrize("heal", HEALS)
def test_partition_fails_within_the_deadline_then_the_same_client_recovers(
    direct_target: str,
    proxy: TcpProxy,
    fast_keepalive: None,
    heal: Heal,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reference = annotate_directly(direct_target, STREAM)
    deadline = 3.0
    with ServingClient(
        proxy.target, MODEL, batch_size=2, timeout=1.5, deadline=deadline
    ) as client, caplog.at_level(logging.WARNING):
        assert client.annotate("fever") == expected_entities("fever")  # connected
        proxy.partition()
        started = time.monotonic()
        with pytest.raises((RequestTimeoutError, ServerUnavailableError)) as raised:
            client.annotate(STREAM[:2])
        elapsed = time.monotonic() - started
        # The attempt's timeout ended it, or keepalive found the connection
        # dead and retries ran into the deadline.
        error = raised.value
        expected_code = (
            grpc.StatusCode.DEADLINE_EXCEEDED
            if isinstance(error, RequestTimeoutError)
            else grpc.StatusCode.UNAVAILABLE
        )
        assert error.code is expected_code
        assert elapsed < deadline + 5  # within the deadline (slack for a loaded machine)
        assert proxy.target in str(error)
        assert MARKER not in str(error)

        proxy.heal(heal)
        # Batches of 2, each retried on its own: every document exactly once, in order.
        assert client.annotate(STREAM) == reference
    assert MARKER not in caplog.text


@pytest.mark.parametrize("heal", HEALS)
def test_partition_healed_mid_stream_loses_and_duplicates_nothing(
    direct_target: str, proxy: TcpProxy, fast_keepalive: None, heal: Heal
) -> None:
    reference = annotate_directly(direct_target, STREAM)
    healer = threading.Timer(1.0, proxy.heal, args=(heal,))
    try:
        with ServingClient(
            proxy.target, MODEL, batch_size=2, timeout=5, deadline=30
        ) as client:
            partition_at_call(client, proxy, 3, healer.start)
            # The third batch meets the partition, which heals a second later.
            assert client.annotate(STREAM) == reference
    finally:
        if healer.is_alive() or healer.finished.is_set():
            healer.join()
    assert healer.finished.is_set()  # the partition did happen, mid-stream


def test_connection_silently_dropped_while_idle_is_replaced_on_the_next_request(
    direct_target: str, proxy: TcpProxy, fast_keepalive: None
) -> None:
    reference = annotate_directly(direct_target, STREAM)
    with ServingClient(proxy.target, MODEL, batch_size=2, timeout=5, deadline=30) as client:
        assert client.annotate("fever") == expected_entities("fever")
        # A NAT or firewall forgets the idle connection: it stays black for
        # good, with no FIN or RST to tell the client; new connections work.
        proxy.partition()
        proxy.heal("stale")
        assert client.annotate(STREAM) == reference
    # The fault was real: the old connection stayed black; a new one served.
    assert len(proxy.connections) == 2
