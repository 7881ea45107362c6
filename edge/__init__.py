"""edge-asr: real-time offline speech recognition daemon for edge boxes."""

import os

__version__ = "0.1.0"

# Offline by design: opt out of onnxruntime's usage telemetry before any module
# loads onnxruntime (the variable is read when its environment is created).
os.environ.setdefault("ORT_TELEMETRY_DISABLED", "1")
