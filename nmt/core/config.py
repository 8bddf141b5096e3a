"""Config schema: one dataclass per conf/ group, registered with Hydra's ConfigStore.

YAML files under conf/ are the one home of default values; the dataclasses here only fix which keys
exist and their types, so a typo in an override (``data.srcc=en``) is rejected when Hydra composes.
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, field, fields, make_dataclass

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from nmt.core.naming import run_dirname  # noqa: F401  (registers the resolvers conf/ names)
from nmt.core.search_options import SearchOptions


@dataclass
class DataConfig:
    """Where the parallel corpus comes from and how the training split is cleaned."""

    name: str = MISSING
    src: str = MISSING
    tgt: str = MISSING
    # local | url | hub. local reads <root>/<split>.<lang>[.gz], <split>.tsv[.gz] or <split>.jsonl[.gz].
    source: str = MISSING
    root: str = MISSING
    url: str = MISSING
    hub_id: str | None = None
    # Column languages of TSV files; null means [src, tgt].
    tsv_columns: list[str] | None = None
    train_split: str = MISSING
    valid_split: str = MISSING
    # null: every test split the source has for this pair; a named split that is missing is an error.
    test_splits: list[str] | None = None
    # Cleaning, training split only.
    max_len: int = MISSING
    max_ratio: float = MISSING
    normalize_whitespace: bool = MISSING


@dataclass
class TokenizerConfig:
    """SentencePiece training options."""

    name: str = MISSING
    joint: bool = MISSING
    model_type: str = MISSING
    vocab_size: int = MISSING
    character_coverage: float = MISSING
    byte_fallback: bool = MISSING
    normalization_rule_name: str = MISSING
    input_sentence_size: int = MISSING
    num_threads: int = MISSING
    # Its own seed, not the run's: runs that differ only in `seed` share one vocabulary.
    seed: int = MISSING


@dataclass
class BatchConfig:
    """Length-bucketed batching: a token budget, or a sentence count when max_tokens is null."""

    max_tokens: int | None = MISSING
    batch_size: int | None = MISSING
    pool_size: int = MISSING


@dataclass
class ModelConfig:
    """Encoder-decoder architecture; ``cell`` is the one seam the ablations turn."""

    name: str = MISSING
    cell: str = MISSING
    attention: str = MISSING
    emb_dim: int = MISSING
    enc_hidden: int = MISSING
    dec_hidden: int = MISSING
    enc_layers: int = MISSING
    dec_layers: int = MISSING
    bidirectional: bool = MISSING
    dropout: float = MISSING
    emb_dropout: float = MISSING
    input_feeding: bool = MISSING
    tie_output: bool = MISSING
    tie_src_tgt: bool = MISSING
    match_params: str | None = None  # a cell: resize enc/dec_hidden to its parameter count
    conditional: bool = MISSING  # the decoder's second transition after attention (cGRU)
    var_dropout: float = MISSING  # recurrent inputs and states, one mask per sequence (Gal)
    ctx_dropout: float = MISSING  # the attention context
    word_dropout: float = MISSING  # whole target words under teacher forcing
    fused: bool = MISSING  # the decoder's training loop as one autograd node (nmt.model.fused)


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule."""

    name: str = MISSING
    optimizer: str = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    betas: list[float] = MISSING
    # constant | warmup_decay | plateau
    schedule: str = MISSING
    warmup_steps: int = MISSING
    decay_factor: float = MISSING
    patience: int = MISSING
    min_lr: float = MISSING
    clip_norm: float = MISSING
    label_smoothing: float = MISSING


def _search_schema() -> type:
    """The ``search`` group: a name, the fields of :class:`SearchOptions` (their one listing) and
    how many sentences a decoding batch holds."""
    hints = typing.get_type_hints(SearchOptions)
    keys = ["name", *(f.name for f in fields(SearchOptions)), "max_sentences"]
    types = {**hints, "name": str, "max_sentences": int}
    return make_dataclass(
        "SearchConfig",
        [(key, types[key], field(default=MISSING)) for key in keys],
        namespace={"__doc__": "Decoding options shared by validation, translate and eval."},
    )


SearchConfig = _search_schema()


@dataclass
class TrainConfig:
    """The training loop: budget, validation, checkpoints."""

    max_steps: int = MISSING
    max_epochs: int = MISSING
    max_minutes: float = MISSING
    valid_every: int = MISSING
    valid_max_sentences: int | None = MISSING
    log_every: int = MISSING
    patience: int = MISSING
    early_stop_metric: str = MISSING
    # false: refuse a run_dir that has a checkpoint; true: continue it; auto: continue it if it
    # has one, do nothing if the run finished (done.json), else start (what sweeps use).
    # Any: a bool or the word auto, as written (a str field stored true as 'True' in config.yaml);
    # nmt.resume.decide refuses anything else before a file is written.
    resume: typing.Any = MISSING
    max_bad_steps: int = MISSING
    threads: int | None = MISSING
    tensorboard: bool | None = MISSING  # None: when the [tb] extra is installed
    progress: bool | None = None  # None: a bar when stderr is a terminal
    keep_last: int = MISSING
    keep_best: int = MISSING
    max_lr_decays: int = MISSING  # stop once the plateau schedule has cut the rate this often
    min_steps: int = MISSING  # before this update no validation counts against the run


