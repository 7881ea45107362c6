"""`edge-asr captions`: the real command against a real publisher socket, over HTTP and in a real Chromium.

The daemon is a `Publisher` (the daemon's own socket server) fed by hand, so every event is
known; the caption server runs as `python -m edge captions`, as the unit runs it. The last
test puts the real daemon (`edge-asr run` on a long-form file at real-time pace) under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import http.server
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from edge.apps.captions.server import MAX_BROWSERS, MAX_BROWSERS_PER_ADDRESS, MAX_PENDING, Hub
from edge.config import CAPTION_LINES
from edge.publish import protocol
from edge.publish.client import parse_event
from tests.conftest import REPO, notifications, notify_socket_at
from tests.ports import accepts, free_port
from tests.test_daemon import Subscriber, finish, start_daemon, write_config
from tests.test_publisher import make_publisher, wait_for
from tests.test_systemd_unit import MAX_EXPOSURE, analyze, needs_analyze, script, stand_in_model, unit_with_venv

if TYPE_CHECKING:
    from selenium.webdriver import Chrome as WebDriver

UNIT = REPO / "systemd" / "edge-asr-captions.service"
CONFIG = """\
captions:
  lines: 3
  font_size: 48
  title: "Salle B · 会议室"
"""
ZH = "把会议室的灯打开"
EN = "Turn on the kitchen lights."
FINAL_TO_PAGE_P95_MS = 300  # the bound, socket to DOM


class FakeDaemon:
    """The daemon's socket with events fed by hand; stop() then start() is a daemon restart."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.publisher = None
        self.utterance = 0

    def start(self) -> None:
        self.publisher = make_publisher(self.path, queue_size=65536, max_pending_finals=65536)
        self.publisher.start()

    def stop(self) -> None:
        self.publisher.close(timeout=1.0)

    def final(self, text: str, language: str = "en") -> int:
        self.utterance += 1
        self.publisher.publish(protocol.Final(utterance_id=self.utterance, text=text, start_s=0.0, end_s=1.0,
                                              audio_time_s=1.0, language=language))
        return self.utterance

    def partial(self, text: str, stable: str) -> None:
        self.publisher.publish(protocol.Partial(utterance_id=self.utterance + 1, text=text, stable_text=stable,
                                                start_s=0.0, end_s=1.0, audio_time_s=1.0))


class CaptionServer:
    """`python -m edge captions` on a free localhost port for the daemon socket at `socket_path`,
    kept across stop() and start()."""

    def __init__(self, workdir: Path, socket_path: Path) -> None:
        self.workdir = workdir
        self.socket_path = socket_path
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = captions_process(self.workdir, "--socket", str(self.socket_path),
                                        "--listen", f"127.0.0.1:{self.port}")
        wait_for(lambda: self.process.poll() is not None or accepts(self.port), timeout=20)
        assert self.process.poll() is None, self.log()

    def stop(self) -> None:
        self.process.terminate()
        assert self.process.wait(10) == 0, self.log()

    def log(self) -> str:
        return (self.workdir / "captions.log").read_text()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


def captions_process(workdir: Path, *args: str) -> subprocess.Popen:
    """`edge-asr captions` with the config in `workdir`, writing its log to workdir/captions.log."""
    command = [sys.executable, "-m", "edge", "captions", "--config", str(workdir / "config.yaml"), *args]
    with open(workdir / "captions.log", "a") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def config_dir(base: Path, text: str = CONFIG) -> Path:
    """A config file, and the stand-in model its default model.path needs."""
    (base / "models" / "whisper-tiny.en-int8").mkdir(parents=True, exist_ok=True)
    (base / "models" / "whisper-tiny.en-int8" / "manifest.json").write_text("{}")
    (base / "config.yaml").write_text(text)
    return base


@pytest.fixture(scope="module")
def daemon() -> Iterator[FakeDaemon]:
    directory = Path(tempfile.mkdtemp(prefix="easr-cap-", dir="/tmp"))  # AF_UNIX paths must be short
    fake = FakeDaemon(directory / "asr.sock")
    fake.start()
    yield fake
    fake.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def server(daemon: FakeDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CaptionServer]:
    captions = CaptionServer(config_dir(tmp_path_factory.mktemp("captions")), daemon.path)
    captions.start()
    yield captions
    captions.stop()


# --- HTTP -------------------------------------------------------------------------------


