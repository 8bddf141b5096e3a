"""nmt: RNN encoder-decoder translation whose recurrent cell (GRU, LSTM, tanh) is one seam."""

import os
from importlib.metadata import PackageNotFoundError, version

# Tensors of 2 MiB and more on transparent huge pages: a beam step's [beams, V] logits and the
# loss's [rows, V] blocks are allocated afresh every step and glibc maps them from the kernel, so
# in 4 KiB pages their page faults took ~12 % of beam search's time. PyTorch's CPU allocator reads
# the variable once, at its first allocation: it is set here, before anything imports torch.
# THP_MEM_ALLOC_ENABLE=0 in the environment turns it off.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

try:
    __version__ = version("nmt-cells")  # the distribution's name; the import name is nmt
except PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = "0+unknown"
