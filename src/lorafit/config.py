"""Configuration dataclasses, validated in one place (``__post_init__``).

Field names are peft's and transformers' where they exist; CLI flags map one to one onto them
(``lora_alpha`` is ``--lora-alpha``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from lorafit.errors import ConfigError

SINGLE_LABEL, MULTI_LABEL, REGRESSION = "single_label_classification", "multi_label_classification", "regression"
TASKS = (SINGLE_LABEL, MULTI_LABEL, REGRESSION)
"""What a run learns, named as transformers' ``problem_type``."""
TASK_ALIASES = {"classification": SINGLE_LABEL, "single-label": SINGLE_LABEL, "multi-label": MULTI_LABEL,
                "regression": REGRESSION}
"""The CLI's short names (``--task multi-label``), accepted by the config too."""
TASK_METRICS = {SINGLE_LABEL: ("accuracy", "macro_f1"), MULTI_LABEL: ("micro_f1", "macro_f1", "subset_accuracy"),
                REGRESSION: ("mse", "mae", "pearson", "spearman")}
"""The validation metrics that may pick the best checkpoint of each task; the first is what ``auto`` means."""
METRICS = TASK_METRICS[SINGLE_LABEL]
MIN_STEPS_MAX_EPOCHS = 10
"""``min_steps`` adds epochs up to this many in all."""
POOLINGS = ("mean", "cls")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BIASES = ("none", "all", "lora_only")
CLASS_WEIGHTS = ("none", "auto")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_positive(name: str, value: float) -> None:
    _check(value > 0, f"{name} must be > 0, got {value!r}")


@dataclass
class DataConfig:
    """Where the text and the label are in a data file, and how validation data is made."""

    text_column: str = "text"
    """Column that holds the text to classify."""
    label_column: str = "label"
    """Column that holds the label (strings or integers)."""
    text_pair_column: str | None = None
    """Column that holds the second text of tasks over two texts (NLI, paraphrase, query-document relevance);
    each row is then encoded as the pair (text, text pair). None: one text per row."""
    validation_fraction: float | str = "auto"
    """Share of each class held out for validation (early stopping, best checkpoint) when no validation
    file is given; ``0`` trains on every row for the full step budget and keeps the last state;
    ``"auto"``: ``0.1`` when every class has at least ``AUTO_VALIDATION_MIN_ROWS`` rows, else ``0``
    (with a few examples per class a held-out row teaches more than it measures)."""
    validation_overlap: str = "move"
    """What the holdout does with the validation rows whose text the training part already holds, as itself or
    inside a longer text (data built from overlapping texts, such as SST-2's phrases cut from its sentences):
    ``move`` them into training, or ``keep`` them held out (see :mod:`lorafit.overlap`). A ``--validation``
    file is not changed."""
    empty_texts: str = "drop"
    """What to do with empty or whitespace-only texts: ``drop`` them (counted, with a warning) or ``error``."""
    label_delimiter: str = "|"
    """Multi-label only: what separates the labels in a label cell (``sports|music``); a cell holding a JSON
    list (``["sports", "music"]``) is always read as one, and a JSONL file may hold a real list."""

    def __post_init__(self) -> None:
        _check(bool(self.text_column), "text_column must not be empty")
        _check(bool(self.label_column), "label_column must not be empty")
        if self.text_pair_column is not None:
            _check(bool(str(self.text_pair_column).strip()),
                   "text_pair_column must not be empty; name the column of the second text, e.g. --text-pair-column "
                   "hypothesis, or leave it out for one text per row")
            used = {self.text_column: "text_column", self.label_column: "label_column"}
            _check(self.text_pair_column not in used, f"text_pair_column {self.text_pair_column!r} is also the "
                   f"{used.get(self.text_pair_column)}; the second text needs a column of its own")
        _check(isinstance(self.label_delimiter, str) and self.label_delimiter.strip() == self.label_delimiter != ""
               and not any(c in self.label_delimiter for c in '[]"\n\r'),
               f"label_delimiter must be a non-empty string without surrounding spaces, brackets, quotes or line "
               f"breaks (e.g. '|' or ','), got {self.label_delimiter!r}")
        self.validation_fraction = parse_validation_fraction(self.validation_fraction)
        _check(self.validation_overlap in ("move", "keep"),
               f"validation_overlap must be 'move' or 'keep', got {self.validation_overlap!r}")
        _check(self.empty_texts in ("drop", "error"),
               f"empty_texts must be 'drop' or 'error', got {self.empty_texts!r}")


