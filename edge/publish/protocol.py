"""The subscriber protocol: the events (each defined once, as a typed dataclass), validation, encoding, requests.

The wire format is newline-delimited JSON (UTF-8, one event per line); docs/protocol.md
is the app developer's view of it. Everything here is pure (no sockets) so the daemon,
the publisher and the client commands share one definition of what a valid event is.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from edge import __version__

PROTOCOL_VERSION = 1
DEFAULT_SOCKET = "/run/edge-asr/asr.sock"
MAX_REQUEST_BYTES = 256 * 1024  # the largest vocabulary request (500 Chinese terms of 48 characters, weights) is 159 KB as json.dumps writes it (\uXXXX escapes)
MAX_BLANK_LINES = 1024  # a person's stray Enters in nc, many times over; each one past it is a bad request

CLOSING_ERRORS = frozenset({"slow_subscriber", "too_many_bad_requests", "too_many_subscribers"})  # then the daemon hangs up
# Only partials are superseded by later events, so only they may be dropped for a slow reader.
DROPPABLE_TYPES = frozenset({"partial"})
REQUEST_TYPES = ("status", "vocabulary", "replay")


class ProtocolError(ValueError):
    """An invalid event or request; `reason` is the short code sent in `error` events."""

    def __init__(self, message: str, reason: str = "invalid_event") -> None:
        super().__init__(message)
        self.reason = reason


Check = Callable[[str, Any], None]


def _number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProtocolError(f"{name} must be a finite number, got {value!r}")


def _seconds(name: str, value: Any) -> None:
    _number(name, value)
    if value < 0:
        raise ProtocolError(f"{name} must be >= 0, got {value!r}")


def _count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(f"{name} must be an integer >= 0, got {value!r}")


def _text(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise ProtocolError(f"{name} must be a string, got {type(value).__name__}")


def _name(name: str, value: Any) -> None:
    _text(name, value)
    if not value:
        raise ProtocolError(f"{name} must not be empty")


def _texts(name: str, value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ProtocolError(f"{name} must be a list of strings")


def _flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ProtocolError(f"{name} must be true or false, got {value!r}")


def validate(event: Any) -> None:
    """Raise ProtocolError unless `event` is a well-formed event of a known type."""
    if not isinstance(event, Mapping):
        raise ProtocolError(f"an event must be a mapping, got {type(event).__name__}")
    kind = event.get("type")
    if kind not in EVENT_CLASSES:
        raise ProtocolError(f"unknown event type {kind!r} (expected one of {', '.join(EVENT_TYPES)})")
    _seconds("audio_time_s", event.get("audio_time_s"))
    if kind == Status.TYPE:
        _check_free_form(event)
        return
    checks = _wire_checks(EVENT_CLASSES[kind])
    _check_fields(kind, event, checks, {f.name for f in fields(EVENT_CLASSES[kind]) if f.metadata.get("optional")})
    if "end_s" in checks and event["end_s"] < event["start_s"]:
        raise ProtocolError(f"{kind}: end_s {event['end_s']} is before start_s {event['start_s']}")
    if "is_final" in checks and event["is_final"] != (kind == "final"):
        raise ProtocolError(f"{kind}: is_final must be {str(kind == 'final').lower()}")


_CHECK_BY_TYPE: dict[str, Check] = {"int": _count, "float": _seconds, "str": _text, "bool": _flag}


def _wire_checks(cls: type["Event"]) -> dict[str, Check]:
    """Each wire field's check, from its declared type (or its `check` metadata), besides audio_time_s."""
    return {
        f.name: f.metadata.get("check") or _CHECK_BY_TYPE[str(f.type)]
        for f in fields(cls)
        if f.metadata.get("wire", True) and f.name != "audio_time_s"
    }


def _check_fields(kind: str, event: Mapping, checks: Mapping[str, Check], optional: set[str]) -> None:
    unknown = set(event) - set(checks) - {"type", "audio_time_s"}
    if unknown:
        raise ProtocolError(f"{kind}: unknown field(s) {', '.join(sorted(unknown))}")
    for name, check in checks.items():
        if name in event:
            check(f"{kind}.{name}", event[name])
        elif name not in optional:
            raise ProtocolError(f"{kind}: missing field {name}")


def _check_free_form(event: Mapping) -> None:
    for key in event:
        if not isinstance(key, str):
            raise ProtocolError(f"status: field names must be strings, got {key!r}")


def encode(event: Mapping) -> bytes:
    """Validate and serialise one event as a single UTF-8 JSON line (newline included)."""
    validate(event)
    try:
        text = json.dumps(event, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"{event['type']}: not JSON-serialisable: {exc}") from exc
    # "replace" keeps a transcript with a stray surrogate deliverable instead of losing it.
    return (text + "\n").encode("utf-8", "replace")


def decode(line: bytes | str) -> dict:
    """Parse one event line received from the daemon (client side)."""
    try:
        event = json.loads(line)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"not a JSON event line: {exc}", "bad_json") from exc
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise ProtocolError("an event must be a JSON object with a string `type`", "not_an_object")
    return event


