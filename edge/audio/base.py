"""What every audio source is: 16 kHz mono float32 blocks, its statistics and its errors.

Every source yields blocks of `audio.block_ms`, so the stages after it cannot
tell a file from a microphone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from edge.errors import StartupError

SAMPLE_RATE = 16000  # what every stage after the source works at (Silero and Whisper both want 16 kHz)
PACES = ("realtime", "fast")
RECONNECTING_STATES = ("lost", "waiting")  # a microphone being reopened, with backoff


class SourceError(StartupError):
    """A source that cannot be opened or used (bad spec, absent device...); the message says why."""


@dataclass(frozen=True)
class SourceStats:
    """A snapshot of a source, as shown in `status` (its `source` object)."""

    device: str
    state: str
    overflows: int = 0
    dropped_s: float = 0.0  # captured, then lost to ring buffer overruns
    lost_s: float = 0.0  # never captured: the device was gone or stalled (a file loses none)
    reopens: int = 0
    position_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def reconnecting(self) -> bool:
        """No audio by design: the device is being reopened."""
        return self.state in RECONNECTING_STATES

    @property
    def awaiting_audio(self) -> bool:
        """No audio now, and the source is itself watching for it (here: reopening a device), so
        the daemon's watchdog must not restart the service for the silence."""
        return self.reconnecting


@dataclass(frozen=True)
class MicStats(SourceStats):
    """A microphone adds its open format and PortAudio's own overflow count."""

    rate: int | None = None
    channels: int | None = None
    input_overflows: int = 0

    ORDER = ("device", "state", "rate", "channels", "overflows", "input_overflows", "dropped_s", "lost_s",
             "reopens", "position_s")  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        return {key: values[key] for key in self.ORDER}

    @property
    def awaiting_audio(self) -> bool:
        """An open microphone with no frames yet is within `audio.stall_timeout_ms` (up to 60 s, longer
        than the watchdog's 30 s): past it the source declares the device lost and reopens it."""
        return self.reconnecting or self.state == "running"


class AudioSource(Protocol):
    ended: bool  # a file source has delivered everything
    can_wait: bool  # reading late loses nothing (a file at fast pace): the reader may set the pace
    breaks: int  # times the audio broke off (a device lost); counted once its last audio was read

    def start(self) -> None: ...

    def read(self, timeout: float) -> np.ndarray | None:
        """A 16 kHz mono float32 block, or None on timeout."""

    def stats(self) -> SourceStats: ...

    def close(self) -> None: ...
