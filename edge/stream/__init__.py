"""Streaming: VAD-gated utterances, stable partials and finals decoded on one worker thread."""
