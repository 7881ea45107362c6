"""Bounds that the config schema states and the runtime sizes things by, defined once.

Kept apart from edge/config.py so that the recognizer (`edge-asr transcribe`)
does not load the config schema: pydantic costs about 15 MiB of RSS.
"""

MAX_BEAM = 10  # stream.final_beam's upper bound (TensorRT shape profiles are sized for it)
MAX_SUBSCRIBERS = 1000  # publish.max_subscribers' upper bound: the unit's LimitNOFILE=4096 leaves room for the rest
MAX_UTTERANCE_S = 28  # vad.max_utterance_s's upper bound: one utterance always fits one 30 s Whisper window
MAX_SPEECH_PAD_MS = 2000  # vad.speech_pad_ms's upper bound: audio kept before any onset, whatever a reload sets
BIND_NAME_EXTRA = 18  # the publisher binds `.{name}.{16 hex}` beside publish.socket first, then links it into place
MAX_SOCKET_PATH = 107 - BIND_NAME_EXTRA  # publish.socket's bytes: a Unix socket's sun_path holds 107 and a NUL
