"""The socket publisher: fan-out, slow and vanishing subscribers, requests, socket files."""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import edge
from edge.publish import protocol
from edge.commands.run import _cannot_start
from edge.commands.service import EX_STARTUP
from edge.config import EX_CONFIG, PublishConfig
from edge.publish.server import TCP_KEEPALIVE, Publisher, PublisherError, PublisherSetupError
from tests.ports import free_port

HELLO = {"model": "whisper-tiny.en-int8", "backend": "cpu", "sample_rate": 16000}


def make_publisher(path: Path, status: Callable[[], dict] | None = None, hello=HELLO, **options) -> Publisher:
    """`options` are publish.* keys; unvalidated, so that the publisher's own checks are what is tested."""
    settings = dict(socket=path, socket_mode="0660", socket_group=None, queue_size=64, max_pending_finals=256,
                    tcp_host="127.0.0.1", tcp_port=0, max_subscribers=64)
    settings.update(options)
    provider = status or (lambda: {"audio_time_s": 1.0, "uptime_s": 5.0, "backend": "cpu", "utterances": 0})
    return Publisher(PublishConfig.model_construct(**settings), hello=hello, status_provider=provider)


@pytest.fixture
def publisher(sock_path: Path) -> Iterator[Publisher]:
    pub = make_publisher(sock_path)
    pub.start()
    yield pub
    pub.close(timeout=1.0)


class Client:
    """A test subscriber reading events line by line with a deadline."""

    def __init__(self, path: Path | tuple[str, int], rcvbuf: int | None = None) -> None:
        family = socket.AF_UNIX if isinstance(path, Path) else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(str(path) if isinstance(path, Path) else path)
        self.sock.settimeout(5.0)
        self._pending = b""

    def line(self) -> bytes:
        """The next complete line, b"" at EOF."""
        while b"\n" not in self._pending:
            data = self.sock.recv(65536)
            if not data:
                return b""
            self._pending += data
        line, self._pending = self._pending.split(b"\n", 1)
        return line + b"\n"

    def event(self) -> dict:
        line = self.line()
        assert line, "connection closed while an event was expected"
        return json.loads(line)

    def events_until_eof(self) -> list[dict]:
        """Every event until the server closes. A client whose sent lines the server left unread gets a
        reset where it would get EOF (Linux, Unix sockets), but only after every byte sent to it: the end too."""
        events = []
        try:
            while line := self.line():
                events.append(json.loads(line))
        except ConnectionResetError:
            pass
        return events

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


def connect(path: Path, **options) -> Client:
    """Connect and consume the hello, so the subscriber is registered when this returns."""
    client = Client(path, **options)
    assert client.event()["type"] == "hello"
    return client


def utterance(uid: int, partials: int, text: str = "word") -> list[protocol.Event]:
    """speech_start, some partials, final, speech_end for one utterance."""
    t0 = float(uid * 10)
    events = [protocol.SpeechStart(utterance_id=uid, start_s=t0, audio_time_s=t0 + 0.2)]
    events += [
        protocol.Partial(utterance_id=uid, text=f"{text} {i}", stable_text=text, start_s=t0, end_s=t0 + i / 10, audio_time_s=t0 + i / 10)
        for i in range(partials)
    ]
    events.append(protocol.Final(utterance_id=uid, text=f"{text} final", start_s=t0, end_s=t0 + 5, audio_time_s=t0 + 6))
    events.append(protocol.SpeechEnd(utterance_id=uid, start_s=t0, end_s=t0 + 5, audio_time_s=t0 + 6))
    return events


def wire(events: list[protocol.Event]) -> list[dict]:
    """The events as a subscriber decodes them."""
    return [event.to_dict() for event in events]


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_hello_on_connect(publisher: Publisher, sock_path: Path) -> None:
    client = Client(sock_path)
    hello = client.event()
    assert hello == {
        "type": "hello",
        "audio_time_s": 1.0,
        "protocol_version": protocol.PROTOCOL_VERSION,
        "daemon_version": edge.__version__,
        **HELLO,
        "run_id": hello["run_id"],
    }
    again = Client(sock_path)
    assert len(hello["run_id"]) == 32 and again.event()["run_id"] == hello["run_id"]  # one per daemon run
    assert make_publisher(sock_path.with_name("other.sock"))._hello_event().run_id != hello["run_id"]  # new per start
    wait_for(lambda: publisher.subscriber_count == 2)
    client.close()
    again.close()
    wait_for(lambda: publisher.subscriber_count == 0)


