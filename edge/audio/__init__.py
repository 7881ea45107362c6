"""Audio in: sources (microphone, file), the capture ring buffer, decoding and resampling to 16 kHz mono."""

from __future__ import annotations

from typing import Any

from edge.audio.base import PACES, AudioSource, SourceError
from edge.audio.file import FileSource


def open_source(spec: str, audio_cfg: Any, pace: str, *, wait_for_device: bool = False) -> AudioSource:
    """`mic` (the configured device) or `file:PATH`; `pace` applies to files only.

    `wait_for_device` is for the daemon: keep waiting for an absent microphone.
    """
    if pace not in PACES:
        raise SourceError(f"pace must be one of {', '.join(PACES)}, got {pace!r}")
    if spec == "mic":
        from edge.audio.mic import MicSource  # imports PortAudio: only when a microphone is wanted

        return MicSource(audio_cfg, wait_for_device=wait_for_device)
    if spec.startswith("file:") and spec[len("file:") :]:
        return FileSource(spec[len("file:") :], block_ms=audio_cfg.block_ms, pace=pace)
    raise SourceError(f"unknown audio source {spec!r}: use 'mic' or 'file:PATH'")
