"""Hardware: which board and runtimes this box has, onnxruntime provider chains, the RKNN runtime, selection with reasons."""