def _finals(client: Client) -> list[int]:
    """utterance_ids of the finals before the `replay` reply, and the reply."""
    ids = []
    while (event := client.event())["type"] != "replay":
        if event["type"] == "final":
            ids.append(event["utterance_id"])
    return ids + [event]


def test_replay_re_sends_the_finals_a_subscriber_missed(sock_path: Path) -> None:
    """A subscriber that was away (the MQTT bridge restarting) asks for the finals after its last one:
    it gets them as they were sent, then the reply; what the daemon no longer holds is counted."""
    publisher = make_publisher(sock_path, max_pending_finals=16)  # holds the last 8
    publisher.start()
    try:
        early = connect(sock_path)
        for uid in range(1, 13):
            for event in utterance(uid, partials=2):
                publisher.publish(event)
        sent = [line for line in (early.line() for _ in range(12 * 5)) if b'"type":"final"' in line]
        late = connect(sock_path)
        late.send(b'{"type":"replay","after":6}\n')
        replayed = [late.line() for _ in range(6)]
        assert replayed == sent[6:12]  # byte for byte what was published
        assert late.event() == {"type": "replay", "audio_time_s": 126.0, "after": 6, "count": 6, "missing": 0}
        late.send(b'{"type":"replay","after":0}\n')
        *ids, reply = _finals(late)
        assert ids == list(range(5, 13)) and (reply["count"], reply["missing"]) == (8, 4)  # 1-4 are gone
        late.send(b'{"type":"replay","after":12}\n{"type":"replay","after":40}\n')
        assert [_finals(late)[-1]["count"] for _ in range(2)] == [0, 0]
        for bad in (b'-1', b'"6"', b'true', b'1.5', b'null'):
            late.send(b'{"type":"replay","after":' + bad + b'}\n')
            error = late.event()
            assert error["reason"] == "bad_request" and "whole number of 0 or more" in error["message"], error
    finally:
        publisher.close(timeout=1.0)


def test_a_replay_reaches_the_subscriber_before_any_later_final(sock_path: Path) -> None:
    """The reply is made on the loop with the fan-out: every final published after it comes after it."""
    publisher = make_publisher(sock_path)
    publisher.start()
    try:
        client = connect(sock_path)
        for uid in range(1, 4):
            publisher.publish(utterance(uid, partials=0)[1])
        client.send(b'{"type":"replay","after":0}\n')
        for uid in range(4, 40):
            publisher.publish(utterance(uid, partials=0)[1])
        events = [client.event()]
        while not ({"replay", 39} <= {e.get("utterance_id", e["type"]) for e in events}):
            events.append(client.event())
        at = next(i for i, e in enumerate(events) if e["type"] == "replay")
        count = events[at]["count"]
        assert count >= 3 and [e["utterance_id"] for e in events[at + 1 :]] == list(range(count + 1, 40))
        assert {e["utterance_id"] for e in events[:at]} == set(range(1, count + 1))  # live, then replayed
    finally:
        publisher.close(timeout=1.0)


def test_hello_callable_follows_backend_changes(sock_path: Path) -> None:
    backend = ["cuda"]
    pub = make_publisher(sock_path, hello=lambda: {**HELLO, "backend": backend[0]})
    pub.start()
    try:
        assert Client(sock_path).event()["backend"] == "cuda"
        backend[0] = "cpu"
        assert Client(sock_path).event()["backend"] == "cpu"
    finally:
        pub.close(1.0)


def test_bad_hello_fails_at_start(sock_path: Path) -> None:
    with pytest.raises(protocol.ProtocolError, match="hello needs model"):
        make_publisher(sock_path, hello={"model": "x"}).start()
    assert not sock_path.exists()