@dataclass(frozen=True, kw_only=True)
class Event:
    """One event on the wire: `{"type": TYPE, "audio_time_s": ..., <fields in declaration order>}`.

    `audio_time_s` is the stream position when the event was made. Fields whose
    metadata says `wire=False` travel with the event inside the daemon only.
    """

    TYPE: ClassVar[str] = ""
    audio_time_s: float

    def to_dict(self) -> dict[str, Any]:
        wire = {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("wire", True)}
        unset = {f.name for f in fields(self) if f.metadata.get("optional") and wire[f.name] == f.default}
        return {"type": self.TYPE, **{name: value for name, value in wire.items() if name not in unset}}

    def encode(self) -> bytes:
        return encode(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Event":
        """The typed event for a received (or built) mapping; ProtocolError if it is not a valid one."""
        validate(data)
        kind = EVENT_CLASSES[data["type"]]
        if kind is Status:
            return Status(audio_time_s=data["audio_time_s"], fields={k: v for k, v in data.items() if k not in ("type", "audio_time_s")})
        return kind(**{k: v for k, v in data.items() if k not in ("type", "is_final")})


_NAME = {"check": _name}  # a string that must not be empty


def _optional(default: Any) -> Any:
    """A field sent only when it is not `default`, so that events without it stay exactly as they were."""
    return field(default=default, metadata={"optional": True})


def _local(default: Any) -> Any:
    """A field for the daemon's own use (metrics), never sent."""
    return field(default=default, compare=False, metadata={"wire": False})


@dataclass(frozen=True, kw_only=True)
class Hello(Event):
    """First event on every connection: what is listening and how to read it.

    `backend` runs the model now; `backend_requested` is inference.backend; `degraded` says the
    CPU does work an accelerator was wanted for, `degraded_reason` why, as in the `status` event,
    so an app sees a degraded box without asking. Added in protocol 1 as optional fields: a
    healthy box on `auto` sends the hello it always did, and an older daemon's hello still reads.
    """

    TYPE: ClassVar[str] = "hello"
    protocol_version: int = PROTOCOL_VERSION
    daemon_version: str = field(default=__version__, metadata=_NAME)
    model: str = field(metadata=_NAME)
    backend: str = field(metadata=_NAME)
    sample_rate: int
    backend_requested: str = _optional("auto")
    degraded: bool = _optional(False)
    degraded_reason: str = _optional("")
    run_id: str = _optional("")  # new each time the daemon starts: utterance_ids count within it
    chinese_script: str = _optional("simplified")  # model.chinese_script: how Chinese text is written
    reload_requests: int = _optional(0)  # reloads asked for (SIGHUP) before this connection: see `edge-asr reload`


@dataclass(frozen=True, kw_only=True)
class SpeechStart(Event):
    TYPE: ClassVar[str] = "speech_start"
    utterance_id: int
    start_s: float


@dataclass(frozen=True, kw_only=True)
class _Transcript(Event):
    """The text of one utterance, [start_s, end_s] of the stream; `is_final` tells partials from finals."""

    utterance_id: int
    text: str
    is_final: bool
    start_s: float
    end_s: float


@dataclass(frozen=True, kw_only=True)
class Partial(_Transcript):
    """Provisional text of an utterance still in progress; may be dropped for slow readers.

    `stable_text` is the prefix of `text` that no later partial of the utterance changes:
    a caption can show it as settled and only redraw the rest.
    """

    TYPE: ClassVar[str] = "partial"
    is_final: bool = field(default=False, init=False)
    stable_text: str


@dataclass(frozen=True, kw_only=True)
class Final(_Transcript):
    """The utterance's text, exactly once per speech_start (empty when no words were recognised); never dropped.

    `decode_s` is how long recognition took (metrics).
    """

    TYPE: ClassVar[str] = "final"
    is_final: bool = field(default=True, init=False)
    language: str = ""  # the language the model heard (ISO 639-1 code); added in protocol 1 as an extra field
    # true (sent only then): recognition was too far behind to decode it; `text` is its newest partial, maybe empty
    dropped: bool = _optional(False)
    decode_s: float = _local(0.0)


@dataclass(frozen=True, kw_only=True)
class SpeechEnd(Event):
    TYPE: ClassVar[str] = "speech_end"
    utterance_id: int
    start_s: float
    end_s: float


@dataclass(frozen=True, kw_only=True)
class Status(Event):
    """Free-form daemon state; the field set grows without a protocol version bump."""

    TYPE: ClassVar[str] = "status"
    fields: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.TYPE, "audio_time_s": self.audio_time_s, **self.fields}


@dataclass(frozen=True, kw_only=True)
class Error(Event):
    """`reason` is a stable short code for programs, `message` is for people."""

    TYPE: ClassVar[str] = "error"
    reason: str = field(metadata=_NAME)
    message: str


@dataclass(frozen=True, kw_only=True)
class VocabularyState(Event):
    """The reply to a `vocabulary` request: the list now active (config, request or none) and its terms."""

    TYPE: ClassVar[str] = "vocabulary"
    source: str = field(metadata=_NAME)
    count: int
    terms: list[str] = field(metadata={"check": _texts})
    advice: str = _optional("")  # what the app should know of how the list is used (sent when there is some)


