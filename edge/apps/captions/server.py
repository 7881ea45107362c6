"""The caption web server: one page, and its Server-Sent Events stream, for any number of browsers.

aiohttp because it is asyncio-native (one loop serves every browser, with no thread per
connection), streams Server-Sent Events with a plain `StreamResponse`, and is mature and
actively maintained (aio-libs); starlette + uvicorn would take two packages for the same.
Server-Sent Events rather than WebSocket: the page only listens, and `EventSource` (built
into every browser) reconnects by itself.

Only two paths exist: `/` (the page) and `/events` (the stream); anything else is a 404,
a wrong method a 405, a name we do not answer to a 403 (DNS rebinding). Each browser has its own
outbox: only its newest partial is kept (a partial replaces the one before), finals and
the rest wait in order up to `MAX_PENDING`, after which that browser alone is cut off and
its `EventSource` reconnects. Nothing is stored beyond those outboxes: a new page starts blank.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import hashlib
import ipaddress
import json
import logging
import re
import socket
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from edge.apps.captions.feed import DaemonFeed
from edge.config import CAPTION_FONT_PX, CAPTION_LINES, CaptionsConfig

log = logging.getLogger(__name__)

MAX_BROWSERS = 64  # open event streams; more get 503 (bounds the server's memory)
# from one address: a screen and a few reloads need a handful; one host on the LAN took all 64, and
# the room's screen got 503 until it let them go (security review)
MAX_BROWSERS_PER_ADDRESS = 16
MAX_PENDING = 256  # finals (and other kept events) one browser may lag behind before it is cut off
HEARTBEAT_S = 15.0  # an `alive` event this often finds browsers gone without a goodbye, and keeps proxies open
SHUTDOWN_S = 2.0
# How often the event loop calls `alive`: more often than systemd's watchdog checks (every WatchdogSec / 2,
# and WatchdogSec may be set as low as 3 s in a drop-in); a wake-up a second costs nothing measurable.
LOOP_BEAT_S = 1.0
# An event, not an SSE comment, which a page's script never sees: the page reconnects when even this stops
# (a screen on the LAN whose box lost power or network kept showing "Live" on a half-open connection).
KEEP_ALIVE = b"event: alive\ndata: {}\n\n"

_SETTINGS = "__SETTINGS__"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)

HUB: web.AppKey["Hub"] = web.AppKey("hub")
IP_FREEBIND = 15  # <linux/in.h>; not in Python's socket module before 3.12
FAILED: web.AppKey[threading.Event] = web.AppKey("failed")  # the daemon's reader stopped on an error
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_COMMON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def sse(name: str, data: dict[str, Any]) -> bytes:
    """One Server-Sent Event; JSON never holds a raw newline, so one `data:` line is enough."""
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class Browser:
    """One open event stream and what it has yet to receive."""

    def __init__(self, transport: asyncio.BaseTransport | None) -> None:
        self._transport = transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        self.address = peer[0] if isinstance(peer, tuple) and peer else None
        self._kept: deque[bytes] = deque()
        self._partial: bytes | None = None
        self._ready = asyncio.Event()
        self.closed = False

    def offer(self, chunk: bytes, droppable: bool) -> bool:
        """Queue a chunk; False when MAX_PENDING kept chunks already wait (this browser is too slow)."""
        if droppable:
            self._partial = chunk
        elif len(self._kept) >= MAX_PENDING:
            return False
        else:
            self._kept.append(chunk)
        self._ready.set()
        return True

    async def next(self) -> bytes | None:
        """Kept chunks in order, then the newest partial; KEEP_ALIVE after a quiet spell; None once closed.

        The page ignores a partial of an utterance whose final it already has, so sending
        the partial last never shows stale text; a `daemon` event drops it (`Hub.send`).
        """
        if not self._kept and self._partial is None and not self.closed:
            self._ready.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._ready.wait(), HEARTBEAT_S)
        if self.closed:
            return None
        if self._kept:
            return self._kept.popleft()
        chunk, self._partial = self._partial, None
        return chunk or KEEP_ALIVE

    def forget_partial(self) -> None:
        self._partial = None

    def close(self, abort: bool = False) -> None:
        """Stop the stream; `abort` also cuts the connection, waking a write stuck on a full socket."""
        self.closed = True
        self._ready.set()
        if abort and self._transport is not None:
            self._transport.abort()


class Hub:
    """The browsers with an open stream, and the daemon's state each new one is told first (KEPT)."""

    KEPT = ("chinese", "daemon")  # the newest of these goes to each new browser, in this order

    def __init__(self) -> None:
        self._browsers: set[Browser] = set()
        self._kept = {"daemon": sse("daemon", {"connected": False, "message": "connecting to edge-asr"})}

    def join(self, transport: asyncio.BaseTransport | None) -> Browser | str:
        """A new browser, or why it is refused: MAX_BROWSERS connected, or MAX_BROWSERS_PER_ADDRESS from its address."""
        browser = Browser(transport)
        if len(self._browsers) >= MAX_BROWSERS:
            return f"more than {MAX_BROWSERS} caption pages are open"
        if browser.address is not None and sum(
                other.address == browser.address for other in self._browsers) >= MAX_BROWSERS_PER_ADDRESS:
            return f"more than {MAX_BROWSERS_PER_ADDRESS} caption pages are open from {browser.address}"
        for name in self.KEPT:
            if name in self._kept:
                browser.offer(self._kept[name], droppable=False)
        self._browsers.add(browser)
        return browser

    def leave(self, browser: Browser) -> None:
        self._browsers.discard(browser)

    def send(self, name: str, data: dict[str, Any]) -> None:
        """Encode once, offer to every browser; never waits, so no browser slows the others."""
        chunk = sse(name, data)
        if name in self.KEPT:
            self._kept[name] = chunk
        for browser in list(self._browsers):
            if name == "daemon":  # a partial of the run before must not come after it: nothing would clear it
                browser.forget_partial()
            if not browser.offer(chunk, droppable=name == "partial"):
                log.warning("a caption page fell %d events behind; disconnecting it", MAX_PENDING)
                self.leave(browser)
                browser.close(abort=True)

    def close_all(self) -> None:
        for browser in self._browsers:
            browser.close()