def test_many_subscribers_receive_everything_in_order(publisher: Publisher, sock_path: Path) -> None:
    clients = [connect(sock_path) for _ in range(5)]
    events = [e for uid in range(1, 6) for e in utterance(uid, partials=8)]
    for event in events:
        publisher.publish(event)
    for client in clients:
        assert [client.event() for _ in events] == wire(events)


def test_publish_rejects_invalid_events_without_disturbing_subscribers(publisher: Publisher, sock_path: Path) -> None:
    client = connect(sock_path)
    with pytest.raises(protocol.ProtocolError, match="end_s 0.5 is before start_s 1.0"):
        publisher.publish(protocol.Final(audio_time_s=1.0, utterance_id=1, text="x", start_s=1.0, end_s=0.5))
    good = utterance(1, partials=1)
    for event in good:
        publisher.publish(event)
    assert [client.event() for _ in good] == wire(good)


def publish_and_follow(pub: Publisher, follower: Client, events: list[protocol.Event]) -> float:
    """Publish in chunks the follower can buffer, check it got them; return time spent in publish()."""
    spent = 0.0
    for start in range(0, len(events), 20):
        chunk = events[start : start + 20]
        started = time.perf_counter()
        for event in chunk:
            pub.publish(event)
        spent += time.perf_counter() - started
        assert [follower.event() for _ in chunk] == wire(chunk)
    return spent


def test_slow_subscriber_loses_partials_only_then_is_disconnected(sock_path: Path) -> None:
    pub = make_publisher(sock_path, queue_size=8, max_pending_finals=40)
    pub.start()
    try:
        slow = connect(sock_path, rcvbuf=4096)  # never reads until told to
        fast = connect(sock_path)
        text = "x" * 4096  # fills the slow one's socket buffers quickly
        burst = [e for uid in range(1, 11) for e in utterance(uid, partials=20, text=text)]
        assert publish_and_follow(pub, fast, burst) < 1.0, "publish() waited for a subscriber"

        fast.send(b'{"type":"status"}\n')
        queues = {q["id"]: q for q in fast.event()["subscriber_queues"]}
        dropped = sorted(q["dropped_partials"] for q in queues.values())
        assert dropped[0] == 0 and dropped[1] > 0  # only the slow one lost anything

        received = [slow.event() for _ in range(len(burst) - dropped[1])]
        assert [e for e in received if e["type"] != "partial"] == [e for e in wire(burst) if e["type"] != "partial"]
        assert [e for e in wire(burst) if e in received] == received  # in order, nothing invented

        flood = [protocol.Final(utterance_id=100 + i, text=text, start_s=0, end_s=1, audio_time_s=200)
                 for i in range(200)]
        assert publish_and_follow(pub, fast, flood) < 1.0
        tail = slow.events_until_eof()
        assert tail[-1]["type"] == "error" and tail[-1]["reason"] == "slow_subscriber"
        assert "max_pending_finals" in tail[-1]["message"]
        assert tail[:-1] == wire(flood[: len(tail) - 1])
        assert pub.subscriber_count == 1
    finally:
        pub.close(1.0)


def test_vanishing_subscribers_are_cleaned_up(publisher: Publisher, sock_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="edge.publish.server")
    survivor = connect(sock_path)
    mid_stream = connect(sock_path)
    half_line = connect(sock_path)
    killed = subprocess.Popen(
        [sys.executable, "-c",
         "import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]);"
         "print(s.recv(4096).decode().strip(), flush=True); time.sleep(60)", str(sock_path)],
        stdout=subprocess.PIPE,
    )
    assert json.loads(killed.stdout.readline())["type"] == "hello"
    wait_for(lambda: publisher.subscriber_count == 4)

    first = utterance(1, partials=3)
    for event in first:
        publisher.publish(event)
    assert mid_stream.event() == first[0].to_dict()
    mid_stream.close()
    half_line.send(b'{"type": "sta')
    half_line.close()
    killed.kill()
    killed.wait()
    killed.stdout.close()

    second = utterance(2, partials=3)
    for event in second:
        publisher.publish(event)
    assert [survivor.event() for _ in first + second] == wire(first + second)
    wait_for(lambda: publisher.subscriber_count == 1)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (b"hello daemon\n", "bad_json"),
        (b"[1, 2, 3]\n", "not_an_object"),
        (b'{"type": "reboot"}\n', "unknown_type"),
        (b"\xc3\x28\n", "bad_encoding"),
        (b"{" * (protocol.MAX_REQUEST_BYTES + 1000), "line_too_long"),
    ],
)
def test_malformed_input_gets_an_error_and_the_connection_survives(
    publisher: Publisher, sock_path: Path, garbage: bytes, reason: str
) -> None:
    client = connect(sock_path)
    client.send(garbage)
    error = client.event()
    assert error["type"] == "error" and error["reason"] == reason and error["message"]
    client.send(b'\n{"type": "status"}\n')
    assert client.event()["type"] == "status"
    event = protocol.Final(utterance_id=1, text="still here", start_s=0, end_s=1, audio_time_s=2)
    publisher.publish(event)
    assert client.event() == event.to_dict()


