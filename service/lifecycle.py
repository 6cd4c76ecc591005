"""Request and process lifecycle: per-request deadlines, dropping work nobody waits for, graceful drain.

`RequestLifecycle` runs each HTTP request's handler as a task and cancels it when the request's
deadline passes (answered 504) or its client disconnects (logged as 499; nobody reads it). The
cancellation reaches the batcher's futures, so queued sequences of a dropped request never reach the
model. The deadline is the server's `request_timeout`, shortened by an `X-Request-Timeout: <seconds>`
header; it also bounds how long a graceful shutdown waits for in-flight requests.

`serve` runs uvicorn so that SIGTERM first marks the app draining (/readyz 503), keeps serving for
`shutdown_delay` seconds (for load balancers to notice), then stops accepting, finishes in-flight
requests, and exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import threading
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.batching import DEADLINE
from service.errors import NO_RETRY, error_response

log = logging.getLogger("reprank")

TIMEOUT_HEADER = b"x-request-timeout"


def requested_timeout(scope: Scope, ceiling: float) -> float | str:
    """Seconds this request may take, or an error message for a bad header."""
    raw = next((v for k, v in scope.get("headers", ()) if k == TIMEOUT_HEADER), None)
    if raw is None:
        return ceiling
    try:
        value = float(raw.decode("latin-1"))
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        return "X-Request-Timeout must be a positive number of seconds"
    return min(value, ceiling)


class RequestLifecycle:
    """ASGI middleware: deadline (504) and client-disconnect cancellation of each HTTP request."""

    def __init__(self, app: ASGIApp, request_timeout: float):
        self.app, self.request_timeout = app, request_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timeout = requested_timeout(scope, self.request_timeout)
        if isinstance(timeout, str):
            await error_response(422, timeout, "invalid_request", path=scope["path"])(scope, receive, send)
            return
        body_read = asyncio.Event()
        started = False

        async def receive_body() -> Message:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_read.set()
            return message

        async def send_started(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        async def client_gone() -> None:
            """Waits for the disconnect, once the handler has read the whole body (then nothing else reads)."""
            await body_read.wait()
            while (await receive())["type"] != "http.disconnect":
                pass

        DEADLINE.set(time.monotonic() + timeout)  # copied into the handler's task: the batcher reads it
        handler = asyncio.ensure_future(self.app(scope, receive_body, send_started))
        watcher = asyncio.ensure_future(client_gone())
        try:
            done, _ = await asyncio.wait({handler, watcher}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if handler in done or started:  # finished, or already answering: let it finish
            await handler
            return
        handler.cancel()
        try:
            await handler
        except asyncio.CancelledError:
            pass
        if watcher in done:
            log.info("%s %s: client disconnected, request dropped", scope["method"], scope["path"])
            await error_response(499, "client closed the request", "client_closed")(scope, receive, send)
        else:
            await error_response(504, f"request deadline of {timeout:g} s passed", "timeout", NO_RETRY,
                                 scope["path"])(scope, receive, send)


class DrainingServer:
    """uvicorn.Server whose first SIGTERM/SIGINT drains: /readyz 503, `delay` s of service, then shutdown."""

    def __init__(self, config, state, delay: float):
        import uvicorn

        self.server = uvicorn.Server(config)
        self.state, self.delay = state, delay
        self.server.handle_exit = self._handle_exit
        self._original_exit = uvicorn.Server.handle_exit.__get__(self.server)

    def _handle_exit(self, sig, frame) -> None:
        if getattr(self.state, "draining", False) or self.delay <= 0:
            self.state.draining = True
            self._original_exit(sig, frame)
            return
        self.state.draining = True
        log.info("draining: /readyz answers 503; shutting down in %.1f s", self.delay)
        threading.Timer(self.delay, self._original_exit, (sig, frame)).start()

    def run(self) -> None:
        # uvicorn re-raises the signal it shut down for; it is handled: exit 0, not killed by SIGTERM
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        start = time.perf_counter()
        self.server.run()
        log.info("stopped after %.1f s", time.perf_counter() - start)


def serve(app, settings) -> None:
    """Run the app under uvicorn with graceful drain; in-flight requests get their deadline to finish."""
    import uvicorn

    # keep-alive longer than a load balancer's idle timeout (commonly 60 s): a client must not reuse a
    # connection the server is closing at that moment (probably why 4 of 1,478 soak requests got no answer)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info",
                            timeout_graceful_shutdown=settings.request_timeout + 5, timeout_keep_alive=75)
    DrainingServer(config, app.state, settings.shutdown_delay).run()
