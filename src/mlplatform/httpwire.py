"""uvicorn's httptools protocol, writing a response's head and body to the socket in one piece.

uvicorn writes the status line and headers when the app sends `http.response.start`, and the body when it
sends `http.response.body`: two `send` system calls and two TCP segments per answer. A prediction answer is a
few hundred bytes, so half of its socket work went to the head alone. Here the head is held until the first
body message and both leave in one write. Everything else (parsing, flow control, keep-alive, pipelining)
is uvicorn's own, but for what happens to idle keep-alive connections when the server stops.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import structlog
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

log = structlog.get_logger(__name__)


class _HeldWrites:
    """Stands in for the transport while uvicorn writes: keeps the bytes, passes everything else on."""

    __slots__ = ("parts", "transport")

    def __init__(self, transport: asyncio.Transport, parts: list[bytes]) -> None:
        self.transport = transport
        self.parts = parts

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    def flush(self) -> None:
        if self.parts:
            data = b"".join(self.parts) if len(self.parts) > 1 else self.parts[0]
            self.parts = []
            self.transport.write(data)

    def close(self) -> None:  # `Connection: close`: what is held goes out first
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class CoalescingCycle(RequestResponseCycle):
    """A request/response cycle whose head waits for the first body message."""

    _held: list[bytes] | None = None

    async def send(self, message: Any) -> None:
        kind = message["type"]
        if kind == "http.response.start" and not self.response_started:
            held = _HeldWrites(self.transport, [])
            self.transport = held  # type: ignore[assignment]
            try:
                await super().send(message)
            finally:
                self.transport = held.transport
            self._held = held.parts
            return
        if kind == "http.response.body" and self._held is not None:
            held = _HeldWrites(self.transport, self._held)
            self._held = None
            self.transport = held  # type: ignore[assignment]
            try:
                await super().send(message)
            finally:
                self.transport = held.transport
                if not held.transport.is_closing():
                    held.flush()
            return
        await super().send(message)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """`server.*`'s HTTP/1.1 protocol: uvicorn's httptools one with `CoalescingCycle`, and a shutdown that
    leaves idle keep-alive connections for the client to close."""

    stopping = False

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        cycle.__class__ = CoalescingCycle  # same fields; only `send` differs
        if self.stopping:
            cycle.keep_alive = False  # answered with `Connection: close`, then the connection closes
        super()._start_asgi_task(cycle, app)

    def shutdown(self) -> None:
        """The server is stopping (it no longer accepts connections). uvicorn would close an idle keep-alive
        connection here at once; but a client (a proxy such as nginx) may have sent a request down it at that
        very moment, and that request then meets a reset: lost, and a proxy resends no POST. So an idle
        connection stays open: its next request, if one comes, is answered and the connection closed after
        it; otherwise the client closes it, or uvicorn's keep-alive timeout does (`timeout_keep_alive`, 5 s:
        a proxy's own idle timeout should be shorter). A connection in the middle of a request is closed
        once it is answered, as uvicorn does."""
        self.stopping = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False


def incompatibilities(
    protocol: type[Any] = HttpToolsProtocol, cycle: type[Any] = RequestResponseCycle
) -> list[str]:
    """What of uvicorn's internals the classes above rely on is missing or changed (empty: all there)."""
    problems = []
    start = getattr(protocol, "_start_asgi_task", None)
    if not callable(start):
        problems.append(f"{protocol.__name__}._start_asgi_task is missing")
    elif (names := list(inspect.signature(start).parameters)) != ["self", "cycle", "app"]:
        problems.append(f"{protocol.__name__}._start_asgi_task({', '.join(names)}) is not (self, cycle, app)")
    shutdown = getattr(protocol, "shutdown", None)
    if not callable(shutdown) or list(inspect.signature(shutdown).parameters) != ["self"]:
        problems.append(f"{protocol.__name__}.shutdown(self) is missing")
    if "transport" not in inspect.signature(cycle.__init__).parameters:
        problems.append(f"{cycle.__name__}.__init__ takes no transport")
    if "__slots__" in vars(cycle):  # a subclass with another layout could not take its place
        problems.append(
            f"{cycle.__name__} has __slots__: its instances cannot become {CoalescingCycle.__name__}"
        )
    if not inspect.iscoroutinefunction(getattr(cycle, "send", None)):
        problems.append(f"{cycle.__name__}.send is missing or not a coroutine function")
    return problems


def http_protocol() -> type[asyncio.Protocol] | str:
    """The protocol class for uvicorn's `http` option; uvicorn's own when its internals are not the ones
    this was written against."""
    problems = incompatibilities()
    if not problems:
        return CoalescingHttpToolsProtocol
    log.warning(
        "uvicorn internals changed: serving with plain httptools (head and body written separately)",
        uvicorn=uvicorn.__version__,
        problems=problems,
    )
    return "httptools"