@dataclass(frozen=True, kw_only=True)
class Replayed(Event):
    """The reply to a `replay` request, after the `count` finals it re-sent (those past `after`
    that the daemon still holds); `missing` finals past `after` it no longer holds."""

    TYPE: ClassVar[str] = "replay"
    after: int
    count: int
    missing: int


def replay_after(request: Mapping[str, Any]) -> int:
    """A `replay` request's `after`: the utterance_id of the last final the subscriber has (0: none)."""
    after = request.get("after")
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise ProtocolError(f"replay: `after` must be a whole number of 0 or more (the utterance_id of the last "
                            f"final you have, 0 for none), not {json.dumps(after)}", "bad_request")
    return after


EVENT_CLASSES: dict[str, type[Event]] = {
    cls.TYPE: cls for cls in (Hello, SpeechStart, Partial, Final, SpeechEnd, Status, Error, VocabularyState, Replayed)
}
EVENT_TYPES = tuple(EVENT_CLASSES)
UtteranceEvent = SpeechStart | Partial | Final | SpeechEnd


@dataclass(frozen=True)
class Request:
    """One subscriber request: its `type` and the whole JSON object (a vocabulary request's terms)."""

    kind: str
    body: Mapping[str, Any]


def request_line(kind: str, **fields: Any) -> bytes:
    """A request as a client sends it: `{"type": kind, ...fields}` and a newline."""
    if kind not in REQUEST_TYPES:
        raise ValueError(f"unknown request type {kind!r} (supported: {', '.join(REQUEST_TYPES)})")
    return json.dumps({"type": kind, **fields}, ensure_ascii=False).encode() + b"\n"


def parse_request(line: bytes) -> Request:
    """Parse one subscriber request line, or raise ProtocolError with a reason."""
    try:
        request = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise ProtocolError("request is not valid UTF-8", "bad_encoding") from None
    except ValueError as exc:
        raise ProtocolError(f"request is not valid JSON: {exc}", "bad_json") from None
    except RecursionError:  # a few thousand nested brackets fit under the line limit
        raise ProtocolError("request is nested too deeply to be a request", "bad_request") from None
    if not isinstance(request, dict):
        raise ProtocolError("a request must be a JSON object like {\"type\": \"status\"}", "not_an_object")
    kind = request.get("type")
    if kind not in REQUEST_TYPES:
        raise ProtocolError(
            f"unknown request type {kind!r} (supported: {', '.join(REQUEST_TYPES)})", "unknown_type"
        )
    return Request(kind, request)


# An HTTP request line or Host header: a web page's cross-protocol POST to the TCP listener, whose
# JSON body would run as a request after its header lines (each only a bad request) had gone by.
_HTTP_LINE = re.compile(rb"^(?:[A-Z]+ \S+ HTTP/\d(?:\.\d)?\r?|host:.*)$", re.IGNORECASE)
HTTP_REQUEST = "http_request"


class RequestReader:
    """Splits a subscriber's byte stream into requests, capping the length of a line.

    An over-long line is reported once and skipped up to its newline, so a client that
    sends garbage costs bounded memory and can still send a valid request afterwards.
    Blank lines are ignored (a stray Enter in `nc` is not an error), up to MAX_BLANK_LINES:
    each one after that is an error, so that a client streaming newlines is cut off like
    one streaming garbage (before, it was never cut off and kept the loop busy).
    """

    def __init__(self, max_line: int = MAX_REQUEST_BYTES) -> None:
        self._max_line = max_line
        self._pending = b""
        self._skipping = False
        self._blank = 0

    def feed(self, data: bytes) -> Iterator[Request | ProtocolError]:
        """The requests that `data` completes, each parsed only when it is taken: a caller that stops
        at a flood's 17th bad line does not parse the rest (one 64 KiB read of "x\\n" took 447 ms to
        parse whole, 0.5 ms to its 17th line: docs/benchmarks.md). Take them all before the next feed."""
        *lines, self._pending = (self._pending + data).split(b"\n")
        for line in lines:
            result = self._line(line)
            if result is not None:
                yield result
        if len(self._pending) > self._max_line and not self._skipping:
            self._skipping = True
            yield self._too_long()
        if self._skipping:
            self._pending = b""

    def _line(self, line: bytes) -> Request | ProtocolError | None:
        if self._skipping:
            self._skipping = False
            return None
        if len(line) > self._max_line:
            return self._too_long()
        if not line.strip():
            self._blank += 1
            if self._blank <= MAX_BLANK_LINES:
                return None
            return ProtocolError(f"more than {MAX_BLANK_LINES} blank lines on this connection", "blank_line")
        if _HTTP_LINE.match(line):
            return ProtocolError("an HTTP request on the event socket (a web page's request, or a client "
                                 "pointed at the wrong port); closing this connection", HTTP_REQUEST)
        try:
            return parse_request(line)
        except ProtocolError as exc:
            return exc

    def _too_long(self) -> ProtocolError:
        return ProtocolError(f"request line longer than {self._max_line} bytes; skipped", "line_too_long")
