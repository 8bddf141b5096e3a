"""Translation from a self-contained run directory: ``Translator.from_run_dir(...).translate(...)``.

The run directory supplies everything: ``config.yaml`` (the model's shape and the language pair),
``spm.model`` and ``best/`` or ``last/`` weights. Nothing in it is executed: the config is plain
YAML, the weights are safetensors. A missing or mismatched piece is a :class:`RunDirError`.

The public face of ``nmt.decoding.translator.Translator`` (what translates) and ``nmt.loader`` (what loads):
a translator built from where the model is, with ``nmt-translate``'s defaults.
"""

from __future__ import annotations

import os

from omegaconf import DictConfig

from nmt import loader
from nmt.core.search_options import SearchOptions
from nmt.decoding.translator import Translation, single_line
from nmt.decoding.translator import Translator as _Translator
from nmt.model.restore import RunDirError

__all__ = ["RunDirError", "Translation", "Translator", "single_line"]


class Translator(_Translator):
    """A loaded model, its tokenizer and search settings; translate lists of strings."""

    @classmethod
    def from_run_dir(
        cls,
        run_dir: str | os.PathLike,
        *,
        search: str | dict | SearchOptions | None = None,
        checkpoint: str | None = None,
        device: str | None = None,
        precision: str | None = None,
        ensemble: list[str | os.PathLike] | tuple | None = None,
        max_tokens: int | None = None,
        max_src_len: int | None = None,
        backend: str | None = None,
        quantize: str | None = None,
    ) -> Translator:
        """A run directory's model, decoding exactly as ``nmt-translate run_dir=...`` does: every
        argument left out takes its value from conf/translate.yaml, the command's own config
        (checkpoint best, precision auto, search beam5, ...).

        ``search``: a preset of conf/search/ (``"greedy"``, ``"beam5"``, ``"tuned"``), a dict of
        keys of the ``search`` group over the default preset (``{"beam_size": 12}``), or
        :class:`SearchOptions`. ``checkpoint``: best, last, or avg-last-N / avg-best-N (the mean
        of the N most recent or best kept checkpoints). ``ensemble``: more run directories whose
        models decode together with this one's (``nmt.model.ensemble``); they must have its
        SentencePiece model and language pair. ``backend``: ``"torch"`` or ``"onnxruntime"`` (the
        model's ONNX graphs, exported as it loads), ``quantize``: ``"int8"`` with onnxruntime.
        """
        cfg, options = loader.translate_config(search, locals())
        cfg.run_dir = str(run_dir)
        return loader.from_config(cfg, search=options, cls=cls)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        *,
        search: str | dict | SearchOptions | None = None,
        checkpoint: str | None = None,
        device: str | None = None,
        precision: str | None = None,
        ensemble: list[str | os.PathLike] | tuple | None = None,
        max_tokens: int | None = None,
        max_src_len: int | None = None,
        backend: str | None = None,
        quantize: str | None = None,
    ) -> Translator:
        """A model exported by ``nmt-export``: one file (``format=bundle``) or a directory with
        its ONNX graphs (``format=onnx``), decoding as ``nmt-translate model=PATH`` does; the
        settings as in :meth:`from_run_dir` (``"tuned"``: the search tuned for it, which the file
        carries). No run directory or corpus needed."""
        cfg, options = loader.translate_config(search, locals())
        cfg.model_file = str(path)
        return loader.from_config(cfg, search=options, cls=cls)

    @classmethod
    def from_config(
        cls,
        cfg: DictConfig,
        *,
        run_dir: str | os.PathLike | None = None,
        checkpoint: str | None = None,
        search: SearchOptions | None = None,
    ) -> Translator:
        """The translator a composed ``translate``/``eval``/``tune_search`` config describes (the
        commands build theirs here): ``run_dir=`` a run directory, or ``model=`` a file exported
        from one (``nmt.loader.from_config``)."""
        return loader.from_config(
            cfg, run_dir=run_dir, checkpoint=checkpoint, search=search, cls=cls
        )
