"""Unix-socket (and optional TCP) server that fans events out to any number of subscribers.

One dedicated thread runs an asyncio loop that owns every socket. `publish()` validates
and encodes on the caller's thread and hands the bytes over with `call_soon_threadsafe`,
so the audio path never waits for a subscriber. Each subscriber has its own bounded
queue: partials are dropped (oldest first) when it falls behind, everything else is kept
up to `max_pending_finals`, after which that subscriber alone is disconnected.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import grp
import logging
import os
import secrets
import select
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from edge.config import PublishConfig
from edge.errors import SetupError, StartupError
from edge.limits import BIND_NAME_EXTRA
from edge.publish import protocol

log = logging.getLogger(__name__)

HelloSource = Mapping[str, Any] | Callable[[], Mapping[str, Any]]
StatusProvider = Callable[[], Mapping[str, Any]]
# A request type's handler: the request object in, the reply event out (ProtocolError for a bad one).
RequestHandler = Callable[[Mapping[str, Any]], protocol.Event]

_READ_CHUNK = 65536
# Bytes a subscriber's transport may buffer before events wait in its droppable queue.
_HIGH_WATER = 64 * 1024
_LIVE_CHECK_TIMEOUT_S = 1.0
_START_TIMEOUT_S = 10.0
# How long an evicted subscriber may take to read its final `error` line before it is cut.
_EVICT_GRACE_S = 5.0
# Bound on the handlers' return once shutdown cut their sockets: they need a few loop turns
# (0.2-0.4 ms with 3 stuck subscribers, 10 stops measured on the 2-core dev box).
_HANDLERS_RETURN_S = 1.0
# Bad request lines one connection may send: a client past this is broken or hostile, and
# parsing its flood (100,000 lines) used to stall every subscriber for seconds.
MAX_BAD_REQUESTS = 16
HANGUP_CHECK_S = 1.0  # one poll(2) per half-closed subscriber per second
REFUSALS_PER_LOG = 1000  # a connection storm past the cap logs a line per this many refusals
# TCP keepalive (idle s, probe interval s, probes): a LAN peer that lost power sends no FIN, and in a
# silent room nothing is written to it, so without probes it would hold a publish.max_subscribers
# slot for ever; with them its read fails about 2 minutes later and it is dropped.
TCP_KEEPALIVE = {"TCP_KEEPIDLE": 60, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 6}


class PublisherError(StartupError):
    """The publisher cannot start; the message is meant for a technician."""


class PublisherSetupError(PublisherError, SetupError):
    """The publisher cannot start until the config or the unit changes (a restart would fail alike)."""


# The socket's directory or file refused for good: a restart meets the same permission, the same
# read-only file system, the same file in the way (EEXIST: a file where the directory should be).
_FOR_GOOD = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST, errno.ENAMETOOLONG)

# A TCP listener refused by the sandbox (the default unit's RestrictAddressFamilies=AF_UNIX), not by
# a busy port: systemd restarting the daemon five times would only end in a failed unit.
_SANDBOXED = (errno.EAFNOSUPPORT, errno.EACCES, errno.EPERM)


class _Queue:
    """A subscriber's pending lines: partials droppable, everything else kept up to a cap.

    Partials and kept events live in two deques tagged with a sequence number so that
    dropping the oldest partial is O(1) while delivery stays in publish order.
    """

    def __init__(self, size: int, max_kept: int) -> None:
        self._size = size
        self._max_kept = max_kept
        self._partials: deque[tuple[int, bytes]] = deque()
        self._kept: deque[tuple[int, bytes]] = deque()
        self._seq = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._partials) + len(self._kept)

    def push(self, line: bytes, droppable: bool) -> bool:
        """Queue a line; False means the kept-event cap is exceeded (evict the subscriber)."""
        self._seq += 1
        if len(self) >= self._size:
            if self._partials:
                self._partials.popleft()
                self.dropped += 1
            elif droppable:
                self.dropped += 1
                return True
        if droppable:
            self._partials.append((self._seq, line))
            return True
        if len(self._kept) >= self._max_kept:
            return False
        self._kept.append((self._seq, line))
        return True

    def pop(self) -> bytes | None:
        if not self._partials and not self._kept:
            return None
        if not self._kept or (self._partials and self._partials[0][0] < self._kept[0][0]):
            return self._partials.popleft()[1]
        return self._kept.popleft()[1]

    def clear(self) -> None:
        self._partials.clear()
        self._kept.clear()


class _RecentFinals:
    """The last finals published, for `replay` requests: a subscriber that was away (the MQTT bridge
    restarting, the daemon restarting under it) asks for the finals after the last one it has.
    Finals come in utterance order and every utterance_id gets one, so what is missing is countable."""

    def __init__(self, size: int) -> None:
        self._lines: deque[tuple[int, bytes]] = deque(maxlen=size)
        self._newest = 0

    def add(self, utterance_id: int, line: bytes) -> None:
        self._lines.append((utterance_id, line))
        self._newest = max(self._newest, utterance_id)

    def after(self, utterance_id: int) -> tuple[list[bytes], int]:
        """The held finals after `utterance_id`, and how many after it are no longer held."""
        oldest = self._lines[0][0] if self._lines else self._newest + 1
        return [line for held, line in self._lines if held > utterance_id], max(0, oldest - utterance_id - 1)


class _Subscriber:
    def __init__(self, sub_id: int, writer: asyncio.StreamWriter, queue: _Queue) -> None:
        self.id = sub_id
        self.writer = writer
        self.queue = queue
        self.wakeup = asyncio.Event()
        self.pump: asyncio.Task | None = None
        self.finishing = False  # close once the queue is sent
        self.caught_up = asyncio.Event()  # nothing queued (or the pump has ended): its next request may be answered
        self.caught_up.set()

    def stats(self) -> dict:
        """Queue depth in events, plus bytes already handed to the socket but not yet sent."""
        return {
            "id": self.id,
            "depth": len(self.queue),
            "buffered_bytes": self.writer.transport.get_write_buffer_size(),
            "dropped_partials": self.queue.dropped,
        }


class Publisher:
    """Serves events to subscribers; see docs/protocol.md for the wire format.

    `hello` holds the fields of protocol.Hello other than audio_time_s (model, backend,
    sample_rate; optionally daemon_version, backend_requested, degraded, degraded_reason), or
    is a callable returning them so that a backend change shows in later hellos.
    `status_provider()` is called on the publisher thread (so it must be thread-safe and
    quick) for status requests and for the current `audio_time_s` of events the publisher
    itself emits (hello, error).
    """

    def __init__(
        self,
        cfg: PublishConfig,
        hello: HelloSource,
        status_provider: StatusProvider,
        socket_path: str | os.PathLike | None = None,
        requests: Mapping[str, RequestHandler] | None = None,
    ) -> None:
        """`socket_path` overrides `cfg.socket` (`edge-asr run --socket`); `requests` answers request
        types other than `status` (the daemon's `vocabulary`), on the publisher thread."""
        self._path = Path(socket_path or cfg.socket)
        self._mode = _parse_mode(cfg.socket_mode)
        self._group = cfg.socket_group
        self._hello = hello
        self._status_provider = status_provider
        self._requests = dict(requests or {})
        self._queue_size = cfg.queue_size
        self._max_pending = cfg.max_pending_finals
        self._max_subscribers = cfg.max_subscribers
        self._tcp = (cfg.tcp_host, cfg.tcp_port) if cfg.tcp_port > 0 else None
        self._subscribers: dict[int, _Subscriber] = {}
        # Half the kept-event cap: a replay of all of them still leaves the requester room for live events.
        self._recent = _RecentFinals(max(1, cfg.max_pending_finals // 2))
        self._run_id = secrets.token_hex(16)
        self._refused = 0
        self._lingering: dict[asyncio.WriteTransport, asyncio.Task] = {}  # evicted, still flushing
        self._next_id = 1
        self._audio_time_s = 0.0
        self._socket_id: tuple[int, int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._handlers: set[asyncio.Task] = set()  # running _serve() calls, one per connection
        self._closed = False
        self._draining = False

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def start(self) -> None:
        """Bind the sockets and start serving; raises PublisherError with a clear message."""
        if self._thread is not None:
            raise PublisherError("publisher already started")
        self._hello_event().encode()  # a bad hello fails here, at start-up, not per subscriber
        listeners = [self._bind_unix()]
        try:
            if self._tcp is not None:
                listeners.append(_bind_tcp(*self._tcp))
            self._start_thread(listeners)
        except BaseException:
            for sock in listeners:
                sock.close()
            self._remove_socket_file()
            raise
        log.info("publishing events on %s%s", self._path, f" and tcp {self._tcp[0]}:{self._tcp[1]}" if self._tcp else "")

    def publish(self, event: protocol.Event) -> None:
        """Queue `event` for every subscriber without blocking; raises ProtocolError if invalid.

        Events published after close() are discarded: shutdown races must not crash the
        pipeline thread.
        """
        line = event.encode()
        if self._loop is None:
            raise RuntimeError("Publisher.publish() called before start()")
        self._audio_time_s = max(self._audio_time_s, float(event.audio_time_s))
        if self._closed:
            return
        try:
            final_id = event.utterance_id if isinstance(event, protocol.Final) else None
            self._loop.call_soon_threadsafe(self._fan_out, line, event.TYPE in protocol.DROPPABLE_TYPES, final_id)
        except RuntimeError:
            pass  # the loop closed between the check and the call: same as after close()

    def close(self, timeout: float = 5.0) -> None:
        """Flush queued events to live subscribers (up to `timeout` s), disconnect them, remove the socket."""
        if self._thread is None or self._closed:
            return
        self._closed = True
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(self._shutdown(timeout), self._loop)
        try:
            future.result(timeout + 5.0)
        except concurrent.futures.TimeoutError:
            log.warning("publisher shutdown overran %.1f s; stopping anyway", timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5.0)
            self._remove_socket_file()

    # --- sockets -------------------------------------------------------------------

    def _bind_unix(self) -> socket.socket:
        """Bind under a temporary name, set mode/group, then hard-link into place.

        The link is atomic and fails if the path appeared meanwhile, so the socket is never
        reachable with the wrong permissions and nothing at the final path is overwritten.
        """
        path = self._path
        _make_parent(path)
        _clear_stale(path)
        temp = path.with_name(f".{path.name}.{secrets.token_hex((BIND_NAME_EXTRA - 2) // 2)}")  # unguessable
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(temp))  # fails on anything already there: never unlink what is not ours
            try:
                os.chmod(temp, self._mode)
                if self._group:
                    _give_to_group(temp, self._group, path)
                os.link(temp, path)
            finally:
                os.unlink(temp)
            sock.listen(128)
        except FileExistsError:
            sock.close()
            raise PublisherError(f"another edge-asr is running on {path}") from None
        except OSError as exc:
            sock.close()
            raise _os_error(exc)(f"cannot create socket {path}: {exc.strerror or exc}") from None
        except BaseException:
            sock.close()
            raise
        st = os.stat(path)
        self._socket_id = (st.st_dev, st.st_ino)
        return sock

    def _remove_socket_file(self) -> None:
        """Unlink our socket, but not one a newer daemon has put at the same path."""
        if self._socket_id is None:
            return
        try:
            st = os.lstat(self._path)
            if (st.st_dev, st.st_ino) == self._socket_id:
                os.unlink(self._path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove %s: %s", self._path, exc)
        self._socket_id = None

    # --- event loop thread -----------------------------------------------------------

    def _start_thread(self, listeners: list[socket.socket]) -> None:
        self._loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(listeners, ready), name="edge-asr-publisher", daemon=True
        )
        self._thread.start()
        try:
            ready.result(_START_TIMEOUT_S)
        except BaseException:
            self._closed = True
            with contextlib.suppress(RuntimeError):  # the failed thread may have closed the loop already
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5.0)
            raise

    def _run(self, listeners: list[socket.socket], ready: concurrent.futures.Future) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._open_servers(listeners))
        except BaseException as exc:  # reported to start(), which raises it on its thread
            ready.set_exception(exc)
        else:
            ready.set_result(None)
            loop.run_forever()
        finally:
            _cancel_remaining(loop)
            loop.close()

    async def _open_servers(self, listeners: list[socket.socket]) -> None:
        for sock in listeners:
            if sock.family == socket.AF_UNIX:
                server = await asyncio.start_unix_server(self._serve, sock=sock)
            else:
                server = await asyncio.start_server(self._serve, sock=sock)
            self._servers.append(server)

    def _fan_out(self, line: bytes, droppable: bool, final_id: int | None) -> None:
        if final_id is not None:
            self._recent.add(final_id, line)
        for sub in list(self._subscribers.values()):
            self._offer(sub, line, droppable)

    def _offer(self, sub: _Subscriber, line: bytes, droppable: bool) -> None:
        """Write straight to the socket while it keeps up, queue (and maybe drop) once it does not.

        Queueing only when the transport is backed up means a burst of publishes that
        the loop handles in one go cannot cost a healthy subscriber any partials.
        """
        transport = sub.writer.transport
        if not sub.queue and not transport.is_closing() and transport.get_write_buffer_size() < _HIGH_WATER:
            transport.write(line)
            return
        if sub.queue.push(line, droppable):
            sub.caught_up.clear()
            sub.wakeup.set()
            return
        self._evict(
            sub,
            "slow_subscriber",
            f"more than {self._max_pending} events were waiting for this subscriber "
            f"(publish.max_pending_finals); disconnecting it. Read events faster.",
        )

    # --- one connection ----------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)
        if self._draining:
            writer.close()
            return
        if len(self._subscribers) >= self._max_subscribers:
            self._refuse(writer)
            return
        try:
            sub = self._register(writer)
        except Exception:  # e.g. a hello callable that raised: lose this client, not the server
            log.exception("cannot greet a new subscriber")
            writer.transport.abort()
            return
        try:
            await self._read_requests(sub, reader)
        except OSError as exc:
            log.debug("subscriber %d: read failed: %s", sub.id, exc)
            self._drop(sub)
        else:
            if not writer.transport.is_closing():
                self._after_eof(sub)
        await self._until_gone(sub)

    async def _until_gone(self, sub: _Subscriber) -> None:
        """Stay while the pump runs: a half-closed client may still be reading. asyncio stops watching a
        socket after EOF, so whether such a client has since closed for good is polled every
        HANGUP_CHECK_S: otherwise `echo status | nc -U -q 1` once a minute in a silent room kept a
        slot per check and filled publish.max_subscribers (64) in an hour."""
        assert sub.pump is not None
        while not (await asyncio.wait([sub.pump], timeout=HANGUP_CHECK_S))[0]:
            if _peer_hung_up(sub.writer):
                self._drop(sub)

    def _after_eof(self, sub: _Subscriber) -> None:
        """The peer sent EOF. A Unix-socket peer that only half-closed (`echo ... | socat`) keeps its
        subscription; one that closed entirely is dropped. TCP cannot tell the two apart until a write
        fails, which in a silent room may be hours while the peer counts toward max_subscribers: there
        EOF ends the subscription once what is queued for it (its replies) has been sent."""
        if _peer_hung_up(sub.writer):
            self._drop(sub)
        elif sub.writer.get_extra_info("socket").family != socket.AF_UNIX:
            sub.finishing = True
            sub.wakeup.set()

    def _refuse(self, writer: asyncio.StreamWriter) -> None:
        """One more than publish.max_subscribers: say why and close, so descriptors stay bounded."""
        self._refused += 1
        if self._refused == 1 or self._refused % REFUSALS_PER_LOG == 0:  # one line, not one per client
            log.warning("refused %d connection(s): publish.max_subscribers (%d) are connected",
                        self._refused, self._max_subscribers)
        message = (f"{self._max_subscribers} subscribers are connected (publish.max_subscribers); "
                   "try again later or raise the limit")
        writer.transport.write(self._error_event("too_many_subscribers", message).encode())
        writer.transport.close()

    def _register(self, writer: asyncio.StreamWriter) -> _Subscriber:
        writer.transport.set_write_buffer_limits(high=_HIGH_WATER)
        _keep_alive(writer.get_extra_info("socket"))
        hello = self._hello_event().encode()  # before the slot is taken: a hello that fails must not keep it
        sub = _Subscriber(self._next_id, writer, _Queue(self._queue_size, self._max_pending))
        self._next_id += 1
        self._subscribers[sub.id] = sub
        self._offer(sub, hello, droppable=False)
        sub.pump = asyncio.create_task(self._pump(sub))
        log.debug("subscriber %d connected (%d now)", sub.id, len(self._subscribers))
        return sub

    async def _read_requests(self, sub: _Subscriber, reader: asyncio.StreamReader) -> None:
        """Answer each request once the replies before it are on their way; a client past
        MAX_BAD_REQUESTS is cut off and read no further.

        Waiting for the client to take its replies puts a client that sends and never reads under
        the kernel's back-pressure: replies used to be queued regardless, 15,508 of them for the one
        client of tests/test_publisher.py's flood of status requests.
        """
        requests = protocol.RequestReader()
        bad = 0
        while data := await reader.read(_READ_CHUNK):
            for request in requests.feed(data):
                await sub.caught_up.wait()
                if sub.id not in self._subscribers:
                    return
                if isinstance(request, protocol.ProtocolError):
                    bad += 1
                    if request.reason == protocol.HTTP_REQUEST:
                        self._evict(sub, request.reason, str(request))
                        return
                if bad > MAX_BAD_REQUESTS:
                    self._evict(sub, "too_many_bad_requests",
                                f"more than {MAX_BAD_REQUESTS} bad requests on this connection; disconnecting it")
                    return
                answer = await self._answer(sub, request)
                if sub.id in self._subscribers:
                    self._send_own(sub, answer)

    async def _answer(self, sub: _Subscriber, request: protocol.Request | protocol.ProtocolError) -> protocol.Event:
        """The reply to one request. A handler runs in a thread (a vocabulary's prefix tree takes up to
        ~35 ms): the loop keeps other subscribers' events flowing, and one connection's requests are
        answered one at a time, however fast it sends them."""
        if isinstance(request, protocol.ProtocolError):
            return self._error_event(request.reason, str(request))
        handler = self._requests.get(request.kind)
        try:
            if request.kind == protocol.Replayed.TYPE:
                return self._replay(sub, protocol.replay_after(request.body))
            return self._status_event(sub) if handler is None else await asyncio.to_thread(handler, request.body)
        except protocol.ProtocolError as exc:
            return self._error_event(exc.reason, str(exc))
        except Exception as exc:  # the daemon's callback must not take the publisher down
            log.warning("%s request failed: %s", request.kind, exc)
            return self._error_event(f"{request.kind}_unavailable", f"{request.kind} is unavailable: {exc}")

    def _replay(self, sub: _Subscriber, after: int) -> protocol.Replayed:
        """Re-send the held finals after `after`. On the loop thread with no await until the reply is
        queued, so every later final reaches `sub` after the reply, and every earlier one before it."""
        lines, missing = self._recent.after(after)
        for line in lines:
            self._offer(sub, line, droppable=False)
        return protocol.Replayed(audio_time_s=self._audio_time_s, after=after, count=len(lines), missing=missing)

    def _send_own(self, sub: _Subscriber, event: protocol.Event) -> None:
        self._offer(sub, event.encode(), droppable=False)

    async def _pump(self, sub: _Subscriber) -> None:
        """Move queued lines to the socket as it drains; on shutdown, close it cleanly."""
        writer = sub.writer
        try:
            while True:
                await writer.drain()  # lines leave the queue only when the socket has room
                line = sub.queue.pop()
                if line is not None:
                    writer.write(line)
                elif self._draining or sub.finishing:
                    break
                else:
                    sub.wakeup.clear()
                    sub.caught_up.set()
                    await sub.wakeup.wait()
            writer.close()
            await writer.wait_closed()
        except OSError as exc:
            log.debug("subscriber %d went away: %s", sub.id, exc)
            writer.transport.abort()
        finally:
            sub.caught_up.set()  # a request waiting for it finds the subscriber gone
            if self._subscribers.pop(sub.id, None) is not None:
                log.debug("subscriber %d disconnected (dropped %d partials)", sub.id, sub.queue.dropped)

    def _drop(self, sub: _Subscriber) -> None:
        """Forget a subscriber at once (it is gone or shutdown ran out of time)."""
        self._subscribers.pop(sub.id, None)
        if sub.pump is not None:
            sub.pump.cancel()
        sub.writer.transport.abort()

    def _evict(self, sub: _Subscriber, reason: str, message: str) -> None:
        """Disconnect a subscriber (too slow, or misbehaving), telling it why if it ever reads."""
        log.warning("subscriber %d disconnected (%s, dropped %d partials): %s", sub.id, reason, sub.queue.dropped, message)
        self._subscribers.pop(sub.id, None)
        sub.queue.clear()
        if sub.pump is not None:
            sub.pump.cancel()
        transport = sub.writer.transport
        transport.write(self._error_event(reason, message).encode())
        self._lingering[transport] = asyncio.create_task(self._linger(transport))

    async def _linger(self, transport: asyncio.WriteTransport) -> None:
        """Give an evicted subscriber a few seconds to read what it has, then cut it off.

        The transport is aborted rather than closed: abort is safe whether or not the
        buffer has flushed, and for a Unix socket what the kernel holds stays readable.
        """
        deadline = time.monotonic() + _EVICT_GRACE_S
        while transport.get_write_buffer_size() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self._lingering.pop(transport, None)
        transport.abort()

    async def _shutdown(self, timeout: float) -> None:
        self._draining = True
        for server in self._servers:
            server.close()
        self._remove_socket_file()
        subs = list(self._subscribers.values())
        for sub in subs:
            sub.wakeup.set()
        pumps = [sub.pump for sub in subs if sub.pump is not None]
        if pumps:
            await asyncio.wait(pumps, timeout=timeout)
        for sub in list(self._subscribers.values()):
            log.warning("subscriber %d did not drain within %.1f s; cutting it off", sub.id, timeout)
            self._drop(sub)
        for transport in self._lingering:
            transport.abort()
        await self._handlers_returned()

    async def _handlers_returned(self) -> None:
        """Wait for every connection handler to return by itself (their sockets are cut, so they do at once).

        One still running when the loop is torn down would be cancelled, and Python 3.11's
        start_server callback then logs a CancelledError traceback per connection.
        """
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=_HANDLERS_RETURN_S)

    # --- events the publisher makes itself ---------------------------------------------

    def _audio_time_now(self) -> float:
        """The daemon's current stream position, or the newest one seen in published events."""
        try:
            value = self._status_provider().get("audio_time_s")
        except Exception:  # a broken provider must not prevent hello / error events
            value = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self._audio_time_s = max(self._audio_time_s, float(value))
        return self._audio_time_s

    def _hello_event(self) -> protocol.Hello:
        fields = self._hello() if callable(self._hello) else self._hello
        try:
            return protocol.Hello(audio_time_s=self._audio_time_now(), run_id=self._run_id, **fields)
        except TypeError as exc:
            raise protocol.ProtocolError(
                f"hello needs model, backend, sample_rate (and optionally daemon_version, backend_requested, "
                f"degraded, degraded_reason): {exc}"
            ) from None

    def _error_event(self, reason: str, message: str) -> protocol.Error:
        """O(1): the newest stream position seen, not a fresh status (a flood of bad lines must stay cheap)."""
        return protocol.Error(reason=reason, message=message, audio_time_s=self._audio_time_s)

    def _status_event(self, requester: _Subscriber) -> protocol.Status:
        fields = dict(self._status_provider())
        audio_time_s = fields.pop("audio_time_s", self._audio_time_s)
        fields.update(
            subscribers=len(self._subscribers),
            subscriber_id=requester.id,
            subscriber_queues=[sub.stats() for sub in self._subscribers.values()],
        )
        return protocol.Status(audio_time_s=audio_time_s, fields=fields)


