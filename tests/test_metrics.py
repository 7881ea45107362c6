"""Metrics export: HTTP scrape on loopback and the node-exporter textfile."""

from __future__ import annotations

import logging
import os
import socket
import urllib.request
from pathlib import Path

import pytest

from edge.config import MetricsConfig
from edge.service.metrics import Metrics, start_metrics
from tests.ports import free_port


def recorded() -> Metrics:
    metrics = Metrics()
    metrics.record_final(latency_s=0.4, audio_s=2.0, decode_s=0.5)
    metrics.record_final(latency_s=0.1, audio_s=1.0, decode_s=0.1)
    metrics.record_partial()
    metrics.record_dropped(0.25, 600.0)
    metrics.record_dropped(0.0, -1.0)  # nothing new: neither counter moves
    metrics.record_fallback()
    metrics.set_subscribers(3)
    metrics.set_backend("cpu", "CPUExecutionProvider")
    return metrics


EXPECTED = (
    "edge_asr_utterances_total 2.0",
    "edge_asr_partials_total 1.0",
    'edge_asr_final_latency_seconds_bucket{le="0.2"} 1.0',
    "edge_asr_final_latency_seconds_count 2.0",
    'edge_asr_real_time_factor_bucket{le="0.1"} 1.0',
    'edge_asr_real_time_factor_bucket{le="0.3"} 2.0',
    "edge_asr_dropped_audio_seconds_total 0.25",
    "edge_asr_lost_audio_seconds_total 600.0",
    "edge_asr_fallbacks_total 1.0",
    "edge_asr_subscribers 3.0",
    'edge_asr_backend_info{degraded="false",detail="CPUExecutionProvider",name="cpu",requested="auto"} 1.0',
)


def test_http_endpoint_serves_metrics() -> None:
    cfg = MetricsConfig(enabled=True, port=free_port(), host="127.0.0.1")
    exporter = start_metrics(cfg, recorded())
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/metrics", timeout=5).read().decode()
    finally:
        exporter.stop()
    for line in EXPECTED:
        assert line in body.splitlines()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{cfg.port}/metrics", timeout=1)


def test_a_port_that_cannot_be_had_is_an_error_in_the_journal_not_a_stop(tmp_path: Path, caplog) -> None:
    """A taken port (or the unit's ban on IP sockets) stopped the daemon: five restarts and a failed unit,
    for metrics. Now the error says why and how, and the textfile still comes."""
    target = tmp_path / "edge_asr.prom"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        exporter = start_metrics(MetricsConfig(enabled=True, port=port, textfile=target), recorded())
    exporter.stop()
    assert exporter.port is None and target.is_file()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith(f"metrics.port: cannot listen on 127.0.0.1:{port} (")
    assert "running without the scrape endpoint" in errors[0] and "metrics.port: 0" in errors[0]


def test_a_textfile_that_cannot_be_written_is_said_once_and_its_recovery_once(tmp_path: Path, caplog) -> None:
    """Every 10 s, forever, it was a warning: 8,640 journal lines a day."""
    caplog.set_level(logging.INFO, logger="edge.service.metrics")
    target = tmp_path / "missing" / "edge_asr.prom"
    exporter = start_metrics(MetricsConfig(enabled=True, port=0, textfile=target), recorded())
    for _ in range(3):
        exporter._write()
    target.parent.mkdir()
    exporter._write()
    exporter._write()
    exporter.stop()
    said = [r.getMessage() for r in caplog.records if r.name == "edge.service.metrics"]
    assert len(said) == 2 and "cannot write" in said[0] and said[1].endswith("written again")


def test_textfile_is_written_and_rewritten_on_stop(tmp_path: Path) -> None:
    target = tmp_path / "edge_asr.prom"
    metrics = recorded()
    exporter = start_metrics(MetricsConfig(enabled=True, port=0, textfile=target), metrics)
    assert exporter.port is None
    assert "edge_asr_utterances_total 2.0" in target.read_text().splitlines()
    metrics.record_partial()
    exporter.stop()
    lines = target.read_text().splitlines()
    for line in EXPECTED[2:]:
        assert line in lines
    assert "edge_asr_partials_total 2.0" in lines
    assert [p.name for p in tmp_path.iterdir()] == ["edge_asr.prom"]


def test_textfile_is_readable_by_node_exporter_under_the_units_umask(tmp_path: Path) -> None:
    """node-exporter runs as another user; with UMask=0027 the file came out -rw-r-----."""
    target = tmp_path / "edge_asr.prom"
    previous = os.umask(0o027)
    try:
        start_metrics(MetricsConfig(enabled=True, port=0, textfile=target), recorded()).stop()
    finally:
        os.umask(previous)
    assert target.stat().st_mode & 0o777 == 0o644


def test_the_textfile_is_readable_from_the_moment_it_appears(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The library's writer renamed the file into place at 0640 and opened it up after: a scrape in
    between got EACCES and the edge_asr series dropped out (absence alerts flapped)."""
    renamed_at: list[int] = []
    real_replace = os.replace

    def spy(source, destination, *args, **kwargs):
        renamed_at.append(os.stat(source).st_mode & 0o777)
        return real_replace(source, destination, *args, **kwargs)

    monkeypatch.setattr(os, "replace", spy)
    previous = os.umask(0o027)
    try:
        start_metrics(MetricsConfig(enabled=True, port=0, textfile=tmp_path / "edge_asr.prom"), recorded()).stop()
    finally:
        os.umask(previous)
    assert renamed_at and set(renamed_at) == {0o644}
    assert [p.name for p in tmp_path.iterdir()] == ["edge_asr.prom"]


def test_disabled_exports_nothing(tmp_path: Path) -> None:
    target = tmp_path / "edge_asr.prom"
    exporter = start_metrics(MetricsConfig(enabled=False, port=free_port(), textfile=target), recorded())
    exporter.stop()
    assert exporter.port is None and not target.exists()


def test_backend_info_says_what_was_requested_and_whether_the_box_is_degraded() -> None:
    from prometheus_client import generate_latest

    metrics = Metrics()
    metrics.set_backend("cpu", "inference.backend is cuda but it cannot run", "cuda", True)
    text = generate_latest(metrics.registry).decode()
    assert 'degraded="true"' in text and 'requested="cuda"' in text and 'name="cpu"' in text


def test_a_link_planted_where_a_part_file_goes_is_not_followed(tmp_path: Path) -> None:
    """The part file had a fixed name (.NAME.part) opened with O_TRUNC: in a textfile directory others may
    write, a link there truncated whatever file the daemon may write (security review)."""
    from edge.files import write_whole

    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / ".edge_asr.prom.part").symlink_to(victim)
    write_whole(tmp_path / "edge_asr.prom", b"metric 1\n", 0o644)
    assert victim.read_text() == "keep me" and (tmp_path / "edge_asr.prom").read_bytes() == b"metric 1\n"
    assert (tmp_path / "edge_asr.prom").stat().st_mode & 0o777 == 0o644