def test_status_request(sock_path: Path) -> None:
    pub = make_publisher(sock_path, status=lambda: {"audio_time_s": 42.5, "uptime_s": 12.0, "backend": "cpu",
                                                    "utterances": 3, "dropped_audio_s": 0.0})
    pub.start()
    try:
        other = connect(sock_path)
        client = connect(sock_path)
        client.send(b'{"type": "status"}\n')
        status = client.event()
        assert status["type"] == "status" and status["audio_time_s"] == 42.5
        assert status["uptime_s"] == 12.0 and status["utterances"] == 3 and status["backend"] == "cpu"
        assert status["subscribers"] == 2
        assert status["subscriber_id"] in {q["id"] for q in status["subscriber_queues"]}
        assert all(set(q) == {"id", "depth", "buffered_bytes", "dropped_partials"} for q in status["subscriber_queues"])
        other.close()
    finally:
        pub.close(1.0)


def test_half_closed_client_still_gets_its_reply_and_events(publisher: Publisher, sock_path: Path) -> None:
    client = connect(sock_path)
    client.send(b'{"type":"status"}\n')
    client.sock.shutdown(socket.SHUT_WR)
    assert client.event()["type"] == "status"
    event = protocol.SpeechStart(utterance_id=1, start_s=0.0, audio_time_s=0.1)
    publisher.publish(event)
    assert client.event() == event.to_dict()


def ask_status_then_close(sock_path: Path) -> None:
    """`echo status | nc -U -q 1`: a request, EOF, the reply, and the close well after the daemon read EOF."""
    client = connect(sock_path)
    client.send(b'{"type":"status"}\n')
    client.sock.shutdown(socket.SHUT_WR)
    assert client.event()["type"] == "status"
    time.sleep(0.3)  # nc's -q
    client.close()


def test_a_half_closed_client_that_then_closes_is_let_go_in_silence(sock_path: Path) -> None:
    """`echo status | nc -U -q 1`: EOF first, the close later, and no event in between (a silent
    room). Its slot used to be held until the next event, so such checks filled max_subscribers."""
    pub = make_publisher(sock_path, max_subscribers=2)
    pub.start()
    try:
        for _ in range(3):
            ask_status_then_close(sock_path)
            wait_for(lambda: pub.subscriber_count == 0, timeout=3.0)
        both = [connect(sock_path), connect(sock_path)]  # hello, not too_many_subscribers
        assert pub.subscriber_count == len(both)
    finally:
        pub.close(1.0)


def test_a_half_closed_client_that_closes_while_events_flow_is_let_go_without_a_traceback(sock_path: Path,
                                                                                          caplog) -> None:
    """The same check during speech: an event written after the close failed, asyncio closed the socket,
    and the next hang-up poll raised ValueError on its descriptor (-1), a traceback per check and a slot
    held until the next event."""
    caplog.set_level(logging.WARNING)
    pub = make_publisher(sock_path, max_subscribers=2)
    pub.start()
    try:
        for uid in range(3):
            ask_status_then_close(sock_path)
            pub.publish(utterance(uid + 1, partials=1)[0])  # written to the closed peer
            wait_for(lambda: pub.subscriber_count == 0, timeout=3.0)
        assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        pub.close(1.0)


