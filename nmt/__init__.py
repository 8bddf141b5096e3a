"""nmt: RNN encoder-decoder translation whose recurrent cell (GRU, LSTM, tanh) is one seam."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nmt-cells")  # the distribution's name; the import name is nmt
except PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = "0+unknown"