def fetch(port: int, method: str, path: str, host: str = "127.0.0.1") -> tuple[http.client.HTTPResponse, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path, headers={"Host": host})
        response = connection.getresponse()
        return response, response.read()
    finally:
        connection.close()


class EventStream:
    """One browser's event stream, read by hand. HTTP/1.0 keeps the body free of chunk framing."""

    def __init__(self, port: int, rcvbuf: int | None = None, source: str = "127.0.0.1") -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind((source, 0))  # another loopback address: another machine, as the server counts them
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(10)
        self.sock.sendall(b"GET /events HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        self.pending = b""
        self.status = int(self._until(b"\r\n\r\n").split()[1])

    def _until(self, separator: bytes) -> bytes:
        while separator not in self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the server closed the stream")
            self.pending += data
        block, self.pending = self.pending.split(separator, 1)
        return block

    def event(self) -> tuple[str, dict]:
        """The next event (keep-alive comments skipped) as (name, data)."""
        while True:
            fields = dict(line.split(": ", 1) for line in self._until(b"\n\n").decode().splitlines()
                          if not line.startswith(":"))
            if fields:
                return fields["event"], json.loads(fields["data"])

    def next_of(self, name: str) -> dict:
        while True:
            kind, data = self.event()
            if kind == name:
                return data

    def daemon_connected(self) -> dict:
        """The next `daemon` event saying connected (failed retries before it say so too)."""
        while not (state := self.next_of("daemon"))["connected"]:
            pass
        return state

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def stream(server: CaptionServer) -> Iterator[EventStream]:
    """An open stream that has seen the daemon connected, so events published now reach it."""
    opened = EventStream(server.port)
    assert opened.status == 200
    opened.daemon_connected()
    yield opened
    opened.close()


def test_the_page_is_served_with_its_settings_and_nothing_from_elsewhere(server: CaptionServer) -> None:
    response, body = fetch(server.port, "GET", "/?lines=2")
    page = body.decode()
    assert response.status == 200 and response.getheader("Content-Type") == "text/html; charset=utf-8"
    settings = json.loads(re.search(r'<script id="settings" type="application/json">(.*?)</script>', page).group(1))
    assert settings["lines"] == 3 and settings["font_size"] == 48 and settings["title"] == "Salle B · 会议室"
    assert response.getheader("Content-Security-Policy").startswith("default-src 'none'; script-src 'sha256-")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the page must load nothing from elsewhere"


@pytest.mark.parametrize(
    "path", ["/index.html", "/page.html", "/events/", "/events/x", "/static/", "/../config.yaml",
             "/edge/apps/captions/page.html", "//etc/passwd"]
)
def test_only_the_page_and_its_stream_exist(server: CaptionServer, path: str) -> None:
    assert fetch(server.port, "GET", path)[0].status == 404


@pytest.mark.parametrize(("method", "path"), [("POST", "/"), ("PUT", "/events"), ("DELETE", "/"), ("HEAD", "/events")])
def test_other_methods_are_refused(server: CaptionServer, method: str, path: str) -> None:
    assert fetch(server.port, method, path)[0].status == 405


def test_bad_requests_and_foreign_host_names_get_4xx(server: CaptionServer) -> None:
    assert fetch(server.port, "GET", "/", host="localhost:1")[0].status == 200
    assert fetch(server.port, "GET", "/", host="[::1]")[0].status == 200
    assert fetch(server.port, "GET", "/", host="attacker.example:8080")[0].status == 403  # DNS rebinding
    for request in (b"NOT HTTP AT ALL\r\n\r\n", b"GET / HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            raw.sendall(request)
            assert re.match(rb"HTTP/1\.[01] 400 ", raw.recv(100))
    assert "Traceback" not in server.log() and "ERROR" not in server.log()  # a LAN scanner must not fill the journal


def test_a_final_reaches_the_event_stream(daemon: FakeDaemon, stream: EventStream) -> None:
    utterance = daemon.final(ZH, language="zh")
    assert stream.next_of("final") == {"id": utterance, "text": ZH, "language": "zh"}


def test_a_reader_behind_gets_every_final_in_order_and_the_newest_partial(
    daemon: FakeDaemon, stream: EventStream
) -> None:
    first = daemon.utterance + 1
    for n in range(MAX_PENDING // 2):
        daemon.partial(f"partial {n} " + "x" * 500, stable="partial")
        daemon.final(f"final {n} " + "y" * 500)
    daemon.partial("the newest partial", stable="the")
    time.sleep(0.5)  # a page that looks away for a moment
    finals = [stream.next_of("final")["id"] for _ in range(MAX_PENDING // 2)]
    assert finals == list(range(first, first + MAX_PENDING // 2))
    while stream.next_of("partial")["text"] != "the newest partial":  # older ones may come or not
        pass


def test_a_partial_waiting_when_the_daemon_goes_away_is_not_shown_after_it() -> None:
    """A browser behind held its newest partial apart and got it after everything else: after the
    daemon's restart it showed the old run's partial, which no final of the new run cleared."""
    async def scenario() -> tuple[list[bytes], bytes | None]:
        hub = Hub()
        browser = hub.join(None)
        hub.send("partial", {"id": 61, "text": "stale", "stable": ""})
        hub.send("daemon", {"connected": False, "message": "restarting"})
        hub.send("daemon", {"connected": True, "message": "back"})
        sent = [await browser.next() for _ in range(3)]
        try:
            return sent, await asyncio.wait_for(browser.next(), 0.3)
        except asyncio.TimeoutError:
            return sent, None

    sent, after = asyncio.run(scenario())
    assert [chunk.split(b"\n")[0] for chunk in sent] == [b"event: daemon"] * 3
    assert after is None, after


def test_a_stalled_browser_is_cut_off_and_never_slows_the_others(daemon: FakeDaemon, server: CaptionServer) -> None:
    stalled = EventStream(server.port, rcvbuf=2048)
    fast = EventStream(server.port)
    fast.daemon_connected()
    count, first = 4 * MAX_PENDING, daemon.utterance + 1  # 4 MB: far beyond the socket buffers too
    received: list[int] = []
    reader = threading.Thread(target=lambda: received.extend(fast.next_of("final")["id"] for _ in range(count)))
    reader.start()
    for n in range(count):
        daemon.final(f"{n} " + "z" * 4000)
        time.sleep(0.001)  # a burst, but one a reading browser keeps up with
    # Waiting for the reader, not 2 s: on a loaded box it could still be taking the last finals. A
    # reader the server let fall behind would have been cut off, and missed some.
    reader.join(10)
    assert not reader.is_alive() and received == list(range(first, first + count))
    with pytest.raises((EOFError, ConnectionResetError)):  # it was disconnected, far from the end
        while stalled.next_of("final")["id"] < first + count - 1:
            pass
    assert f"a caption page fell {MAX_PENDING} events behind; disconnecting it" in server.log()
    stalled.close()
    fast.close()


def new_stream_status(port: int, source: str = "127.0.0.1") -> int:
    opened = EventStream(port, source=source)
    opened.close()
    return opened.status


def test_too_many_pages_get_503_and_closed_ones_leave_at_once(server: CaptionServer) -> None:
    sources = [f"127.0.0.{1 + n // MAX_BROWSERS_PER_ADDRESS}" for n in range(MAX_BROWSERS)]
    streams = [EventStream(server.port, source=source) for source in sources]
    try:
        assert [opened.status for opened in streams] == [200] * MAX_BROWSERS
        assert new_stream_status(server.port, source="127.0.0.99") == 503
    finally:
        for opened in streams:
            opened.close()
    wait_for(lambda: new_stream_status(server.port) == 200, timeout=2)


def test_one_address_cannot_take_every_page_slot(server: CaptionServer) -> None:
    """One host on the LAN opened all 64 streams: the room's own screen got 503 until it let them go."""
    streams = [EventStream(server.port) for _ in range(MAX_BROWSERS_PER_ADDRESS)]
    try:
        assert [opened.status for opened in streams] == [200] * MAX_BROWSERS_PER_ADDRESS
        assert new_stream_status(server.port) == 503
        assert new_stream_status(server.port, source="127.0.0.2") == 200  # the room's screen still gets in
    finally:
        for opened in streams:
            opened.close()


def test_the_daemon_going_away_is_told_and_followed_by_a_reconnect(daemon: FakeDaemon, stream: EventStream) -> None:
    daemon.stop()
    try:
        assert stream.next_of("daemon")["connected"] is False
    finally:
        daemon.start()
    assert stream.daemon_connected() == {"connected": True, "message": "whisper-tiny.en-int8 on cpu"}
    utterance = daemon.final(EN)
    assert stream.next_of("final")["id"] == utterance


def test_a_newer_daemons_extra_fields_are_ignored() -> None:
    """docs/protocol.md: fields may be added without a version bump; the page must keep working."""
    line = ('{"type":"final","audio_time_s":2.0,"utterance_id":7,"text":"hi","is_final":true,"start_s":0.5,'
            '"end_s":1.5,"language":"en","speaker":"A"}\n').encode()
    assert parse_event(line) == protocol.Final(audio_time_s=2.0, utterance_id=7, text="hi", start_s=0.5, end_s=1.5,
                                               language="en")
    with pytest.raises(protocol.ProtocolError):
        parse_event(b'{"type":"final","audio_time_s":2.0}\n')


# --- the command --------------------------------------------------------------------------


def run_captions(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (workdir / "captions.log").unlink(missing_ok=True)
    process = captions_process(workdir, *args)
    process.wait(30)
    return subprocess.CompletedProcess(process.args, process.returncode, "", (workdir / "captions.log").read_text())


def test_a_bad_listen_value_names_the_key_value_and_what_is_allowed(tmp_path: Path) -> None:
    config_dir(tmp_path, "captions:\n  listen: 0.0.0.0:80\n")
    result = run_captions(tmp_path)
    assert result.returncode == 78
    assert 'line 2: captions.listen: "0.0.0.0:80" has a port out of range; expected HOST:PORT' in result.stderr
    result = run_captions(tmp_path, "--listen", "localhost:8080")
    assert result.returncode == 2
    assert '"localhost:8080" does not start with an IP address; expected HOST:PORT' in result.stderr


def test_an_address_in_use_is_one_clear_line(tmp_path: Path) -> None:
    config_dir(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_captions(tmp_path, "--socket", "/nonexistent.sock", "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"cannot serve the caption page on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr


def test_an_address_the_box_does_not_have_yet_is_served_once_it_comes(tmp_path: Path) -> None:
    """captions.listen on the LAN address, at boot before DHCP gave it: EADDRNOTAVAIL exited 1, five
    restarts in 25 s, then a failed unit. Now it is bound anyway (192.0.2.1: TEST-NET-1, on no box)."""
    config_dir(tmp_path)
    process = captions_process(tmp_path, "--socket", "/nonexistent.sock", "--listen", f"192.0.2.1:{free_port()}")
    try:
        wait_for(lambda: "not an address of this box (yet)" in (tmp_path / "captions.log").read_text(), timeout=20)
        time.sleep(0.5)
        assert process.poll() is None, (tmp_path / "captions.log").read_text()
    finally:
        process.terminate()
        assert process.wait(10) == 0


def test_a_reader_that_fails_stops_the_server_with_status_1(tmp_path: Path, daemon: FakeDaemon) -> None:
    """An unexpected error ended the thread reading the daemon without a word: the page went on showing
    "Live" with frozen captions while the server answered. Now it is logged and the server exits 1,
    which systemd restarts (page_message made to fail stands in for any such error)."""
    config_dir(tmp_path)
    failing = ("import sys, edge.apps.captions.feed as feed\n"
               "def broken(event): raise KeyError('a field the page expected')\n"
               "feed.page_message = broken\n"
               "from edge.cli import main\n"
               "sys.exit(main(sys.argv[1:]))")
    command = [sys.executable, "-c", failing, "captions", "--config", str(tmp_path / "config.yaml"),
               "--socket", str(daemon.path), "--listen", f"127.0.0.1:{free_port()}"]
    before = daemon.publisher.subscriber_count
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: daemon.publisher.subscriber_count > before, timeout=20)
        daemon.final("this final breaks the reader")
        out, _ = process.communicate(timeout=15)
    finally:
        process.kill()
    assert process.returncode == 1, out
    assert "the caption server stops after an unexpected error reading the daemon" in out
    assert "KeyError: 'a field the page expected'" in out


def test_the_watchdog_pings_while_the_page_idles_and_stops_while_its_event_loop_is_blocked(
        tmp_path: Path, daemon: FakeDaemon) -> None:
    """READY=1 once the page is served; pings while no browser is there; none while a callback holds the
    event loop (Hub.send made to sleep on one final stands in for any such hang), and again after."""
    config_dir(tmp_path)
    blocking = ("import sys, time, edge.apps.captions.server as server\n"
                "server.LOOP_BEAT_S = 0.25\n"  # several beats between two checks: an idle window is never short of one
                "send = server.Hub.send\n"
                "def slow(hub, name, data):\n"
                "    if data.get('text') == 'block the loop': time.sleep(5)\n"
                "    send(hub, name, data)\n"
                "server.Hub.send = slow\n"
                "from edge.cli import main\n"
                "sys.exit(main(sys.argv[1:]))")
    notify = notify_socket_at(tmp_path / "notify.sock")
    command = [sys.executable, "-c", blocking, "captions", "--config", str(tmp_path / "config.yaml"),
               "--socket", str(daemon.path), "--listen", f"127.0.0.1:{free_port()}"]
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "3000000"}  # checks every 1.5 s
    before = daemon.publisher.subscriber_count
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: daemon.publisher.subscriber_count > before, timeout=20)
        idle = [line for _, line in notifications(notify, 3.5)]
        assert "READY=1" in idle and idle.count("WATCHDOG=1") >= 2, idle
        daemon.final("block the loop")
        blocked = time.monotonic()
        # checks every 1.5 s: by blocked + 3.1 s one has seen no beat for a whole period; the loop is free
        # again from blocked + 5 s
        late = [round(at - blocked, 2) for at, line in notifications(notify, 4.8)
                if line == "WATCHDOG=1" and at > blocked + 3.1]
        assert late == [], f"pings while the loop was blocked: {late}"
        assert "WATCHDOG=1" in [line for _, line in notifications(notify, 3.5)]
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=15)
    finally:
        process.kill()
        notify.close()
    assert process.returncode == 0, out
    assert "no beat of the page's event loop for 1.5 s: withholding watchdog pings" in out


def test_the_event_loops_beat_ends_with_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """The beat is the watchdog's only evidence of a live loop: it runs while the app runs, and not after
    (a beat left running would feed the watchdog of a server that is shutting down)."""
    from aiohttp import web

    from edge.apps.captions import server
    from edge.config import CaptionsConfig

    monkeypatch.setattr(server, "LOOP_BEAT_S", 0.01)
    beats: list[float] = []

    async def run() -> tuple[int, int]:
        runner = web.AppRunner(server.build_app(CaptionsConfig(), "/nonexistent/asr.sock", alive=lambda: beats.append(1)))
        await runner.setup()
        await asyncio.sleep(0.2)
        running = len(beats)
        await runner.cleanup()
        ended = len(beats)
        await asyncio.sleep(0.2)
        return running, len(beats) - ended

    running, after = asyncio.run(run())
    assert running >= 5 and after == 0, (running, after)


# --- the unit -----------------------------------------------------------------------------


@needs_analyze
def test_unit_verifies_silently_and_scores_at_most_the_limit(tmp_path: Path) -> None:
    result = analyze("verify", str(unit_with_venv(tmp_path, UNIT)))
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")
    result = analyze("security", "--offline=true", str(UNIT))
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert match and float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_unit_contract() -> None:
    lines = set(UNIT.read_text().splitlines())
    for line in ("After=edge-asr.service", "Type=notify", "WatchdogSec=30s",
                 "ExecStart=/opt/edge-asr/venv/bin/edge-asr captions --config /etc/edge-asr/config.yaml",
                 "RestartPreventExitStatus=78", "SupplementaryGroups=edge-asr", "IPAddressDeny=any",
                 "IPAddressAllow=localhost", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6"):
        assert line in lines


def test_installed_disabled_and_removed_on_uninstall(tmp_path: Path) -> None:
    model = stand_in_model(tmp_path / "model")
    root = tmp_path / "root"
    root.mkdir()
    output = script("install.sh", "--destdir", str(root), "--model-from", str(model))
    unit = root / "etc/systemd/system/edge-asr-captions.service"
    assert unit.read_text() == UNIT.read_text()
    assert not re.search(r"would run: systemctl enable .*captions", output)
    output = script("uninstall.sh", "--destdir", str(root))
    assert "systemctl disable --now edge-asr-captions.service" in output and not unit.exists()


# --- a real browser -------------------------------------------------------------------------

CHROME_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,720")


def start_chromium(profile: Path) -> WebDriver:
    """Debian's headless Chromium under selenium, with a fresh profile in `profile`.

    Also used by scripts/screenshot_captions.py and scripts/bench_captions.py, so that the
    README picture and the soak see the page as the tests do.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver fonts-noto-cjk)")
    driver = start_chromium(tmp_path_factory.mktemp("chromium"))
    yield driver
    driver.quit()


def until(driver, script: str, expected: object = True, timeout: float = 10.0, *args: object) -> None:
    """Wait until the page's `script` (given `args`) returns `expected`."""
    wait_for(lambda: driver.execute_script(script, *args) == expected, timeout=timeout)


def open_page(driver, server: CaptionServer, query: str = "") -> None:
    driver.get(server.url + query)
    until(driver, "return document.body.dataset.state", "live")


def test_page_shows_english_and_chinese_finals_in_their_language(
    browser, server: CaptionServer, daemon: FakeDaemon
) -> None:
    open_page(browser, server)
    daemon.final(EN)
    daemon.final(ZH, language="zh")
    until(browser, "return document.getElementById('finals').textContent.includes(arguments[0])", True, 10, ZH)
    lines = browser.execute_script(
        "return [...document.querySelectorAll('.line')]"
        ".map(l => [l.textContent, l.lang, getComputedStyle(l).fontFamily])")
    assert [line[:2] for line in lines] == [[EN, "en"], [ZH, "zh-CN"]]
    assert lines[1][2].startswith('"Noto Sans CJK SC"')
    assert browser.execute_script("return document.documentElement.lang") == "zh-CN"
    assert browser.execute_script("return getComputedStyle(document.querySelector('.line')).fontSize") == "48px"
    assert browser.title == "Salle B · 会议室"


def test_chinese_lines_take_the_daemons_script_as_their_lang_and_fonts(
    browser, server: CaptionServer, daemon: FakeDaemon
) -> None:
    """A Taiwan box's captions in TC fonts (the glyphs its readers know), told by the daemon's
    status on a reload, and to a page opened after it."""
    def chinese_script(script: str) -> None:
        daemon.publisher.publish(protocol.Status(audio_time_s=1.0, fields={"chinese_script": script}))

    def newest_line() -> list[str]:
        return browser.execute_script(
            "const l = [...document.querySelectorAll('.line')].at(-1); return [l.lang, getComputedStyle(l).fontFamily]")

    chinese_script("taiwan")
    try:
        open_page(browser, server)
        daemon.final("把會議室的燈打開", language="zh")
        until(browser, "return document.getElementById('finals').textContent.includes('會議室的燈')")
        lang, font = newest_line()
        assert lang == "zh-TW" and font.startswith('"Noto Sans CJK TC"'), (lang, font)
        chinese_script("hongkong")
        daemon.final("開燈", language="zh")
        until(browser, "return document.getElementById('finals').textContent.includes('開燈')")
        lang, font = newest_line()
        assert lang == "zh-HK" and font.startswith('"Noto Sans CJK HK"'), (lang, font)
    finally:
        chinese_script("simplified")


def test_the_feed_tells_the_page_the_script_of_the_hello_before_the_connection(tmp_path: Path) -> None:
    from edge.apps.captions.feed import DaemonFeed

    path = Path(tempfile.mkdtemp(prefix="easr-feed-", dir="/tmp")) / "asr.sock"  # AF_UNIX paths must be short
    publisher = make_publisher(path, hello={"model": "whisper-base-int8", "backend": "cpu", "sample_rate": 16000,
                                            "chinese_script": "hongkong"})
    publisher.start()
    told: list[tuple[str, dict]] = []
    feed = DaemonFeed(str(path), lambda name, data: told.append((name, data)))
    feed.start()
    try:
        wait_for(lambda: any(name == "daemon" for name, _ in told), timeout=10)
    finally:
        feed.stop()
        publisher.close(timeout=1.0)
        shutil.rmtree(path.parent, ignore_errors=True)
    assert told[:2] == [("chinese", {"lang": "zh-HK"}),
                        ("daemon", {"connected": True, "message": "whisper-base-int8 on cpu"})]


def test_partial_draws_its_stable_text_settled_and_the_rest_lighter(
    browser, server: CaptionServer, daemon: FakeDaemon
) -> None:
    open_page(browser, server)
    daemon.partial("把会议室的灯", stable="把会议室")
    until(browser, "return document.querySelector('#partial .unstable').textContent", "的灯")
    stable, unstable = browser.execute_script(
        "return ['.stable', '.unstable']"
        ".map(s => Number(getComputedStyle(document.querySelector('#partial ' + s)).opacity))")
    assert browser.execute_script("return document.querySelector('#partial .stable').textContent") == "把会议室"
    assert unstable < stable == 1
    daemon.final(ZH, language="zh")
    until(browser, "return document.getElementById('partial').hidden")


def test_an_empty_final_takes_the_live_line_down_and_adds_no_caption(
    browser, server: CaptionServer, daemon: FakeDaemon
) -> None:
    open_page(browser, server)
    daemon.final("said before")
    until(browser, "return document.querySelector('.line:last-child')?.textContent", "said before")
    daemon.partial("hmm", stable="")
    until(browser, "return document.querySelector('#partial .unstable').textContent", "hmm")
    daemon.final("")
    until(browser, "return document.getElementById('partial').hidden", True, 2)  # at once, not after the orphan timer
    shown = browser.execute_script("return [...document.querySelectorAll('.line')].map(l => l.textContent)")
    assert shown[-1] == "said before" and "" not in shown


def test_url_parameters_override_lines_size_and_theme(browser, server: CaptionServer, daemon: FakeDaemon) -> None:
    open_page(browser, server, "?lines=2&size=30&theme=light")
    for n in range(3):
        daemon.final(f"line {n}")
    until(browser, "return document.querySelector('.line:last-child')?.textContent", "line 2")
    shown = browser.execute_script("return [...document.querySelectorAll('.line')].map(l => l.textContent)")
    assert shown == ["line 1", "line 2"]
    assert browser.execute_script("return getComputedStyle(document.querySelector('.line')).fontSize") == "30px"
    assert browser.execute_script("return document.body.dataset.theme") == "light"


def watch_finals(driver) -> None:
    """From now on the page notes when each final line is added, in wall-clock ms.

    `performance.timeOrigin + performance.now()` counts from the same epoch as Python's
    `time.time()`, so on one machine the two compare directly.
    """
    driver.execute_script("""
        window.shownAt = {};
        new MutationObserver((records) => {
          const now = performance.timeOrigin + performance.now();
          for (const r of records) for (const n of r.addedNodes) window.shownAt[n.textContent] = now;
        }).observe(document.getElementById('finals'), {childList: true});""")


def shown_at(driver, texts: list[str]) -> dict[str, float]:
    """When each of `texts` was added to the page (ms), once all of them are there."""
    until(driver, "return arguments[0].every((text) => text in window.shownAt)", True, 10, texts)
    return driver.execute_script("return window.shownAt")


def p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile: with a handful of finals, that is the worst but one or the worst."""
    return sorted(values)[math.ceil(0.95 * len(values)) - 1]


def test_final_to_page_delay_p95_within_300_ms(browser, server: CaptionServer, daemon: FakeDaemon) -> None:
    open_page(browser, server)
    watch_finals(browser)
    sent = {}
    for n in range(20):
        sent[f"timed {n}"] = time.time() * 1000
        daemon.final(f"timed {n}")
        time.sleep(0.05)
    shown = shown_at(browser, list(sent))
    delays = [shown[text] - sent[text] for text in sent]
    assert p95(delays) <= FINAL_TO_PAGE_P95_MS, sorted(delays)


def test_page_shows_reconnecting_and_recovers_without_a_reload(
    browser, server: CaptionServer, daemon: FakeDaemon
) -> None:
    open_page(browser, server)
    browser.execute_script("window.sameDocument = true")
    daemon.stop()
    try:
        until(browser, "return document.body.dataset.state", "reconnecting")
        assert "reconnecting" in browser.find_element("id", "status").text
    finally:
        daemon.start()
    until(browser, "return document.body.dataset.state", "live")
    server.stop()  # the caption server itself goes away and comes back
    until(browser, "return document.getElementById('status').textContent.includes('caption server')")
    server.start()
    until(browser, "return document.body.dataset.state", "live", timeout=15)
    daemon.final(EN)
    until(browser, "return document.querySelector('.line:last-child')?.textContent", EN)
    assert browser.execute_script("return window.sameDocument") is True


class _SilentStream(http.server.BaseHTTPRequestHandler):
    """The page, and an event stream that says the daemon is there once and then nothing more: what a
    half-open connection to a box that lost power looks like to the browser (no error, no data)."""

    page = b""
    streams = 0

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.startswith("/events"):
            type(self).streams += 1
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.write(b'event: daemon\ndata: {"connected": true, "message": "up"}\n\n')
            self.wfile.flush()
            time.sleep(30)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args: object) -> None:
        """Quiet."""


def test_a_stream_gone_silent_is_noticed_and_reconnected(browser, monkeypatch) -> None:
    """The heartbeat was an SSE comment, which a page's script never sees: on a half-open connection a
    screen kept showing "Live" with nothing new. Now it reconnects after three heartbeats of silence."""
    from edge.apps.captions import server as caption_server
    from edge.config import CaptionsConfig

    monkeypatch.setattr(caption_server, "HEARTBEAT_S", 0.5)
    _SilentStream.page, _SilentStream.streams = caption_server.render_page(CaptionsConfig())[0], 0
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SilentStream)
    httpd.daemon_threads, httpd.block_on_close = True, False  # its streams hang by design: never wait for them
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://127.0.0.1:{httpd.server_address[1]}/")
        until(browser, "return document.body.dataset.state", "live")
        until(browser, "return document.body.dataset.state", "reconnecting", timeout=5)
        wait_for(lambda: _SilentStream.streams >= 2, timeout=5)
    finally:
        httpd.shutdown()
        httpd.server_close()


# --- beside the real daemon -----------------------------------------------------------------


@contextlib.contextmanager
def real_daemon(config: Path, audio: Path) -> Iterator[subprocess.Popen]:
    """`edge-asr run` on `audio` at real-time pace, idling after the file until stopped; killed if the test fails."""
    process = start_daemon(config, f"file:{audio}", "--pace", "realtime")
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def stop_daemon(process: subprocess.Popen) -> None:
    """SIGTERM, as systemd stops it: the final in progress is published before the socket closes."""
    process.send_signal(signal.SIGTERM)
    code, err = finish(process, 10)
    assert code == 0, err


def wait_for_file_end(subscriber: Subscriber, timeout: float) -> None:
    """Ask the daemon for its state until the whole file has gone into its pipeline."""
    deadline = time.monotonic() + timeout
    while not any(event.get("state") == "file ended" for event in subscriber.of("status")):
        assert time.monotonic() < deadline, "the daemon never reached the end of its file"
        subscriber.request_status()
        time.sleep(0.5)


@pytest.fixture
def beside_daemon(tmp_path: Path, sock_path: Path) -> Iterator[CaptionServer]:
    """A caption server for the real daemon's socket at `sock_path`, up before the daemon is (it retries)."""
    sock_path.parent.mkdir()
    captions = CaptionServer(config_dir(tmp_path), sock_path)
    captions.start()
    yield captions
    captions.stop()


def test_real_daemon_finals_reach_the_page_within_300_ms_and_its_restart_shows(
    browser, beside_daemon: CaptionServer, int8_model_dir: Path, eval_dir: Path
) -> None:
    """The daemon on a long-form file at real-time pace: every final on the page, soon after the socket has it."""
    config = write_config(beside_daemon.socket_path.parent, int8_model_dir)
    with real_daemon(config, eval_dir / "longform_en" / "longform_01.wav") as first:
        subscriber = Subscriber(beside_daemon.socket_path)
        open_page(browser, beside_daemon, f"?lines={CAPTION_LINES[1]}")  # room for every final of the file
        watch_finals(browser)
        wait_for_file_end(subscriber, timeout=90)
        stop_daemon(first)
    until(browser, "return document.getElementById('status').textContent.includes('speech recognizer')")
    assert browser.execute_script("return document.body.dataset.state") == "reconnecting"

    finals = subscriber.of("final")
    texts = [final["text"] for final in finals]
    shown = shown_at(browser, texts)
    assert browser.execute_script("return [...document.querySelectorAll('.line')].map(l => l.textContent)") == texts
    wall_clock = time.time() - time.monotonic()  # the subscriber stamps arrivals with time.monotonic()
    delays = [shown[final["text"]] - 1000 * (final["_received"] + wall_clock) for final in finals]
    assert len(finals) >= 5 and p95(delays) <= FINAL_TO_PAGE_P95_MS, sorted(delays)

    with real_daemon(config, eval_dir / "nonspeech" / "silence_10s.wav") as second:
        until(browser, "return document.body.dataset.state", "live", timeout=20)
        stop_daemon(second)