@dataclass
class LoraSettings:
    """The LoRA adapter: the same names and meanings as ``peft.LoraConfig``."""

    r: int = 8
    """Rank of the LoRA update matrices."""
    lora_alpha: float = 16
    """Scaling numerator: the update is multiplied by ``lora_alpha / r``."""
    lora_dropout: float = 0.1
    """Dropout on the LoRA branch input during training."""
    bias: str = "none"
    """Which biases train: ``none``, ``all`` or ``lora_only``."""
    target_modules: list[str] | None = None
    """Module names that get LoRA; ``None`` means every linear layer of the encoder's blocks."""
    layers_to_transform: list[int] | str | None = "auto"
    """Encoder blocks (0-based) that get LoRA: a list, ``"all"`` (or ``None``), or ``"auto"``: chosen by
    the training rows (:mod:`lorafit.strategy`): the top third of the blocks (at least one), the top sixth
    from 5,000 rows, every block from 30,000. Blocks below the lowest one are frozen, and their output is
    computed once and cached, so every epoch runs only the blocks that learn."""
    use_rslora: bool = False
    """Rank-stabilised scaling ``lora_alpha / sqrt(r)``."""
    use_dora: bool = False
    """Weight-decomposed LoRA (DoRA): slower, sometimes more accurate."""

    def __post_init__(self) -> None:
        _check(isinstance(self.r, int) and self.r >= 1, f"r must be an integer >= 1, got {self.r!r}")
        _check_positive("lora_alpha", self.lora_alpha)
        _check(0.0 <= self.lora_dropout < 1.0, f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        _check(self.bias in BIASES, f"bias must be one of {', '.join(BIASES)}, got {self.bias!r}")
        if self.target_modules is not None:
            self.target_modules = [m.strip() for m in self.target_modules if m.strip()]
            _check(bool(self.target_modules), "target_modules is empty; give module names such as query,value")
        self.layers_to_transform = parse_layers(self.layers_to_transform)


@dataclass
class TrainConfig:
    """How to train: base model, head, optimisation, evaluation and early stopping."""

    task: str = SINGLE_LABEL
    """What to learn: ``single_label_classification`` (one label per text), ``multi_label_classification``
    (any number of labels per text: sigmoid outputs, per-label thresholds) or ``regression`` (a number per
    text); the short names ``classification``, ``multi-label`` and ``regression`` are accepted too."""
    model: str = "minilm"
    """Base encoder: an alias (``minilm``), a local model directory or a Hugging Face Hub id."""
    pooling: str = "mean"
    """How token states become one vector: ``mean`` (suits sentence-transformer encoders) or ``cls``."""
    probe_init: bool = True
    """Initialise the head from a logistic regression fitted on the frozen encoder's embeddings."""
    wise_alpha: float = 1.0
    """Weight-space ensemble of the trained model and its probe-initialised start (WiSE-FT, Wortsman et al.,
    2022): after training, every trainable weight except LoRA's A matrices becomes ``start + wise_alpha *
    (trained - start)``. LoRA's B starts at zero, so LoRA's update is scaled by ``wise_alpha``, and the head
    lies between the probe's and the trained one. 1 (the default): the trained model as it is; 0: the probe.
    Below 1 needs ``probe_init``. On BANKING77, 0.5 changed test accuracy by +0.13, +0.06 and -0.23 points
    over three seeds (``bench/wise.py``), so it is not on by default."""
    ema_decay: float | str = 0.0
    """Exponential moving average of the trainable weights (see :mod:`lorafit.averaging`): after every step
    ``average = ema_decay * average + (1 - ema_decay) * weights``; evaluations, the kept checkpoint and the
    saved adapter are the average's. 0 (the default): off, the weights as trained; a number in [0, 1) sets the
    decay; ``"auto"``: a time constant ``1 / (1 - decay)`` of a third of the planned steps, at most 200 (0.9947
    for BANKING77's 564 steps). On BANKING77 ``auto`` moved test accuracy by -0.13 to +0.29 points over five
    seeds (mean +0.10, ``bench/averaging.py``), so it is not on by default."""
    epochs: int | str = "auto"
    """Passes over the training data (early stopping may end sooner; ``min_steps`` may add passes). ``"auto"``:
    2, or 1 from ``lorafit.strategy.LARGE_DATA_ROWS`` training rows on (see :mod:`lorafit.strategy`)."""
    min_steps: int = 200
    """At least this many optimisation steps: on small data the epochs are raised to reach it (a few
    hundred examples give a few steps per epoch), up to ``MIN_STEPS_MAX_EPOCHS`` epochs in all (a
    handful of examples would otherwise be seen hundreds of times). 0: exactly ``epochs``."""
    batch_size: int = 32
    """Training examples per optimisation step."""
    learning_rate: float = 1e-3
    """Peak learning rate of AdamW (linear warm-up, then linear decay to 0)."""
    weight_decay: float = 0.01
    """AdamW weight decay on LoRA and head weights."""
    warmup_ratio: float = 0.06
    """Share of the training steps spent warming the learning rate up from 0."""
    max_length: int | str = "auto"
    """Longest training input in tokens; longer texts are truncated (and counted). ``"auto"``: the 99th percentile of
    the training texts' token lengths, rounded up to a multiple of 8 and capped by the model (see
    :func:`lorafit.datacheck.auto_max_length`); the length picked is what the run directory records."""
    predict_max_length: int | str = "auto"
    """Longest input in tokens when predicting, evaluating and validating (exports too); longer texts are
    truncated. ``"auto"``: with ``max_length="auto"`` the model's own limit (512 tokens for MiniLM), since the
    automatic training length only saves training time and the texts it cuts still fit the model; with a given
    ``max_length``, that length, so a cut you chose applies everywhere. The run directory records the length."""
    seed: int = 0
    """Seed for the validation split, initialisation, dropout and batch order."""
    eval_every: int | str = "epoch"
    """Evaluate on validation data every N optimisation steps, or once per ``epoch``."""
    patience: int = 2
    """Stop after this many evaluations without improvement of ``metric``; 0 disables early stopping."""
    metric: str = "auto"
    """Validation metric that picks the best checkpoint. Single-label: ``accuracy`` or ``macro_f1``;
    multi-label: ``micro_f1``, ``macro_f1`` or ``subset_accuracy``; regression: ``mse``, ``mae`` (lower is
    better), ``pearson`` or ``spearman``. ``auto``: the first of the task's (accuracy, micro_f1, mse)."""
    precision: str = "auto"
    """``bf16`` autocast, ``fp16`` autocast with loss scaling (CUDA GPUs only), ``fp32``, or ``auto``: bf16
    where the CPU/GPU runs it natively, else fp16 on a CUDA GPU and fp32 on a CPU."""
    eval_batch_size: int = 256
    """Examples per batch when evaluating and predicting."""
    length_bucketing: bool = True
    """Form training batches from texts of similar length (less padding); off: plain shuffled batches."""
    pad_to_multiple_of: int | str = "auto"
    """Pad each batch to a multiple of this many tokens. ``"auto"``: 8 for bf16/fp16 and on GPUs (one kernel per
    shape: oneDNN builds and keeps one for each bf16 input shape, tensor cores want multiples of 8), 1 for fp32
    on a CPU, where every padded token is wasted work (multiples of 8 padded a BANKING77 epoch by 25%)."""
    cache_frozen: bool = True
    """Compute the frozen blocks below the lowest LoRA block once and reuse their output every epoch;
    off: recompute them at every step (the same model, slower)."""
    fast_dropout: bool = True
    """Draw dropout masks on CPUs from one seed per call expanded by numpy (:mod:`lorafit.dropout`) instead of
    torch's per-element generator, which took 29% of a training step; the same drop rate and scaling, still
    decided by ``seed``. Off: torch's own dropout (other masks, so other numbers)."""
    class_weights: str = "none"
    """``auto``: weight each class's loss (and the probe) by its inverse frequency, so rare classes count
    as much as common ones (multi-label: each label's positives weigh negatives/positives, BCE's
    ``pos_weight``); ``none``: every row counts the same. Not for regression."""
    calibrate: bool = True
    """Fit a softmax temperature on the validation data after training (needs validation data); single-label
    only: skipped (and logged) for the other tasks, whose multi-label thresholds are tuned instead."""
    abstain: bool = False
    """Answer ``unknown_label`` when the top probability is below a threshold chosen on validation data
    for ``target_precision`` (or the fixed ``threshold``)."""
    target_precision: float = 0.95
    """With ``abstain``: the accuracy wanted on the validation rows that get an answer."""
    threshold: float | None = None
    """A fixed abstention threshold on the top probability (implies ``abstain``); None: chosen on validation."""
    unknown_label: str = "unknown"
    """The label returned when the classifier abstains."""
    checkpoint_every: int | str = 200
    """When training has a checkpoint directory (``lorafit train`` always has: ``RUN_DIR.partial``), write
    the training state every N optimisation steps, or at the end of each ``epoch``; 0: never. It is what
    ``--resume`` continues from after a crash."""
    trust_remote_code: bool = False
    """Let transformers run Python code shipped with the base model (custom architectures); off by default
    because that code runs with your rights."""
    label_examples: int | str = "auto"
    """Examples per label made from the label name with ``label_template`` ("this sentence is card arrival"
    for ``card_arrival``: SetFit's templated-dataset idea), added to the training rows only (never to
    validation or test data): with a few examples per class they tell the model what each name means.
    An integer is taken as given (0: none); ``"auto"``: ``AUTO_LABEL_EXAMPLES`` for few-shot single-label
    classification of single texts whose label names hold a letter, else 0 (see
    :func:`resolve_label_examples`)."""
    label_template: str = "this sentence is {}"
    """The text of a label example: ``{}`` (exactly once) is replaced by the label name, ``_`` read as a space."""

    def __post_init__(self) -> None:
        _check(bool(self.model), "model must not be empty; use 'minilm', a model directory or a hub id")
        _check(self.pooling in POOLINGS, f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        self.epochs = parse_epochs(self.epochs)
        for name in ("batch_size", "eval_batch_size"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")
        self.max_length = parse_max_length(self.max_length)
        self.predict_max_length = parse_max_length(self.predict_max_length, "predict_max_length")
        self.pad_to_multiple_of = parse_pad_multiple(self.pad_to_multiple_of)
        self.wise_alpha = parse_wise_alpha(self.wise_alpha, self.probe_init)
        self.ema_decay = parse_ema_decay(self.ema_decay)
        _check_positive("learning_rate", self.learning_rate)
        _check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay!r}")
        _check(0.0 <= self.warmup_ratio < 1.0, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        _check(isinstance(self.min_steps, int) and self.min_steps >= 0,
               f"min_steps must be an integer >= 0, got {self.min_steps!r}")
        _check(isinstance(self.patience, int) and self.patience >= 0, f"patience must be an integer >= 0, got {self.patience!r}")
        self.task = TASK_ALIASES.get(self.task, self.task)
        _check(self.task in TASKS, f"task must be one of {', '.join(TASKS)} (or {', '.join(TASK_ALIASES)}), "
                                   f"got {self.task!r}")
        metrics = TASK_METRICS[self.task]
        _check(self.metric == "auto" or self.metric in metrics,
               f"metric must be one of {', '.join(metrics)}, got {self.metric!r} (the metrics of {self.task}; or auto "
               f"for {metrics[0]})")
        _check(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        self.eval_every = parse_eval_every(self.eval_every)
        _check(self.class_weights in CLASS_WEIGHTS,
               f"class_weights must be one of {', '.join(CLASS_WEIGHTS)}, got {self.class_weights!r}")
        _check(0.0 < self.target_precision <= 1.0, f"target_precision must be in (0, 1], got {self.target_precision!r}")
        _check(self.threshold is None or 0.0 <= self.threshold <= 1.0,
               f"threshold must be a probability in [0, 1], got {self.threshold!r}")
        _check(bool(str(self.unknown_label).strip()), "unknown_label must not be empty; e.g. --unknown-label unknown")
        if self.threshold is not None:
            self.abstain = True
        _check(self.task != REGRESSION or self.class_weights == "none",
               "class_weights 'auto' has no meaning for regression (there are no classes); leave it at 'none'")
        _check(self.task == SINGLE_LABEL or not self.abstain,
               f"abstain and threshold apply to single_label_classification only, not {self.task} (multi-label "
               "thresholds are tuned per label on the validation data); leave out --abstain and --threshold")
        self.checkpoint_every = parse_eval_every(self.checkpoint_every, "checkpoint_every", minimum=0)
        self._check_label_examples()

    def _check_label_examples(self) -> None:
        """Check (and parse) ``label_examples`` and ``label_template``."""
        self.label_examples = parse_label_examples(self.label_examples)
        _check(isinstance(self.label_template, str) and self.label_template.count("{}") == 1,
               f"label_template must contain '{{}}' exactly once (where the label name goes), e.g. "
               f"'this sentence is {{}}', got {self.label_template!r}")
        _check(self.label_examples in ("auto", 0) or self.task == SINGLE_LABEL,
               f"label_examples={self.label_examples} adds one example text per label, which only "
               f"single_label_classification can learn from, not {self.task}; pass --label-examples 0 (or auto)")


@dataclass
class ServeLimits:
    """Bounds of ``lorafit serve``: what one request may hold, and how requests are batched."""

    max_texts: int = 256
    """Texts in one request; more is a 422."""
    max_chars: int = 20_000
    """Characters (code points) in one text; a longer text is a 422 (the model reads at most
    ``max_length`` tokens of it anyway)."""
    max_body_bytes: int = 2 * 1024 * 1024
    """Bytes of one request body; more is a 413, refused before the rest of the body is read."""
    max_batch_size: int = 64
    """Texts the micro-batcher gathers from concurrent requests into one forward pass (a request with
    more texts runs as a batch of its own)."""
    max_wait_ms: float = 5.0
    """How long the micro-batcher waits for more requests once one has arrived."""

    def __post_init__(self) -> None:
        for name in ("max_texts", "max_chars", "max_body_bytes", "max_batch_size"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")
        _check(0 <= self.max_wait_ms <= 1000, f"max_wait_ms must be in [0, 1000], got {self.max_wait_ms!r}")


def selection_metric(config: TrainConfig) -> str:
    """The metric that picks the best checkpoint: ``config.metric``, with ``auto`` resolved for its task."""
    return TASK_METRICS[config.task][0] if config.metric == "auto" else config.metric


SEARCHABLE = {"learning_rate": float, "r": int, "lora_alpha": float, "lora_dropout": float, "epochs": int,
              "target_modules": str, "ema_decay": float, "wise_alpha": float}
"""The settings ``lorafit tune`` can search, and the type of their values (``target_modules``: ``"all"`` or
comma-separated names such as ``"query,value"``). The last three are searched only when a search space file
names them."""
STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql")
"""Database kinds of an Optuna RDB storage URL (``postgresql+psycopg2://...`` names a driver too)."""


@dataclass(frozen=True)
class SearchParam:
    """One setting of ``lorafit tune``: a fixed ``value``, a range ``low``..``high`` (``log``: sampled on a log
    scale) or a list of ``choices``. Every value it can take must be valid for its config field."""

    name: str
    """A key of ``SEARCHABLE``: a field of :class:`TrainConfig` or :class:`LoraSettings`."""
    value: Any = None
    """The fixed value (the setting is not searched)."""
    low: float | None = None
    """Smallest value of a range."""
    high: float | None = None
    """Largest value of a range."""
    log: bool = False
    """Sample the range on a log scale (for scales such as the learning rate)."""
    choices: tuple | None = None
    """The values to choose from."""

    def __post_init__(self) -> None:
        kind = SEARCHABLE.get(self.name)
        _check(kind is not None, f"search space: {self.name!r} cannot be searched; searchable settings are "
                                 f"{', '.join(SEARCHABLE)}")
        ranged = self.low is not None or self.high is not None
        _check([self.value is not None, ranged, self.choices is not None].count(True) == 1,
               f"search space: {self.name} needs exactly one of a fixed value, low and high, or choices")
        if ranged:
            self._check_range(kind)
        if self.choices is not None:
            _check(len(self.choices) >= 1, f"search space: {self.name} has an empty list of choices")
        for value in self.values():
            check_setting(self.name, value)

    def _check_range(self, kind: type) -> None:
        where = f"search space: {self.name}"
        _check(kind is not str, f"{where} takes choices, not a range; e.g. {{\"choices\": [\"all\", \"query,value\"]}}")
        _check(self.low is not None and self.high is not None, f"{where} needs both low and high")
        _check(kind is float or (_is_int(self.low) and _is_int(self.high)),
               f"{where} takes whole numbers, got low {self.low!r} and high {self.high!r}")
        _check(_is_number(self.low) and _is_number(self.high) and self.low < self.high,
               f"{where}: low must be a number below high, got low {self.low!r} and high {self.high!r}")
        _check(not self.log or self.low > 0, f"{where}: a log range needs low > 0, got {self.low!r}")

    def values(self) -> list:
        """The values to check: the fixed value, the ends of the range, or every choice."""
        if self.value is not None:
            return [self.value]
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    @property
    def searched(self) -> bool:
        """False for a fixed value (or a single choice)."""
        return self.value is None and (self.choices is None or len(self.choices) > 1)

    def describe(self) -> str:
        """``fixed 8``, ``one of 4, 8, 16``, ``0.0001 .. 0.003 (log scale)``."""
        if self.value is not None:
            return f"fixed {self.value}"
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        return f"{self.low:g} .. {self.high:g}" + (" (log scale)" if self.log else "")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def setting_value(name: str, value: Any) -> Any:
    """A search space value as its config field takes it: ``target_modules`` ``"all"`` -> None,
    ``"query,value"`` -> ``["query", "value"]``; anything else unchanged."""
    if name != "target_modules":
        return value
    _check(isinstance(value, str), f"search space: target_modules values are strings such as 'all' or "
                                   f"'query,value', got {value!r}")
    return None if value.strip().lower() == "all" else value.split(",")


def check_setting(name: str, value: Any) -> None:
    """Raise ConfigError (naming the search space) when ``value`` is not valid for config field ``name``."""
    kind = SEARCHABLE[name]
    _check(_is_int(value) if kind is int else _is_number(value) if kind is float else isinstance(value, str),
           f"search space: {name} takes {kind.__name__} values, got {value!r}")
    cls = LoraSettings if name in {f.name for f in fields(LoraSettings)} else TrainConfig
    try:
        cls(**{name: setting_value(name, value)})
    except ConfigError as exc:
        raise ConfigError(f"search space: {exc}") from None


@dataclass
class TuneConfig:
    """How ``lorafit tune`` runs its study (the settings it searches are :class:`SearchParam` s)."""

    trials: int = 20
    """Trials this process runs (several processes sharing a study each run this many)."""
    timeout: float | None = None
    """Start no new trial after this many seconds (a running trial finishes); None: no limit."""
    study_name: str = "lorafit"
    """Name of the study in the storage; processes with the same storage and name share one study."""
    storage: str | None = None
    """An Optuna RDB storage URL (``sqlite:///study.db``, ``postgresql://user:password@host/db``, ...);
    None: ``OUT/study.db``."""
    pruning: bool = True
    """Stop a trial at an evaluation where its best validation metric so far is below the median of the other
    trials' at the same step (Optuna's ``MedianPruner``)."""
    pruning_startup_trials: int = 3
    """Trials that finish before pruning starts."""

    def __post_init__(self) -> None:
        _check(_is_int(self.trials) and self.trials >= 1, f"trials must be an integer >= 1, got {self.trials!r}")
        _check(self.timeout is None or (_is_number(self.timeout) and self.timeout > 0),
               f"timeout must be a number of seconds > 0, got {self.timeout!r}")
        _check(bool(str(self.study_name).strip()), "study_name must not be empty; e.g. --study-name banking")
        _check(_is_int(self.pruning_startup_trials) and self.pruning_startup_trials >= 0,
               f"pruning_startup_trials must be an integer >= 0, got {self.pruning_startup_trials!r}")
        if self.storage is not None:
            check_storage_url(self.storage)


def check_storage_url(url: str) -> None:
    """Refuse a storage URL that is not an SQLAlchemy database URL of a kind Optuna stores studies in."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    hint = ("use sqlite:///PATH/study.db (a file on a shared disk), postgresql://USER:PASSWORD@HOST/DB or "
            "mysql://USER:PASSWORD@HOST/DB")
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"storage {url!r} is not a database URL; {hint}") from None
    _check(parsed.get_backend_name() in STORAGE_SCHEMES,
           f"storage scheme {parsed.get_backend_name()!r} is not supported (in {redact_url(url)}); {hint}")


def redact_url(url: str) -> str:
    """A database URL with its password shown as ``***`` (for messages and summaries)."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _auto_or_int(value: object) -> object:
    """``"auto"`` for any spelling of it, an int for a string of digits, anything else unchanged (the caller
    checks it)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


def parse_max_length(value: int | str, name: str = "max_length") -> int | str:
    """``"auto"`` or a token count >= 4, from a flag value such as ``"auto"`` or ``"64"``."""
    value = _auto_or_int(value)
    _check(value == "auto" or (_is_int(value) and value >= 4),
           f"{name} must be 'auto' or an integer of at least 4 tokens, got {value!r}")
    return value


def parse_epochs(value: int | str) -> int | str:
    """``"auto"`` or a number of passes >= 1, from a flag value such as ``"auto"`` or ``"3"``."""
    value = _auto_or_int(value)
    _check(value == "auto" or (_is_int(value) and value >= 1),
           f"epochs must be 'auto' or an integer >= 1, got {value!r}")
    return value


def parse_pad_multiple(value: int | str) -> int | str:
    """``"auto"`` or a token count >= 1, from a flag value such as ``"auto"``, ``"1"`` or ``"8"``."""
    value = _auto_or_int(value)
    _check(value == "auto" or (_is_int(value) and value >= 1),
           f"pad_to_multiple_of must be 'auto' or an integer >= 1 (1: no rounding), got {value!r}")
    return value


def parse_label_examples(value: int | str) -> int | str:
    """``"auto"`` or a count >= 0, from a flag value such as ``"auto"``, ``"0"`` or ``"4"``."""
    value = _auto_or_int(value)
    _check(value == "auto" or (_is_int(value) and value >= 0),
           f"label_examples must be 'auto' or an integer >= 0 (0: none), got {value!r}")
    return value


AUTO_VALIDATION_FRACTION = 0.1
AUTO_VALIDATION_MIN_ROWS = 20
"""``validation_fraction="auto"`` holds out 10% only when the smallest class has at least this many rows."""


def parse_wise_alpha(value: float | str, probe_init: bool = True) -> float:
    """A number in [0, 1] from a flag value such as ``"0.5"``; below 1 needs a probe start (``probe_init``),
    which is what the weights move back towards."""
    try:
        alpha = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"wise_alpha must be a number in [0, 1] (1: keep the trained weights), got {value!r}") \
            from None
    _check(0.0 <= alpha <= 1.0, f"wise_alpha must be a number in [0, 1] (1: keep the trained weights), got {value!r}")
    _check(alpha == 1.0 or probe_init, f"wise_alpha {alpha} moves the weights back towards the probe-initialised "
                                       "start, and probe_init is off; turn probe_init on or use wise_alpha 1")
    return alpha


def _auto_or_fraction(name: str, value: float | str, zero: str) -> float | str:
    """``"auto"`` or a number in [0, 1) from a flag value such as ``"auto"``, ``"0"`` or ``"0.2"``; ``zero``
    says what 0 means, for the error message."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    message = f"{name} must be 'auto' or a number in [0, 1) (0: {zero}), got {value!r}"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(message) from None
    _check(0.0 <= number < 1.0, message)
    return number


def parse_ema_decay(value: float | str) -> float | str:
    """``"auto"`` or a decay in [0, 1), from a flag value such as ``"auto"``, ``"0"`` or ``"0.999"``."""
    return _auto_or_fraction("ema_decay", value, "no averaging")


def parse_validation_fraction(value: float | str) -> float | str:
    """``"auto"`` or a fraction in [0, 1), from a flag value such as ``"auto"``, ``"0"`` or ``"0.2"``."""
    return _auto_or_fraction("validation_fraction", value, "no validation split")


def resolve_validation_fraction(value: float | str, smallest_class: int) -> float:
    """The fraction ``value`` stands for, given the row count of the smallest class."""
    if value != "auto":
        return float(value)
    return AUTO_VALIDATION_FRACTION if smallest_class >= AUTO_VALIDATION_MIN_ROWS else 0.0


AUTO_LABEL_EXAMPLES = 4
"""Label examples per label of ``label_examples="auto"``: 4 beat 1 in a probe-only check on 8 examples per
class (``bench/label_examples_probe.py``); with it lorafit's few-shot SST-2 accuracy went from 61.72% to
66.72% (mean of 5 seeds, SetFit 65.09%), BANKING77's from 83.76% to 84.71% (``bench/few_shot.py``)."""


def resolve_label_examples(value: int | str, task: str, pairs: bool, classes: list[str], smallest_class: int) -> int:
    """The count ``value`` stands for: an integer as given; ``"auto"``: ``AUTO_LABEL_EXAMPLES`` when the task is
    single-label, the inputs are single texts, every class name holds a letter (``"0"``/``"1"`` say nothing)
    and the smallest class of the training data has fewer than ``AUTO_VALIDATION_MIN_ROWS`` rows (few-shot
    data, where ``validation_fraction="auto"`` holds nothing out), else 0. A count > 0 with pairs is refused.

    Example:
        >>> resolve_label_examples("auto", SINGLE_LABEL, False, ["negative", "positive"], smallest_class=8)
        4
        >>> resolve_label_examples("auto", SINGLE_LABEL, False, ["0", "1"], smallest_class=8)
        0
    """
    if value != "auto":
        _check(not (value and pairs), f"label_examples={value} adds single texts made from the label names, but "
                                      "the training data are (text, text_pair) pairs; pass --label-examples 0 "
                                      "(or auto, which adds none for pairs)")
        return int(value)
    words = all(any(ch.isalpha() for ch in name) for name in classes)
    few_shot = smallest_class < AUTO_VALIDATION_MIN_ROWS
    return AUTO_LABEL_EXAMPLES if task == SINGLE_LABEL and not pairs and words and few_shot else 0


def parse_eval_every(value: int | str, name: str = "eval_every", minimum: int = 1) -> int | str:
    """Return ``'epoch'`` or a step count >= ``minimum`` from a flag value such as ``'epoch'`` or ``'200'``."""
    if isinstance(value, str) and value.strip().lower() == "epoch":
        return "epoch"
    try:
        steps = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be 'epoch' or a number of steps, got {value!r}") from None
    _check(steps >= minimum, f"{name} must be 'epoch' or a number of steps >= {minimum}, got {value!r}")
    return steps


def parse_layers(value: list[int] | str | None) -> list[int] | str | None:
    """``"auto"``, ``None`` (all blocks) or a sorted list of block indices, from a flag such as ``"4,5"``."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "all"):
        return None
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, str):
        try:
            value = [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"layers_to_transform must be 'auto', 'all' or block indices such as 4,5; "
                              f"got {value!r}") from None
    _check(isinstance(value, (list, tuple)) and bool(value) and all(isinstance(i, int) and i >= 0 for i in value),
           f"layers_to_transform must be 'auto', 'all' or non-negative block indices, got {value!r}")
    return sorted(set(value))


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass."""
    return asdict(config)


def from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Build ``cls`` from a dict, ignoring keys this version does not know (newer minor versions)."""
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known})
