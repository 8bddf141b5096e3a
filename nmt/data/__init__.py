"""The data floor: where a corpus comes from, the data stage that cleans and caches it, the tokenizer stage, batching.

Each module imports only from floors below this one (docs/architecture.md)."""
