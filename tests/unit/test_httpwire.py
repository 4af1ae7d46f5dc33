"""The HTTP/1.1 protocol writes each response's head and first body part to the socket in one piece."""

from __future__ import annotations

import asyncio
import inspect
import re
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
from uvicorn.server import ServerState

from mlplatform.httpwire import CoalescingCycle, CoalescingHttpToolsProtocol, http_protocol, incompatibilities


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    await receive()
    parts = [b"one", b"two", b"three"] if scope["path"] == "/stream" else [b"hello " + scope["path"].encode()]
    length = sum(len(p) for p in parts)
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(length).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for i, part in enumerate(parts):
        await send({"type": "http.response.body", "body": part, "more_body": i < len(parts) - 1})


async def connect(
    kind: type[CoalescingHttpToolsProtocol] = CoalescingHttpToolsProtocol,
) -> tuple[CoalescingHttpToolsProtocol, RecordingTransport]:
    config = uvicorn.Config(app, http=kind, log_config=None)
    config.load()
    protocol = kind(config=config, server_state=ServerState(), app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_response_is_one_write() -> None:
    protocol, transport = await connect()
    protocol.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    await settle()
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b"\r\n\r\nhello /a")
    assert not transport.closed


async def test_pipelined_requests_are_answered_in_order() -> None:
    protocol, transport = await connect()
    protocol.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    await settle()
    assert [w.rsplit(b"\r\n\r\n", 1)[1] for w in transport.writes] == [b"hello /a", b"hello /b"]


async def test_a_streamed_body_sends_the_head_with_its_first_part() -> None:
    protocol, transport = await connect()
    protocol.data_received(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    await settle()
    assert len(transport.writes) == 3
    assert transport.writes[0].endswith(b"\r\n\r\none") and transport.writes[1:] == [b"two", b"three"]


async def test_connection_close_writes_the_answer_before_closing() -> None:
    protocol, transport = await connect()
    protocol.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await settle()
    assert transport.closed
    assert len(transport.writes) == 1 and b"connection: close" in transport.writes[0].lower()
    assert transport.writes[0].endswith(b"hello /a")


async def test_stopping_leaves_an_idle_connection_open_and_closes_it_after_its_next_answer() -> None:
    # uvicorn closed it at once: a request a proxy had just sent down it met a reset, and was lost.
    protocol, transport = await connect()
    protocol.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    await settle()
    protocol.shutdown()
    assert not transport.closed
    protocol.data_received(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    await settle()
    assert transport.writes[1].endswith(b"hello /b")
    assert b"connection: close" in transport.writes[1].lower()
    assert transport.closed


async def test_stopping_closes_a_busy_connection_once_it_is_answered() -> None:
    release = asyncio.Event()

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        await app(scope, receive, send)

    protocol, transport = await connect()
    protocol.app = slow
    protocol.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    await settle()
    protocol.shutdown()
    assert not transport.closed and transport.writes == []
    release.set()
    await settle()
    assert transport.writes[0].endswith(b"hello /a")
    assert b"connection: close" in transport.writes[0].lower()
    assert transport.closed


def test_the_server_uses_it() -> None:
    assert http_protocol() is CoalescingHttpToolsProtocol, (
        f"uvicorn {uvicorn.__version__} would be served with plain httptools: {incompatibilities()}"
    )


class StartRecordingProtocol(CoalescingHttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started: list[RequestResponseCycle] = []

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        self.started.append(cycle)
        super()._start_asgi_task(cycle, app)


async def test_every_request_cycle_is_started_through_the_hook_and_becomes_coalescing() -> None:
    protocol, transport = await connect(StartRecordingProtocol)
    assert isinstance(protocol, StartRecordingProtocol)
    protocol.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    await settle()
    assert len(protocol.started) == 2, (
        f"uvicorn {uvicorn.__version__} started {len(protocol.started)} of 2 requests through "
        "HttpToolsProtocol._start_asgi_task: the others are answered without CoalescingCycle"
    )
    for cycle in protocol.started:
        assert type(cycle) is CoalescingCycle
        for name in ("transport", "response_started"):
            assert name in vars(cycle), f"uvicorn's RequestResponseCycle has no attribute {name!r} any more"
        assert cycle.transport is transport, (
            "RequestResponseCycle.transport is not the connection's transport"
        )
        assert cycle.response_started is True


def test_uvicorn_writes_and_closes_only_through_the_cycles_transport() -> None:
    # CoalescingCycle holds the head by putting a stand-in at `self.transport` during `send`: a write that
    # goes any other way would overtake the held head.
    source = inspect.getsource(RequestResponseCycle.send)
    calls = re.findall(r"([\w.]+)\.(write|writelines|close)\(", source)
    assert ("self.transport", "write") in calls, (
        "RequestResponseCycle.send no longer calls self.transport.write"
    )
    elsewhere = sorted({f"{owner}.{method}" for owner, method in calls if owner != "self.transport"})
    assert not elsewhere, f"RequestResponseCycle.send now writes or closes through {elsewhere}"
    assert "self.response_started = True" in source, (
        "RequestResponseCycle.send no longer sets response_started"
    )


class ProtocolWithoutHook:
    pass


class ProtocolWithAnotherHook:
    def _start_asgi_task(self, cycle: Any, app: Any, context: Any) -> None:
        pass


class SlottedCycle:
    __slots__ = ("scope",)

    def __init__(self, scope: Any) -> None:
        self.scope = scope

    def send(self, message: Any) -> None:
        pass


def test_a_changed_uvicorn_is_named_rather_than_used() -> None:
    assert incompatibilities() == []
    assert incompatibilities(ProtocolWithoutHook, SlottedCycle) == [
        "ProtocolWithoutHook._start_asgi_task is missing",
        "ProtocolWithoutHook.shutdown(self) is missing",
        "SlottedCycle.__init__ takes no transport",
        "SlottedCycle has __slots__: its instances cannot become CoalescingCycle",
        "SlottedCycle.send is missing or not a coroutine function",
    ]
    assert incompatibilities(ProtocolWithAnotherHook) == [
        "ProtocolWithAnotherHook._start_asgi_task(self, cycle, app, context) is not (self, cycle, app)",
        "ProtocolWithAnotherHook.shutdown(self) is missing",
    ]