def test_a_hello_that_fails_for_new_clients_keeps_no_slot(sock_path: Path, caplog) -> None:
    """Each such client kept its place until 1,024 events piled up for it: three filled max_subscribers: 3."""
    broken = [False]

    def hello() -> dict:
        if broken[0]:
            raise RuntimeError("status source gone")
        return HELLO

    pub = make_publisher(sock_path, hello=hello, max_subscribers=3)
    pub.start()
    try:
        broken[0] = True
        for _ in range(4):
            assert Client(sock_path).line() == b""  # cut off: no hello to give
        assert pub.subscriber_count == 0
        broken[0] = False
        connect(sock_path)  # its hello, not too_many_subscribers
    finally:
        pub.close(1.0)


def test_a_socket_path_of_the_longest_allowed_length_is_bound(sock_path: Path) -> None:
    """check-config allowed 107 bytes, but the temporary name bound first is 18 longer: 90-107 stopped `run`."""
    from edge.limits import MAX_SOCKET_PATH

    directory = sock_path.parent
    longest = directory / ("s" * (MAX_SOCKET_PATH - len(os.fsencode(directory)) - 1))
    assert len(os.fsencode(longest)) == MAX_SOCKET_PATH
    PublishConfig(socket=longest)
    pub = make_publisher(longest)
    pub.start()
    try:
        connect(longest)
    finally:
        pub.close(1.0)


def test_a_client_that_asks_and_never_reads_is_held_back_by_its_socket(sock_path: Path) -> None:
    """Replies wait for the client to take the ones before, so a client that sends and never reads
    blocks on its own socket: the daemon holds one queued reply for it, not one per request."""
    pub = make_publisher(sock_path, max_pending_finals=100_000)  # only back-pressure can bound it
    pub.start()
    try:
        flooder = connect(sock_path, rcvbuf=4096)
        flooder.sock.setblocking(False)
        deadline = time.monotonic() + 3.0
        with contextlib.suppress(BlockingIOError):
            while time.monotonic() < deadline:
                flooder.sock.send(b'{"type":"status"}\n' * 1000)
        asking = connect(sock_path)
        asking.send(b'{"type":"status"}\n')
        status = asking.event()
        held = next(q for q in status["subscriber_queues"] if q["id"] != status["subscriber_id"])
        assert held["depth"] <= 1 and held["buffered_bytes"] <= 2 * 64 * 1024
    finally:
        pub.close(1.0)


def test_failing_status_provider_gives_an_error_event(sock_path: Path) -> None:
    def broken() -> dict:
        raise RuntimeError("pipeline not ready")

    pub = make_publisher(sock_path, status=broken)
    pub.start()
    try:
        client = connect(sock_path)
        client.send(b'{"type": "status"}\n')
        error = client.event()
        assert error["reason"] == "status_unavailable" and "pipeline not ready" in error["message"]
    finally:
        pub.close(1.0)


def test_stale_socket_is_replaced(sock_path: Path) -> None:
    sock_path.parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(sock_path))  # bound, never listening: what a killed daemon leaves
    pub = make_publisher(sock_path)
    pub.start()
    try:
        connect(sock_path).close()
    finally:
        pub.close(1.0)


def test_live_socket_is_refused(publisher: Publisher, sock_path: Path) -> None:
    with pytest.raises(PublisherError, match=f"another edge-asr is running on {sock_path}") as caught:
        make_publisher(sock_path).start()
    assert _cannot_start(caught.value) == EX_STARTUP  # the other one may stop: systemd's restart may cure it
    assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
    connect(sock_path).close()


@pytest.mark.parametrize("kind", ["file", "directory", "symlink"])
def test_non_socket_path_is_refused_and_kept(sock_path: Path, kind: str) -> None:
    sock_path.parent.mkdir(parents=True)
    if kind == "file":
        sock_path.write_text("precious")
    elif kind == "directory":
        sock_path.mkdir()
    else:
        sock_path.symlink_to(sock_path.parent)
    with pytest.raises(PublisherSetupError, match="refusing to replace it"):
        make_publisher(sock_path).start()
    assert sock_path.is_symlink() if kind == "symlink" else sock_path.exists()
    if kind == "file":
        assert sock_path.read_text() == "precious"


