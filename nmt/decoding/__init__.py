"""The decoding floor: search over the decoder's step, corpus decoding, the Translator (which loads nothing) and the line stream of nmt-translate.

Each module imports only from floors below this one (docs/architecture.md)."""