def render_page(cfg: CaptionsConfig) -> tuple[bytes, str]:
    """The page with its settings filled in, and the Content-Security-Policy that lets only its own script run."""
    html = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
    settings = {
        "lines": cfg.lines, "font_size": cfg.font_size, "theme": cfg.theme, "title": cfg.title,
        "bounds": {"lines": CAPTION_LINES, "size": CAPTION_FONT_PX}, "heartbeat_s": HEARTBEAT_S,
    }
    # "<" escaped: no text in the settings can close the <script> element that holds them.
    html = html.replace(_SETTINGS, json.dumps(settings, ensure_ascii=False).replace("<", "\\u003c"))
    digest = hashlib.sha256(_INLINE_SCRIPT.search(html).group(1).encode()).digest()
    policy = (
        f"default-src 'none'; script-src 'sha256-{base64.b64encode(digest).decode()}'; "
        "style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return html.encode(), policy


def local_names() -> frozenset[str]:
    """Host names the page answers to besides IP addresses: this machine's, and localhost."""
    host = socket.gethostname().lower()
    return frozenset({"localhost", host, f"{host}.local"})


def host_allowed(header: str, names: frozenset[str]) -> bool:
    """True when the Host header names an IP address or this machine.

    A web site that points its own DNS name at this box (DNS rebinding) gets a 403, so a
    page it serves in a browser here cannot read the captions.
    """
    host = header[1:].partition("]")[0] if header.startswith("[") else header.rpartition(":")[0] or header
    if host.lower() in names:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _host_check(names: frozenset[str]) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not host_allowed(request.headers.get("Host", ""), names):  # not request.host: no DNS lookup
            raise web.HTTPForbidden(text="this caption server answers only to its IP address or host name\n")
        return await handler(request)

    return check


def _page_handler(page: bytes, policy: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    headers = {**_COMMON_HEADERS, "Content-Security-Policy": policy}

    async def page_view(request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8", headers=headers)

    return page_view


async def _events(request: web.Request) -> web.StreamResponse:
    """The event stream of one browser, until it goes away or falls too far behind."""
    hub = request.app[HUB]
    browser = hub.join(request.transport)
    if isinstance(browser, str):
        raise web.HTTPServiceUnavailable(text=browser + "\n")
    response = web.StreamResponse(headers={**_COMMON_HEADERS, "Content-Type": "text/event-stream"})
    try:
        await response.prepare(request)
        while (chunk := await browser.next()) is not None:
            await response.write(chunk)
    except ConnectionError as exc:
        log.debug("a caption page went away: %s", exc)
    finally:
        hub.leave(browser)
    return response


def build_app(cfg: CaptionsConfig, socket_path: str, alive: Callable[[], None] = lambda: None) -> web.Application:
    """The web application; while it runs, a DaemonFeed reads `socket_path` into its hub, and the event
    loop calls `alive` every LOOP_BEAT_S: a loop blocked (a handler that never yields) stops calling it."""
    hub = Hub()
    app = web.Application(middlewares=[_host_check(local_names())])
    app[HUB] = hub
    app[FAILED] = threading.Event()
    app.router.add_get("/", _page_handler(*render_page(cfg)))
    app.router.add_get("/events", _events, allow_head=False)  # a HEAD would hold a stream open for nothing

    async def feed(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()

        def failed() -> None:
            app[FAILED].set()
            loop.call_soon_threadsafe(_stop_serving)

        daemon = DaemonFeed(socket_path, lambda name, data: loop.call_soon_threadsafe(hub.send, name, data), failed)
        daemon.start()
        yield
        daemon.stop()

    async def beat(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_beat_forever(alive))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def close_streams(app: web.Application) -> None:
        hub.close_all()

    app.cleanup_ctx.append(feed)
    app.cleanup_ctx.append(beat)
    app.on_shutdown.append(close_streams)
    return app


async def _beat_forever(alive: Callable[[], None]) -> None:
    """A task of the loop itself: it runs only when the loop is free to run it, so its calls stop when
    the loop is held up, whatever the other threads (the daemon's reader) still do."""
    while True:
        alive()
        await asyncio.sleep(LOOP_BEAT_S)


class _BadRequestsAtDebug(logging.Filter):
    """aiohttp logs each malformed request (no Host, an 8 KB header, not HTTP) as an ERROR with a
    10-line traceback, after answering it with a 400: a LAN scanner would fill the journal. One
    debug line of ours instead; every other aiohttp record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            log.debug("refused a malformed HTTP request: %s", " ".join(str(exc).split())[:200])
            return False
        return True


def listening_socket(host: str, port: int) -> socket.socket:
    """The page's listening socket. An address this box does not have (yet) is bound anyway, with
    IP_FREEBIND, and served once it comes: a kiosk's captions.listen on its LAN address failed at
    boot before DHCP gave it (EADDRNOTAVAIL, five restarts in 25 s, then a failed unit)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRNOTAVAIL:
                raise
            log.warning("captions.listen: %s is not an address of this box (yet); serving it once it is, "
                        "as at boot before DHCP: check the address if the page never answers", host)
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
            sock.bind((host, port))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def _stop_serving() -> None:
    """run_app's own way out: it cleans up and returns."""
    raise web.GracefulExit()


def serve(cfg: CaptionsConfig, socket_path: str, host: str, port: int, ready: Callable[[], None] = lambda: None,
          alive: Callable[[], None] = lambda: None) -> bool:
    """Serve until SIGTERM or SIGINT (True), or until the daemon's reader failed (False, logged);
    OSError when the address cannot be bound. `ready` runs once the app has started, its socket already
    listening (systemd's READY=1: a browser that connects then waits in the backlog, not refused),
    `alive` as `build_app` says (the watchdog's progress).

    `handler_cancellation`: a browser that goes away ends its stream at once (not at the
    next write), so it leaves the hub and stops counting towards MAX_BROWSERS.
    """
    logging.getLogger("aiohttp.server").addFilter(_BadRequestsAtDebug())
    app = build_app(cfg, socket_path, alive)

    async def started(app: web.Application) -> None:
        ready()

    app.on_startup.append(started)
    web.run_app(app, sock=listening_socket(host, port), print=None, access_log=None,
                shutdown_timeout=SHUTDOWN_S, handler_cancellation=True)
    return not app[FAILED].is_set()
