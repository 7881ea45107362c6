"""Speech recognition: the model-family seam (Recognizer, Transcript, load_recognizer) and the CPU fallback."""