def _other_group() -> grp.struct_group:
    """A group we may chown to: any group as root, else our own primary group."""
    if os.geteuid() == 0:
        return next((g for g in grp.getgrall() if g.gr_gid != os.getgid()), grp.getgrgid(os.getgid()))
    return grp.getgrgid(os.getgid())


def test_socket_mode_and_group_are_applied(sock_path: Path) -> None:
    group = _other_group()
    pub = make_publisher(sock_path, socket_mode="0600", socket_group=group.gr_name)
    pub.start()
    try:
        st = os.stat(sock_path)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_gid == group.gr_gid
        assert os.listdir(sock_path.parent) == ["asr.sock"]
    finally:
        pub.close(1.0)


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"socket_group": "no-such-group-edge"}, "no group named 'no-such-group-edge'"),
        ({"socket_mode": "rw-rw----"}, "not an octal mode"),
        ({"socket_mode": "1777"}, "out of range"),
    ],
)
def test_bad_socket_settings_are_clear_errors(sock_path: Path, options: dict, needle: str) -> None:
    """Exit 78, not a loop of five restarts that each load the model and fail alike."""
    with pytest.raises(PublisherSetupError, match=needle) as caught:
        make_publisher(sock_path, **options).start()
    assert _cannot_start(caught.value) == EX_CONFIG
    assert not sock_path.exists()


def test_unusable_parent_directory_is_a_clear_error(sock_path: Path) -> None:
    sock_path.parent.parent.joinpath("run").write_text("not a directory")
    with pytest.raises(PublisherSetupError, match="cannot create directory"):
        make_publisher(sock_path).start()


def test_close_flushes_pending_events_then_eof_and_removes_socket(sock_path: Path) -> None:
    pub = make_publisher(sock_path)
    pub.start()
    clients = [connect(sock_path) for _ in range(3)]
    events = utterance(1, partials=5) + utterance(2, partials=5)
    for event in events:
        pub.publish(event)
    pub.close(timeout=2.0)
    assert not sock_path.exists()
    for client in clients:
        assert client.events_until_eof() == wire(events)
    pub.publish(events[0])  # after close: ignored, must not raise
    assert pub.subscriber_count == 0


def test_close_is_bounded_with_a_stuck_subscriber(sock_path: Path) -> None:
    pub = make_publisher(sock_path, queue_size=8, max_pending_finals=10_000)
    pub.start()
    stuck = connect(sock_path, rcvbuf=4096)
    for uid in range(300):
        pub.publish(protocol.Final(utterance_id=uid, text="y" * 4096, start_s=0, end_s=1, audio_time_s=1))
    started = time.monotonic()
    pub.close(timeout=0.5)
    assert time.monotonic() - started < 3.0
    assert not sock_path.exists()
    stuck.close()


def test_close_leaves_a_newer_daemons_socket_alone(sock_path: Path) -> None:
    pub = make_publisher(sock_path)
    pub.start()
    sock_path.unlink()
    with socket.socket(socket.AF_UNIX) as newer:
        newer.bind(str(sock_path))
        pub.close(1.0)
        assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)


@pytest.fixture
def tcp_publisher(sock_path: Path) -> Iterator[tuple[Publisher, int]]:
    """A started publisher with its TCP listener on, and the port."""
    port = free_port()
    pub = make_publisher(sock_path, tcp_host="127.0.0.1", tcp_port=port)
    pub.start()
    yield pub, port
    pub.close(1.0)


def test_optional_tcp_listener(tcp_publisher: tuple[Publisher, int]) -> None:
    pub, port = tcp_publisher
    client = Client(("127.0.0.1", port))
    assert client.event()["type"] == "hello"
    event = protocol.SpeechStart(utterance_id=1, start_s=0.0, audio_time_s=0.5)
    pub.publish(event)
    assert client.event() == event.to_dict()
    # Keepalive probes, so that a peer that lost power does not hold a slot for ever in a silent room.
    [server_side] = [sub.writer.get_extra_info("socket") for sub in list(pub._subscribers.values())]
    assert server_side.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert [server_side.getsockopt(socket.IPPROTO_TCP, getattr(socket, name)) for name in TCP_KEEPALIVE] == [60, 10, 6]


