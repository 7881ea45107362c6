"""Voice activity: Silero VAD probabilities and the endpointer that turns them into utterances."""