@dataclass
class TuneConfig:
    """The learning-rate search every cell gets, the same for all: each rate trains
    ``max_steps`` updates with ``seed``, judged by its best validation BLEU. While a cell's best
    rate is the lowest or the highest it has tried, the next rate beyond that edge (the edge
    divided or multiplied by ``factor``) is tried too, up to ``max_points`` rates per cell: the
    chosen rate then has a worse rate on each side (it is bracketed) or the report says it has
    not."""

    lrs: list[float] = field(default_factory=list)  # empty: no tuning, optim.lr as configured
    max_steps: int = MISSING
    seed: int = MISSING
    # Tune each cell with this attention only and give its rate to every attention of the cell;
    # null: every cell x attention is tuned on its own.
    attention: str | None = None
    factor: float = MISSING  # the log grid's step beyond an edge
    max_points: int = MISSING  # rates tried per cell at most; 0: the grid lrs only, never widened


@dataclass
class SettingConfig:
    """One more setting of an ablation sweep: some of its cells with an attention and ``extra``
    overrides (another language pair, ...), over seeds, each cell with its tuned rate."""

    cells: list[str] = MISSING
    attention: str = MISSING
    seeds: list[int] = MISSING
    extra: list[str] = field(default_factory=list)


@dataclass
class AblationConfig:
    """An ablation sweep run by ``nmt-ablate`` (``make ablate``): tuning, then the grid."""

    cells: list[str] = MISSING
    seeds: dict[str, list[int]] = MISSING  # attention -> seeds: one multirun over the cells each
    also: list[SettingConfig] = field(default_factory=list)  # then one multirun per setting
    tune: TuneConfig = field(default_factory=TuneConfig)
    jobs: int = MISSING  # training runs at once (hydra/launcher=joblib when more than one)


@dataclass
class Config:
    """The whole composed config of every entry point."""

    run_dir: str = MISSING
    cache_dir: str = MISSING
    seed: int = MISSING
    device: str = MISSING
    precision: str = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # Splits translated with the best checkpoint and `search` once training ends (eval/<split>-...).
    final_eval: list[str] = field(default_factory=list)
    # The sweep plan of an ablation preset (nmt-ablate reads it; a training run ignores it).
    ablation: AblationConfig | None = None


@dataclass
class DecodeConfig:
    """What translate and eval share: a run directory, a checkpoint, batching and search."""

    run_dir: str | None = MISSING
    # model=FILE on the command line (conf/model/ is a config group, so the key is model_file).
    model_file: str | None = MISSING  # a file nmt-export wrote, in place of run_dir
    checkpoint: str = MISSING
    device: str = MISSING
    precision: str = MISSING
    max_tokens: int = MISSING
    max_src_len: int = MISSING
    backend: str = MISSING
    quantize: str = MISSING
    ensemble: list[str] = field(default_factory=list)
    search: SearchConfig = field(default_factory=SearchConfig)


@dataclass
class TranslateConfig(DecodeConfig):
    """nmt-translate: input and output files (or stdin/stdout) and input handling."""

    input: str | None = None
    output: str | None = None
    gates: str | None = None
    strict: bool = MISSING
    buffer_lines: int = MISSING


@dataclass
class EvalConfig(DecodeConfig):
    """nmt-eval: a split, and either search settings or hypothesis files."""

    split: str = MISSING
    hyps: list[str] = field(default_factory=list)
    attention_plots: int = MISSING
    bootstrap_samples: int = MISSING
    progress: bool | None = None  # None: a bar when stderr is a terminal


@dataclass
class TuneSearchConfig(DecodeConfig):
    """nmt-tune-search: the grid of beam sizes and length penalties tried on a split."""

    split: str | None = None  # null: the run's validation split
    allow_test: bool = MISSING
    beam_sizes: list[int] = field(default_factory=list)
    alphas: list[float] = field(default_factory=list)
    progress: bool | None = None  # None: a bar when stderr is a terminal


@dataclass
class ServeConfig(DecodeConfig):
    """nmt-serve: where it listens and what one request may ask."""

    compare: list[str] = MISSING
    host: str = MISSING
    port: int = MISSING
    max_lines: int = MISSING
    max_gate_lines: int = MISSING
    max_chars: int = MISSING
    max_body_bytes: int = MISSING
    max_beam: int = MISSING
    max_output_len: int = MISSING
    max_output_ratio: float = MISSING
    max_work: int = MISSING
    max_decode_s: float = MISSING
    preempt_after_s: float = MISSING
    timeout_s: float = MISSING
    window_ms: float = MISSING
    batch_tokens: int = MISSING


@dataclass
class ExportConfig:
    """nmt-export: a run's model written out in a format of its own."""

    run_dir: str = MISSING
    format: str = MISSING
    out: str = MISSING
    checkpoint: str = MISSING
    overwrite: bool = MISSING


def register_configs() -> None:
    """Register the schemas so conf/*.yaml is validated (``defaults: [schema, ...]``); once a
    process (every composition calls it, and a registration costs a sixth of a second)."""
    cs = ConfigStore.instance()
    if "schema.yaml" in cs.repo:
        return
    cs.store(name="schema", node=Config)
    cs.store(name="translate_schema", node=TranslateConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    cs.store(name="tune_search_schema", node=TuneSearchConfig)
    cs.store(name="export_schema", node=ExportConfig)
    cs.store(name="serve_schema", node=ServeConfig)


def group_kwargs(node: DictConfig, drop: tuple[str, ...] = ("name",)) -> dict:
    """A config group as plain keyword arguments (validated by its dataclass schema)."""
    values = asdict(OmegaConf.to_object(node))
    return {k: v for k, v in values.items() if k not in drop}