def test_a_tcp_peer_that_hangs_up_is_let_go_in_silence(tcp_publisher: tuple[Publisher, int]) -> None:
    """TCP cannot tell a half-close from a close until a write fails: a closed peer used to stay
    counted (toward publish.max_subscribers) until the next event. EOF now ends a TCP subscription
    once its replies are sent; `echo ... | nc` still gets its status."""
    pub, port = tcp_publisher
    gone = Client(("127.0.0.1", port))
    assert gone.event()["type"] == "hello"
    wait_for(lambda: pub.subscriber_count == 1)
    gone.close()
    wait_for(lambda: pub.subscriber_count == 0, timeout=2.0)

    asking = Client(("127.0.0.1", port))
    asking.send(b'{"type":"status"}\n')
    asking.sock.shutdown(socket.SHUT_WR)
    assert [e["type"] for e in asking.events_until_eof()] == ["hello", "status"]
    wait_for(lambda: pub.subscriber_count == 0, timeout=2.0)


def test_a_web_pages_post_to_the_tcp_listener_is_cut_off_at_its_request_line(
        tcp_publisher: tuple[Publisher, int]) -> None:
    """A cross-site POST (text/plain, no CORS preflight) from any page a browser on the box opens: its 14
    header lines were bad requests, under the cut at 16, and its JSON body ran as a request (security
    review: a vocabulary was replaced that way)."""
    _, port = tcp_publisher
    headers = [f"X-Header-{i}: value".encode() for i in range(12)]
    request = b"\r\n".join([b"POST / HTTP/1.1", b"Host: 127.0.0.1", *headers, b"Content-Type: text/plain", b"",
                             b'{"type":"status"}\n'])
    client = Client(("127.0.0.1", port))
    client.send(request)
    events = client.events_until_eof()
    assert [e["type"] for e in events] == ["hello", "error"]
    assert events[1]["reason"] == "http_request"


def test_tcp_bind_failure_is_clear_and_cleans_up(sock_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PublisherError, match=f"cannot listen on tcp 127.0.0.1:{port}"):
            make_publisher(sock_path, tcp_port=port).start()
    assert not sock_path.exists()


def test_a_tcp_listener_the_sandbox_forbids_is_a_setup_error_not_a_restart_loop(sock_path: Path, monkeypatch) -> None:
    """The default unit's RestrictAddressFamilies=AF_UNIX: exit 1 had systemd restart it 5 times into a failed unit."""
    import errno

    port = free_port()

    def sandboxed(*_: object, **__: object) -> socket.socket:
        raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")

    monkeypatch.setattr(socket, "create_server", sandboxed)
    with pytest.raises(PublisherError, match="the default unit allows no IP socket; see docs/operations.md") as caught:
        make_publisher(sock_path, tcp_port=port).start()
    assert _cannot_start(caught.value) == EX_CONFIG
    assert not sock_path.exists()


def test_publish_before_start_is_an_error(sock_path: Path) -> None:
    with pytest.raises(RuntimeError, match="before start"):
        make_publisher(sock_path).publish(protocol.SpeechStart(utterance_id=1, start_s=0, audio_time_s=0))


def test_a_flood_of_bad_lines_costs_one_client_its_connection_not_the_others_their_latency(sock_path: Path) -> None:
    """Issue 10 item 3: 200 KB of garbage lines used to stall every subscriber for seconds."""
    calls = []

    def status() -> dict:
        calls.append(1)
        return {"audio_time_s": 1.0, "uptime_s": 5.0, "backend": "cpu", "utterances": 0}

    pub = make_publisher(sock_path, status=status)
    pub.start()
    try:
        bystander, flooder = connect(sock_path), connect(sock_path)
        calls.clear()
        flooder.sock.sendall(b"x\n" * 100_000)
        started = time.monotonic()
        event = protocol.Final(utterance_id=1, text="still on time", start_s=0, end_s=1, audio_time_s=2)
        pub.publish(event)
        assert bystander.event() == event.to_dict()
        assert time.monotonic() - started < 0.3  # before, a whole 64 KiB read was parsed first: 447 ms (docs/benchmarks.md)
        replies = flooder.events_until_eof()
        errors = [e for e in replies if e["type"] == "error"]
        assert errors[-1]["reason"] == "too_many_bad_requests"
        assert len(errors) <= 20  # parsing stopped at the budget, not after 100,000 lines
        assert calls == []  # no status was built for an error reply
        wait_for(lambda: pub.subscriber_count == 1)
    finally:
        pub.close(1.0)


