"""The serving floor: the one-file bundle, ONNX export and onnxruntime decoding, nmt-export and the HTTP service with its page.

Each module imports only from floors below this one (docs/architecture.md)."""
