"""The model floor: the cell table and its derivatives, recurrent layers, attention, encoder, decoder (and its fused training loop), the sequence-to-sequence model, ensembles, the loss, checkpoints and a trained model restored from its run directory.

Each module imports only from floors below this one (docs/architecture.md)."""
