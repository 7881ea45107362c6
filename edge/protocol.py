"""The subscriber protocol: event constructors, validation, encoding, request parsing.

The wire format is newline-delimited JSON (UTF-8, one event per line); docs/protocol.md
is the app developer's view of it. Everything here is pure (no sockets) so the daemon,
the publisher and the client commands share one definition of what a valid event is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from edge import __version__

PROTOCOL_VERSION = 1
DEFAULT_SOCKET = "/run/edge-asr/asr.sock"
MAX_REQUEST_BYTES = 4096

EVENT_TYPES = ("hello", "speech_start", "partial", "final", "speech_end", "status", "error")
# Only partials are superseded by later events, so only they may be dropped for a slow reader.
DROPPABLE_TYPES = frozenset({"partial"})
REQUEST_TYPES = ("status",)


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


def _flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ProtocolError(f"{name} must be true or false, got {value!r}")


_TRANSCRIPT = {"utterance_id": _count, "text": _text, "is_final": _flag, "start_s": _seconds, "end_s": _seconds}

# Required fields per type (besides `type` and `audio_time_s`); None = free-form (status).
_FIELDS: dict[str, dict[str, Check] | None] = {
    "hello": {
        "protocol_version": _count,
        "daemon_version": _name,
        "model": _name,
        "backend": _name,
        "sample_rate": _count,
    },
    "speech_start": {"utterance_id": _count, "start_s": _seconds},
    "partial": {**_TRANSCRIPT, "stable_text": _text},
    "final": _TRANSCRIPT,
    "speech_end": {"utterance_id": _count, "start_s": _seconds, "end_s": _seconds},
    "status": None,
    "error": {"reason": _name, "message": _text},
}


def validate(event: Any) -> None:
    """Raise ProtocolError unless `event` is a well-formed event of a known type."""
    if not isinstance(event, Mapping):
        raise ProtocolError(f"an event must be a mapping, got {type(event).__name__}")
    kind = event.get("type")
    if kind not in _FIELDS:
        raise ProtocolError(f"unknown event type {kind!r} (expected one of {', '.join(EVENT_TYPES)})")
    _seconds("audio_time_s", event.get("audio_time_s"))
    fields = _FIELDS[kind]
    if fields is None:
        _check_free_form(event)
        return
    _check_fields(kind, event, fields)
    if "end_s" in fields and event["end_s"] < event["start_s"]:
        raise ProtocolError(f"{kind}: end_s {event['end_s']} is before start_s {event['start_s']}")
    if "is_final" in fields and event["is_final"] != (kind == "final"):
        raise ProtocolError(f"{kind}: is_final must be {str(kind == 'final').lower()}")


def _check_fields(kind: str, event: Mapping, fields: Mapping[str, Check]) -> None:
    unknown = set(event) - set(fields) - {"type", "audio_time_s"}
    if unknown:
        raise ProtocolError(f"{kind}: unknown field(s) {', '.join(sorted(unknown))}")
    for name, check in fields.items():
        if name not in event:
            raise ProtocolError(f"{kind}: missing field {name}")
        check(f"{kind}.{name}", event[name])


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


def _event(kind: str, audio_time_s: float, **fields: Any) -> dict:
    event = {"type": kind, "audio_time_s": audio_time_s, **fields}
    validate(event)
    return event


def hello(*, model: str, backend: str, sample_rate: int, audio_time_s: float, daemon_version: str = __version__) -> dict:
    """First event on every connection: what is listening and how to read it."""
    return _event(
        "hello",
        audio_time_s,
        protocol_version=PROTOCOL_VERSION,
        daemon_version=daemon_version,
        model=model,
        backend=backend,
        sample_rate=sample_rate,
    )


def speech_start(*, utterance_id: int, start_s: float, audio_time_s: float) -> dict:
    return _event("speech_start", audio_time_s, utterance_id=utterance_id, start_s=start_s)


def _transcript(
    kind: str, utterance_id: int, text: str, start_s: float, end_s: float, audio_time_s: float, **extra: Any
) -> dict:
    return _event(
        kind,
        audio_time_s,
        utterance_id=utterance_id,
        text=text,
        is_final=kind == "final",
        start_s=start_s,
        end_s=end_s,
        **extra,
    )


def partial(
    *, utterance_id: int, text: str, stable_text: str, start_s: float, end_s: float, audio_time_s: float
) -> dict:
    """Provisional text of an utterance still in progress; may be dropped for slow readers.

    `stable_text` is the prefix of `text` that no later partial of the utterance changes:
    a caption can show it as settled and only redraw the rest.
    """
    return _transcript("partial", utterance_id, text, start_s, end_s, audio_time_s, stable_text=stable_text)


def final(*, utterance_id: int, text: str, start_s: float, end_s: float, audio_time_s: float) -> dict:
    return _transcript("final", utterance_id, text, start_s, end_s, audio_time_s)


def speech_end(*, utterance_id: int, start_s: float, end_s: float, audio_time_s: float) -> dict:
    return _event("speech_end", audio_time_s, utterance_id=utterance_id, start_s=start_s, end_s=end_s)


def status(*, audio_time_s: float, **fields: Any) -> dict:
    """Free-form daemon state; the field set grows without a protocol version bump."""
    return _event("status", audio_time_s, **fields)


def error(*, reason: str, message: str, audio_time_s: float) -> dict:
    """`reason` is a stable short code for programs, `message` is for people."""
    return _event("error", audio_time_s, reason=reason, message=message)


def parse_request(line: bytes) -> str:
    """Return the type of one subscriber request line, or raise ProtocolError with a reason."""
    try:
        request = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise ProtocolError("request is not valid UTF-8", "bad_encoding") from None
    except ValueError as exc:
        raise ProtocolError(f"request is not valid JSON: {exc}", "bad_json") from None
    if not isinstance(request, dict):
        raise ProtocolError("a request must be a JSON object like {\"type\": \"status\"}", "not_an_object")
    kind = request.get("type")
    if kind not in REQUEST_TYPES:
        raise ProtocolError(
            f"unknown request type {kind!r} (supported: {', '.join(REQUEST_TYPES)})", "unknown_type"
        )
    return kind


class RequestReader:
    """Splits a subscriber's byte stream into requests, capping the length of a line.

    An over-long line is reported once and skipped up to its newline, so a client that
    sends garbage costs bounded memory and can still send a valid request afterwards.
    Blank lines are ignored (a stray Enter in `nc` is not an error).
    """

    def __init__(self, max_line: int = MAX_REQUEST_BYTES) -> None:
        self._max_line = max_line
        self._pending = b""
        self._skipping = False

    def feed(self, data: bytes) -> list[str | ProtocolError]:
        *lines, self._pending = (self._pending + data).split(b"\n")
        results = [result for line in lines if (result := self._line(line)) is not None]
        if len(self._pending) > self._max_line and not self._skipping:
            results.append(self._too_long())
            self._skipping = True
        if self._skipping:
            self._pending = b""
        return results

    def _line(self, line: bytes) -> str | ProtocolError | None:
        if self._skipping:
            self._skipping = False
            return None
        if len(line) > self._max_line:
            return self._too_long()
        if not line.strip():
            return None
        try:
            return parse_request(line)
        except ProtocolError as exc:
            return exc

    def _too_long(self) -> ProtocolError:
        return ProtocolError(f"request line longer than {self._max_line} bytes; skipped", "line_too_long")
