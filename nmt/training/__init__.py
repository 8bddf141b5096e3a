"""The training floor: optimizer and schedule, data-parallel ranks, progress, what a run keeps, the training loop and its validation.

Each module imports only from floors below this one (docs/architecture.md)."""
