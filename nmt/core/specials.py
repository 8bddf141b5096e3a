"""The vocabulary's reserved ids: SentencePiece is trained with them (``tokenizer``), and
batching, the model and search rely on them without knowing anything else about the tokenizer."""

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
