"""edge-asr: real-time offline speech recognition daemon for edge boxes."""

__version__ = "0.1.0"
