"""The scoring floor: metrics, statistics across seeds, the learning-rate search's rule, gate and length analyses, evaluation of a split, search tuning.

Each module imports only from floors below this one (docs/architecture.md)."""