def _parse_mode(mode: str | int) -> int:
    try:
        value = int(mode, 8) if isinstance(mode, str) else int(mode)
    except ValueError:
        raise PublisherSetupError(f'publish.socket_mode {mode!r} is not an octal mode like "0660"') from None
    if not 0 <= value <= 0o777:
        raise PublisherSetupError(f"publish.socket_mode {mode!r} is out of range 0000-0777")
    return value


def _os_error(exc: OSError) -> type[PublisherError]:
    """Exit 78 (no restart loop) for what only a change of config or unit can cure."""
    return PublisherSetupError if exc.errno in _FOR_GOOD else PublisherError


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _os_error(exc)(f"cannot create directory {path.parent} for the socket: {exc.strerror or exc}") from None


def _clear_stale(path: Path) -> None:
    """Remove a socket left by a dead daemon; refuse a live one or anything that is not a socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a socket"
        raise PublisherSetupError(f"{path} exists and is {kind}; refusing to replace it (remove it or change publish.socket)")
    if _accepts_connections(path):
        raise PublisherError(f"another edge-asr is running on {path}")
    try:
        _remove_socket(path)
    except OSError as exc:
        raise PublisherError(f"cannot remove stale socket {path}: {exc.strerror or exc}") from None
    log.info("removed stale socket %s", path)


def _accepts_connections(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(_LIVE_CHECK_TIMEOUT_S)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except socket.timeout:
            return True  # a full accept backlog is still a live server
        except OSError as exc:
            raise PublisherError(f"cannot tell whether {path} is in use: {exc.strerror or exc}") from None
    return True


def _remove_socket(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _group_id(group: str) -> int:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise PublisherSetupError(f"publish.socket_group: there is no group named {group!r}") from None


def _give_to_group(path: Path, group: str, shown: Path) -> None:
    try:
        os.chown(path, -1, _group_id(group))
    except PermissionError:
        raise PublisherSetupError(
            f"cannot give socket {shown} to group {group!r}: the daemon's user must be a member of it"
        ) from None


def _bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        if exc.errno in _SANDBOXED:
            raise PublisherSetupError(f"cannot listen on tcp {host}:{port}: {exc.strerror or exc} (not allowed here: the "
                                      "default unit allows no IP socket; see docs/operations.md, TCP publishing)") from None
        raise PublisherError(f"cannot listen on tcp {host}:{port}: {exc.strerror or exc}") from None


def _keep_alive(sock: socket.socket | None) -> None:
    """TCP_KEEPALIVE probes on a TCP subscriber's socket (a Unix socket needs none)."""
    if sock is None or sock.family == socket.AF_UNIX:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in TCP_KEEPALIVE.items():
        if hasattr(socket, option):  # Linux names; other systems keep their defaults
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _peer_hung_up(writer: asyncio.StreamWriter) -> bool:
    """After read EOF: True if the peer closed entirely, False if it only half-closed.

    `echo '{"type":"status"}' | socat - UNIX-CONNECT:...` shuts down its sending side
    but still reads the reply, so EOF alone must not end the subscription.
    """
    sock = writer.get_extra_info("socket")
    if sock is None or writer.transport.is_closing() or sock.fileno() < 0:  # a write to the closed peer failed
        return True
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLOUT)
    return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))


def _cancel_remaining(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
