"""Inference backends: where the Whisper encoder/decoder graphs run."""
