"""The Whisper family: log-mel features, tokenizer, decoding, and its graphs on onnxruntime or RKNN."""