def test_a_client_streaming_newlines_is_cut_off(sock_path: Path) -> None:
    pub = make_publisher(sock_path)
    pub.start()
    try:
        flooder = connect(sock_path)
        flooder.sock.sendall(b"\n" * (protocol.MAX_BLANK_LINES + 100))
        errors = [e for e in flooder.events_until_eof() if e["type"] == "error"]
        assert [e["reason"] for e in errors][-1] == "too_many_bad_requests"
        assert {e["reason"] for e in errors[:-1]} == {"blank_line"}
        wait_for(lambda: pub.subscriber_count == 0)
    finally:
        pub.close(1.0)


def test_subscribers_past_the_cap_are_refused_with_a_reason(sock_path: Path) -> None:
    """Issue 10 item 2: 1,100 idle connections exhausted the descriptors; now the extra ones are told no."""
    pub = make_publisher(sock_path, max_subscribers=3)
    pub.start()
    try:
        kept = [connect(sock_path) for _ in range(3)]
        extra = Client(sock_path)
        refusal = [json.loads(line) for line in iter(extra.line, b"")]
        assert [e["type"] for e in refusal] == ["error"] and refusal[0]["reason"] == "too_many_subscribers"
        assert "publish.max_subscribers" in refusal[0]["message"]
        assert pub.subscriber_count == 3
        kept[0].close()
        wait_for(lambda: pub.subscriber_count == 2)
        connect(sock_path)  # a freed place is taken again: its hello arrives
    finally:
        pub.close(1.0)


def test_the_daemon_raises_its_descriptor_limit_for_its_subscribers() -> None:
    import resource

    from edge.commands.run import RESERVED_FDS, reserve_descriptors

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        reserve_descriptors(1000)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= min(1000 + RESERVED_FDS, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_temporary_bind_name_is_unguessable_and_nothing_there_is_removed(sock_path: Path) -> None:
    """Issue 10 item 11: the socket was first bound at .asr.sock.<pid>, unlinking whatever was there."""
    sock_path.parent.mkdir(parents=True, exist_ok=True)
    planted = sock_path.with_name(f".{sock_path.name}.{os.getpid()}")
    squatter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    squatter.bind(str(planted))
    pub = make_publisher(sock_path)
    pub.start()
    try:
        assert planted.exists() and stat.S_ISSOCK(os.lstat(planted).st_mode)
        assert sorted(p.name for p in sock_path.parent.iterdir()) == sorted([sock_path.name, planted.name])
    finally:
        pub.close(1.0)
        squatter.close()


def test_reload_signals_a_daemon_whose_subscriber_slots_are_full(sock_path: Path, tmp_path: Path, capsys) -> None:
    """`systemctl reload` subscribes to hear the answer; refused as one too many, it sent no SIGHUP, so a
    room with publish.max_subscribers caption screens could not be reloaded at all."""
    import argparse

    from edge.commands import reload

    marker = tmp_path / "hup"
    child = subprocess.Popen([sys.executable, "-c", "import pathlib, signal, sys, time; signal.signal(signal.SIGHUP, "
                              "lambda *_: pathlib.Path(sys.argv[1]).touch()); print(flush=True); time.sleep(30)",
                              str(marker)], stdout=subprocess.PIPE)
    pub = make_publisher(sock_path, max_subscribers=1)
    pub.start()
    try:
        child.stdout.readline()  # its handler is in place
        screen = connect(sock_path)  # the one slot, held
        args = argparse.Namespace(socket=str(sock_path), config=None, pid=child.pid, timeout=2.0)
        assert reload.run(args) == 1
        wait_for(marker.exists)
        assert "sent SIGHUP to" in capsys.readouterr().err
        screen.close()
    finally:
        pub.close(1.0)
        child.kill()
        child.wait()
        child.stdout.close()
