"""Event constructors, validation, encoding and request parsing (no sockets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge import __version__
from edge.publish import protocol
from edge.vocabulary import MAX_TERM_CHARS, MAX_TERMS, MAX_WEIGHT, parse_items


GOLDEN = Path(__file__).parent / "data" / "golden_events.jsonl"


def test_every_event_type_encodes_byte_for_byte_as_before() -> None:
    """tests/data/golden_events.jsonl was written by the dict builders the typed events replaced."""
    lines = GOLDEN.read_bytes().splitlines(keepends=True)
    events = [protocol.Event.from_dict(json.loads(line)) for line in lines]
    assert {type(e).TYPE for e in events} == set(protocol.EVENT_TYPES)
    assert [e.encode() for e in events] == lines
    built = [
        protocol.Hello(model="whisper-tiny.en-int8", backend="cpu", sample_rate=16000, audio_time_s=0.0),
        protocol.SpeechStart(utterance_id=1, start_s=0.512, audio_time_s=0.8),
        protocol.Partial(utterance_id=1, text="hello wor", stable_text="hello", start_s=0.512, end_s=1.5, audio_time_s=1.5),
    ]
    assert [e.encode() for e in built] == lines[:3]


def test_events_round_trip_and_encode_to_one_line() -> None:
    events = [
        protocol.Hello(model="tiny", backend="cpu", sample_rate=16000, audio_time_s=0.0),
        protocol.SpeechStart(utterance_id=1, start_s=1.2, audio_time_s=1.5),
        protocol.Partial(utterance_id=1, text="hel", stable_text="", start_s=1.2, end_s=1.9, audio_time_s=2.0),
        protocol.Final(utterance_id=1, text="hello\nthere", start_s=1.2, end_s=2.4, audio_time_s=3.0, decode_s=0.3),
        protocol.SpeechEnd(utterance_id=1, start_s=1.2, end_s=2.4, audio_time_s=3.0),
        protocol.Status(audio_time_s=3.0, fields={"uptime_s": 9.5, "backend": "cpu", "queues": {"audio": 0}}),
        protocol.Error(reason="slow_subscriber", message="read faster", audio_time_s=3.0),
        protocol.VocabularyState(source="request", count=2, terms=["Siobhan", "张伟"], audio_time_s=3.0),
        protocol.Replayed(after=41, count=3, missing=0, audio_time_s=3.0),
    ]
    assert [e.TYPE for e in events] == list(protocol.EVENT_TYPES)
    for event in events:
        line = event.encode()
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert protocol.Event.from_dict(protocol.decode(line)) == event


def test_daemon_only_fields_stay_off_the_wire() -> None:
    final = protocol.Final(utterance_id=1, text="x", start_s=0, end_s=1, audio_time_s=1, decode_s=0.7)
    assert "decode_s" not in final.to_dict()


def test_hello_carries_versions() -> None:
    event = protocol.Hello(model="tiny", backend="cpu", sample_rate=16000, audio_time_s=0.0).to_dict()
    assert event["protocol_version"] == protocol.PROTOCOL_VERSION
    assert event["daemon_version"] == __version__


def test_hello_says_a_degraded_backend_and_reads_an_older_daemons_hello() -> None:
    degraded = protocol.Hello(model="tiny", backend="cpu", sample_rate=16000, audio_time_s=0.0, backend_requested="cuda",
                              degraded=True, degraded_reason="no CUDA").to_dict()
    assert (degraded["backend_requested"], degraded["degraded"], degraded["degraded_reason"]) == ("cuda", True, "no CUDA")
    older = json.loads(GOLDEN.read_bytes().splitlines()[0])
    hello = protocol.Event.from_dict(older)
    assert (hello.backend_requested, hello.degraded, hello.degraded_reason) == ("auto", False, "")
    for field, bad in (("degraded", "yes"), ("degraded_reason", None), ("backend_requested", 3)):
        with pytest.raises(protocol.ProtocolError, match=f"hello.{field} must be"):
            protocol.validate({**older, field: bad})


def test_transcripts_carry_is_final() -> None:
    common = dict(utterance_id=3, text="x", start_s=0.0, end_s=1.0, audio_time_s=1.0)
    assert protocol.Partial(**common, stable_text="").to_dict()["is_final"] is False
    assert protocol.Final(**common).to_dict()["is_final"] is True


def test_partials_require_their_stable_prefix() -> None:
    event = protocol.Partial(utterance_id=3, text="turn on the", stable_text="turn on", start_s=0, end_s=1, audio_time_s=1).to_dict()
    assert event["stable_text"] == "turn on"
    del event["stable_text"]
    with pytest.raises(protocol.ProtocolError, match="stable_text"):
        protocol.validate(event)


def test_names_must_not_be_empty() -> None:
    with pytest.raises(protocol.ProtocolError, match="hello.model must not be empty"):
        protocol.Hello(model="", backend="cpu", sample_rate=16000, audio_time_s=0.0).encode()


def test_encode_is_utf8_not_escaped() -> None:
    line = protocol.Final(utterance_id=0, text="café 日本", start_s=0, end_s=1, audio_time_s=1).encode()
    assert "café 日本".encode() in line


GOOD_FINAL = {"type": "final", "audio_time_s": 2.0, "utterance_id": 1, "text": "hi", "is_final": True,
              "start_s": 0.5, "end_s": 1.5, "language": "en"}


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"type": "shout"}, "unknown event type"),
        ({"audio_time_s": -1}, "audio_time_s must be >= 0"),
        ({"audio_time_s": float("nan")}, "finite"),
        ({"audio_time_s": None}, "finite"),
        ({"utterance_id": True}, "utterance_id must be an integer"),
        ({"utterance_id": 1.5}, "utterance_id must be an integer"),
        ({"text": 5}, "text must be a string"),
        ({"is_final": False}, "is_final must be true"),
        ({"end_s": 0.1}, "before start_s"),
        ({"extra": 1}, "unknown field(s) extra"),
    ],
)
def test_validate_rejects_bad_events(change: dict, needle: str) -> None:
    with pytest.raises(protocol.ProtocolError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        protocol.encode({**GOOD_FINAL, **change})


def test_validate_rejects_missing_field_and_non_mapping() -> None:
    event = dict(GOOD_FINAL)
    del event["text"]
    with pytest.raises(protocol.ProtocolError, match="missing field text"):
        protocol.validate(event)
    with pytest.raises(protocol.ProtocolError, match="must be a mapping"):
        protocol.validate(["final"])


def test_status_fields_must_serialise() -> None:
    with pytest.raises(protocol.ProtocolError, match="not JSON-serialisable"):
        protocol.Status(audio_time_s=0.0, fields={"thing": object()}).encode()
    with pytest.raises(protocol.ProtocolError, match="not JSON-serialisable"):
        protocol.Status(audio_time_s=0.0, fields={"ratio": float("inf")}).encode()


def test_decode_rejects_non_events() -> None:
    with pytest.raises(protocol.ProtocolError) as bad_json:
        protocol.decode(b"{nope\n")
    assert bad_json.value.reason == "bad_json"
    with pytest.raises(protocol.ProtocolError) as not_object:
        protocol.decode(b"[1]\n")
    assert not_object.value.reason == "not_an_object"


def test_parse_request_accepts_status() -> None:
    assert protocol.parse_request(b'{"type": "status"}').kind == "status"
    assert protocol.parse_request(b' {"type":"status","extra":1}\r').kind == "status"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"status", "bad_json"),
        (b"\xff\xfe{}", "bad_encoding"),
        (b"[1, 2]", "not_an_object"),
        (b'"status"', "not_an_object"),
        (b'{"type": "final"}', "unknown_type"),
        (b'{"kind": "status"}', "unknown_type"),
    ],
)
def test_parse_request_reasons(line: bytes, reason: str) -> None:
    with pytest.raises(protocol.ProtocolError) as err:
        protocol.parse_request(line)
    assert err.value.reason == reason


def test_request_reader_joins_chunks_and_skips_blank_lines() -> None:
    reader = protocol.RequestReader()
    assert list(reader.feed(b'{"type":')) == []
    assert [r.kind for r in reader.feed(b' "status"}\n\n  \n{"type":"status"}\n')] == ["status", "status"]


def test_request_reader_caps_a_line_without_newline_then_recovers() -> None:
    reader = protocol.RequestReader(max_line=64)
    first = list(reader.feed(b"x" * 100))
    assert [e.reason for e in first] == ["line_too_long"]
    assert list(reader.feed(b"y" * 1000)) == []  # the same over-long line: reported once, memory stays bounded
    assert reader._pending == b""
    assert [r.kind for r in reader.feed(b'zzz\n{"type":"status"}\n')] == ["status"]


def test_request_reader_rejects_a_complete_over_long_line() -> None:
    reader = protocol.RequestReader(max_line=20)
    results = list(reader.feed(b'{"type":"status","pad":"........"}\n{"type":"status"}\n'))
    assert [getattr(r, "reason", None) or r.kind for r in results] == ["line_too_long", "status"]


def test_request_reader_parses_a_line_only_when_it_is_taken_and_counts_blank_lines_past_the_allowance() -> None:
    reader = protocol.RequestReader()
    lines = reader.feed(b"x\n" * 30_000)
    first = [next(lines) for _ in range(17)]
    assert {e.reason for e in first} == {"bad_json"}  # the other 29,983 are never parsed
    blank = list(protocol.RequestReader().feed(b"\n" * (protocol.MAX_BLANK_LINES + 3) + b'{"type":"status"}\n'))
    assert [getattr(r, "reason", None) or r.kind for r in blank] == ["blank_line"] * 3 + ["status"]


def test_request_reader_reports_bad_lines_in_place() -> None:
    results = list(protocol.RequestReader().feed(b'oops\n{"type":"status"}\n'))
    assert isinstance(results[0], protocol.ProtocolError) and results[0].reason == "bad_json"
    assert results[1].kind == "status"


def test_encode_keeps_a_transcript_with_a_lone_surrogate() -> None:
    line = protocol.Final(utterance_id=0, text="ok \ud800", start_s=0, end_s=1, audio_time_s=1).encode()
    assert protocol.decode(line)["text"] == "ok ?"


def test_a_deeply_nested_request_is_a_bad_request_and_the_next_one_works() -> None:
    nested = b"[" * 2000 + b"]" * 2000
    assert len(nested) < protocol.MAX_REQUEST_BYTES
    results = list(protocol.RequestReader().feed(nested + b'\n{"type":"status"}\n'))
    assert isinstance(results[0], protocol.ProtocolError) and results[0].reason == "bad_request"
    assert results[1].kind == "status"


def test_the_largest_vocabulary_request_fits_in_a_line_as_json_dumps_writes_it() -> None:
    """500 terms of 48 characters outside ASCII with weights: 159 KB with Python's default \\uXXXX escapes.
    (Cyrillic: a Chinese term is capped at 12 characters, a word written without spaces at 48.)"""
    terms = [{"term": f"{n:03d}" + "д" * (MAX_TERM_CHARS - 3), "weight": MAX_WEIGHT} for n in range(MAX_TERMS)]
    (request,) = protocol.RequestReader().feed(json.dumps({"type": "vocabulary", "terms": terms}).encode() + b"\n")
    assert request.kind == "vocabulary" and len(parse_items(request.body["terms"], "terms")) == MAX_TERMS


def test_request_lines_are_made_by_one_function_and_parse_back() -> None:
    """The status and replay requests were written out by hand in three places."""
    line = protocol.request_line("replay", after=7)
    assert line.endswith(b"\n") and protocol.parse_request(line.rstrip(b"\n")) == protocol.Request(
        "replay", {"type": "replay", "after": 7})
    assert protocol.parse_request(protocol.request_line("vocabulary", terms=["张伟"]).rstrip()).body["terms"] == ["张伟"]
    with pytest.raises(ValueError, match="unknown request type 'stats'"):
        protocol.request_line("stats")
