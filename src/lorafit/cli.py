"""The ``lorafit`` command line: one thin command per verb over :class:`lorafit.Classifier`."""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from lorafit import distributed
from lorafit.config import REGRESSION, SINGLE_LABEL, DataConfig, LoraSettings, ServeLimits, TrainConfig, TuneConfig, \
    selection_metric
from lorafit.data import CHUNK_ROWS
from lorafit.errors import ConfigError, LorafitError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="LoRA fine-tuning of transformer encoders into fast, accurate text classifiers.")
out = Console(soft_wrap=True)
err = Console(stderr=True)
logger = logging.getLogger("lorafit")
INTERRUPTED = ("interrupted; no run directory was written (`lorafit train` continues from its last checkpoint "
               "when run again with --resume)")


def _default(cls: type, name: str):
    """A flag's default is its config field's default: one source of truth."""
    return cls.__dataclass_fields__[name].default


def _names(value: str | None) -> list[str] | None:
    """``"query, value"`` -> ``["query", "value"]``; None stays None (the config checks emptiness)."""
    return None if value is None else [v.strip() for v in value.split(",")]


# The data options `train` and `inspect` share.
TrainFile = Annotated[Path, typer.Argument(help="Labeled training data: .csv, .tsv, .jsonl or .parquet.")]
ValidationFile = Annotated[Optional[Path], typer.Option("--validation", help="Labeled validation file; default: a stratified split of TRAIN.")]
TestFile = Annotated[Optional[Path], typer.Option("--test", help="Labeled test file, only checked for texts that also occur in TRAIN (leakage).")]
ValidationOverlap = Annotated[str, typer.Option("--validation-overlap", help="Held-out rows whose text a training text already holds (itself or inside a longer one): move (to training) or keep.")]
ValidationFraction = Annotated[str, typer.Option("--validation-fraction", help="Share of each class held out when no --validation is given; 0: none (train on all rows, keep the last state); auto: 0.1 if every class has >= 20 rows, else 0.")]
TextColumn = Annotated[str, typer.Option("--text-column", help="Column holding the text.")]
LabelColumn = Annotated[str, typer.Option("--label-column", help="Column holding the label.")]
TextPairColumn = Annotated[Optional[str], typer.Option("--text-pair-column", help="Column holding the second text of tasks over two texts (NLI, paraphrase, query-document relevance); each row is encoded as the pair (text, text pair).")]
RunTextPairColumn = Annotated[Optional[str], typer.Option("--text-pair-column", help="Second-text column of a model trained on pairs (default: the one used in training).")]
Model = Annotated[str, typer.Option("--model", help="Base encoder: alias 'minilm', a local model directory or a hub id.")]
MaxLength = Annotated[str, typer.Option("--max-length", help="Longest training input in tokens (longer texts are truncated and counted); auto: the 99th percentile of the training texts' token lengths, rounded up to a multiple of 8, capped by the model.")]
PredictMaxLength = Annotated[str, typer.Option("--predict-max-length", help="Longest input in tokens when validating, evaluating and predicting; auto: the model's limit when --max-length is auto (whole texts), else --max-length.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for split, initialisation and batch order.")]
Task = Annotated[str, typer.Option("--task", help="classification (one label per text), multi-label (any number of labels per text) or regression (a number per text); the full names single_label_classification, multi_label_classification work too.")]
MultiLabelFlag = Annotated[bool, typer.Option("--multi-label", help="Shortcut for --task multi-label.")]
LabelDelimiter = Annotated[str, typer.Option("--label-delimiter", help="Multi-label: what separates labels in a label cell (a|b); a JSON list [\"a\", \"b\"] in a cell is always accepted.")]
# The training options `train` and `tune` share.
MinSteps = Annotated[int, typer.Option(help="At least this many optimisation steps (more epochs on small data); 0: exactly --epochs.")]
BatchSize = Annotated[int, typer.Option(help="Examples per optimisation step.")]
EvalEvery = Annotated[str, typer.Option(help="Evaluate every N steps, or 'epoch'.")]
Patience = Annotated[int, typer.Option(help="Evaluations without improvement before stopping; 0 = never stop early.")]
Metric = Annotated[str, typer.Option(help="Metric that picks the best checkpoint: accuracy or macro_f1; multi-label: micro_f1, macro_f1 or subset_accuracy; regression: mse, mae, pearson or spearman; auto: the first of these.")]
Precision = Annotated[str, typer.Option(help="Training precision: auto (bf16 where supported, else fp16 on a CUDA GPU, fp32 on a CPU), bf16, fp16 (CUDA only, with loss scaling) or fp32.")]
ProgressBar = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")]
TrustRemoteCode = Annotated[bool, typer.Option("--trust-remote-code", help="Run Python code shipped with the base model (only for models you trust).")]
LabelExamples = Annotated[str, typer.Option("--label-examples", help="Examples per label made from the label names with --label-template, added to the training rows only; 0: none; auto: 4 for few-shot classification (a class under 20 rows) of single texts with word labels, else 0.")]
LabelTemplate = Annotated[str, typer.Option("--label-template", help="The text of a label example: {} is replaced by the label name, _ read as a space.")]


def _task(task: str, multi_label: bool) -> str:
    """``--task`` with ``--multi-label`` applied; asking for two different tasks is a ConfigError."""
    from lorafit.config import MULTI_LABEL, TASK_ALIASES

    if multi_label and TASK_ALIASES.get(task, task) not in (MULTI_LABEL, _default(TrainConfig, "task")):
        raise ConfigError(f"--multi-label contradicts --task {task}; give one of them")
    return MULTI_LABEL if multi_label else task


# ----------------------------------------------------------------------------------------- train
@app.command()
def train(
    train_file: TrainFile,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Run directory to create.")],
    validation: ValidationFile = None,
    test: TestFile = None,
    validation_fraction: ValidationFraction = _default(DataConfig, "validation_fraction"),
    validation_overlap: ValidationOverlap = _default(DataConfig, "validation_overlap"),
    text_column: TextColumn = _default(DataConfig, "text_column"),
    label_column: LabelColumn = _default(DataConfig, "label_column"),
    text_pair_column: TextPairColumn = None,
    empty_texts: Annotated[str, typer.Option(help="Empty or whitespace-only texts: drop (counted, warned) or error.")] = _default(DataConfig, "empty_texts"),
    task: Task = "classification",
    multi_label: MultiLabelFlag = False,
    label_delimiter: LabelDelimiter = _default(DataConfig, "label_delimiter"),
    model: Model = _default(TrainConfig, "model"),
    pooling: Annotated[str, typer.Option(help="mean (suits sentence-transformer encoders) or cls.")] = _default(TrainConfig, "pooling"),
    probe_init: Annotated[bool, typer.Option("--probe-init/--no-probe-init", help="Start the head from a linear probe on frozen embeddings.")] = _default(TrainConfig, "probe_init"),
    r: Annotated[int, typer.Option(help="LoRA rank.")] = _default(LoraSettings, "r"),
    lora_alpha: Annotated[float, typer.Option(help="LoRA scaling numerator (update x lora_alpha / r).")] = _default(LoraSettings, "lora_alpha"),
    lora_dropout: Annotated[float, typer.Option(help="Dropout on the LoRA branch.")] = _default(LoraSettings, "lora_dropout"),
    bias: Annotated[str, typer.Option(help="Biases to train: none, all or lora_only.")] = _default(LoraSettings, "bias"),
    target_modules: Annotated[Optional[str], typer.Option(help="Comma-separated module names for LoRA; default: every linear layer of the encoder blocks.")] = None,
    layers_to_transform: Annotated[str, typer.Option(help="Encoder blocks that get LoRA: 'auto' (by training rows: the top third under 5,000, the top sixth from 5,000, every block from 30,000; frozen blocks below are cached), 'all', or indices like 4,5.")] = _default(LoraSettings, "layers_to_transform"),
    use_rslora: Annotated[bool, typer.Option(help="Rank-stabilised LoRA scaling.")] = _default(LoraSettings, "use_rslora"),
    use_dora: Annotated[bool, typer.Option(help="DoRA (weight-decomposed LoRA).")] = _default(LoraSettings, "use_dora"),
    epochs: Annotated[str, typer.Option(help="Passes over the training data; auto: 2, or 1 from 30,000 training rows on (with LoRA on every block there: see --layers-to-transform).")] = _default(TrainConfig, "epochs"),
    min_steps: MinSteps = _default(TrainConfig, "min_steps"),
    batch_size: BatchSize = _default(TrainConfig, "batch_size"),
    learning_rate: Annotated[float, typer.Option(help="Peak AdamW learning rate (warm-up, then linear decay).")] = _default(TrainConfig, "learning_rate"),
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = _default(TrainConfig, "weight_decay"),
    warmup_ratio: Annotated[float, typer.Option(help="Share of steps spent warming up.")] = _default(TrainConfig, "warmup_ratio"),
    max_length: MaxLength = _default(TrainConfig, "max_length"),
    predict_max_length: PredictMaxLength = _default(TrainConfig, "predict_max_length"),
    seed: Seed = _default(TrainConfig, "seed"),
    eval_every: EvalEvery = _default(TrainConfig, "eval_every"),
    patience: Patience = _default(TrainConfig, "patience"),
    metric: Metric = _default(TrainConfig, "metric"),
    precision: Precision = _default(TrainConfig, "precision"),
    length_bucketing: Annotated[bool, typer.Option("--length-bucketing/--no-length-bucketing", help="Batch texts of similar length together (less padding).")] = _default(TrainConfig, "length_bucketing"),
    ema_decay: Annotated[str, typer.Option(help="Keep an exponential moving average of the trained weights (decay per step); evaluations, the kept checkpoint and the saved adapter are the average's. 0: off, the weights as trained (the default); auto: a time constant of a third of the steps, at most 200.")] = str(_default(TrainConfig, "ema_decay")),
    wise_alpha: Annotated[str, typer.Option(help="After training, move the weights back towards the probe start: alpha x trained + (1 - alpha) x start (WiSE-FT; LoRA's update is scaled by alpha). 1: as trained (the default); needs --probe-init below 1.")] = str(_default(TrainConfig, "wise_alpha")),
    pad_to_multiple_of: Annotated[str, typer.Option(help="Pad each batch to a multiple of N tokens; auto: 8 for bf16/fp16 and on GPUs, 1 (exact lengths) for fp32 on a CPU.")] = str(_default(TrainConfig, "pad_to_multiple_of")),
    cache_frozen: Annotated[bool, typer.Option("--cache-frozen/--no-cache-frozen", help="Compute the frozen blocks below LoRA once and reuse their output.")] = _default(TrainConfig, "cache_frozen"),
    fast_dropout: Annotated[bool, typer.Option("--fast-dropout/--no-fast-dropout", help="Cheap dropout masks on CPUs (one seed per call, expanded by numpy); off: torch's dropout.")] = _default(TrainConfig, "fast_dropout"),
    class_weights: Annotated[str, typer.Option(help="auto: weight classes by inverse frequency (imbalanced data); none: every row counts the same.")] = _default(TrainConfig, "class_weights"),
    calibrate: Annotated[bool, typer.Option("--calibrate/--no-calibrate", help="Fit a softmax temperature on the validation data after training.")] = _default(TrainConfig, "calibrate"),
    abstain: Annotated[bool, typer.Option("--abstain", help="Answer --unknown-label below a confidence threshold chosen on validation for --target-precision.")] = _default(TrainConfig, "abstain"),
    target_precision: Annotated[float, typer.Option(help="With --abstain: accuracy wanted on the validation rows that get an answer.")] = _default(TrainConfig, "target_precision"),
    threshold: Annotated[Optional[float], typer.Option(help="A fixed abstention threshold on the top probability (implies --abstain).")] = None,
    unknown_label: Annotated[str, typer.Option(help="Label returned when the classifier abstains.")] = _default(TrainConfig, "unknown_label"),
    label_examples: LabelExamples = str(_default(TrainConfig, "label_examples")),
    label_template: LabelTemplate = _default(TrainConfig, "label_template"),
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory (and delete checkpoints of an interrupted run).")] = False,
    progress: ProgressBar = True,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint in OUT.partial (same command otherwise).")] = False,
    checkpoint_every: Annotated[str, typer.Option(help="Write a checkpoint to OUT.partial every N steps, or 'epoch'; 0: none.")] = str(_default(TrainConfig, "checkpoint_every")),
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Fine-tune a LoRA classifier on TRAIN and write a run directory.

    Under `torchrun` or `accelerate launch` the processes train together (see README, "Scaling out").
    """
    from lorafit import Classifier
    from lorafit.checkpoint import check_fresh_start, checkpoint_dir
    from lorafit.progress import RichCallback, summary_table

    clf = Classifier(
        TrainConfig(task=_task(task, multi_label), model=model, pooling=pooling, probe_init=probe_init, epochs=epochs, min_steps=min_steps, batch_size=batch_size,
                    learning_rate=learning_rate, weight_decay=weight_decay, warmup_ratio=warmup_ratio,
                    max_length=max_length, predict_max_length=predict_max_length, seed=seed, eval_every=eval_every, patience=patience, metric=metric,
                    precision=precision, length_bucketing=length_bucketing, pad_to_multiple_of=pad_to_multiple_of, wise_alpha=wise_alpha, ema_decay=ema_decay,
                    cache_frozen=cache_frozen,
                    fast_dropout=fast_dropout,
                    class_weights=class_weights, calibrate=calibrate, abstain=abstain,
                    target_precision=target_precision, threshold=threshold, unknown_label=unknown_label,
                    checkpoint_every=checkpoint_every, trust_remote_code=trust_remote_code,
                    label_examples=label_examples, label_template=label_template),
        LoraSettings(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, bias=bias,
                     target_modules=_names(target_modules),
                     layers_to_transform=layers_to_transform,
                     use_rslora=use_rslora, use_dora=use_dora),
        DataConfig(text_column=text_column, label_column=label_column, validation_fraction=validation_fraction,
                   validation_overlap=validation_overlap, empty_texts=empty_texts, text_pair_column=text_pair_column,
                   label_delimiter=label_delimiter))
    Classifier.check_output(out_dir, overwrite)
    main = distributed.is_main()
    checkpoints = check_fresh_start(checkpoint_dir(out_dir), resume, overwrite, remove=main)
    distributed.barrier()  # rank 0 has removed old checkpoints (--overwrite) before anyone looks for them
    with RichCallback(err, enabled=progress, metric=selection_metric(clf.train_config)) as callback:
        clf.fit_files(train_file, validation, callback=callback, test_path=test, checkpoint_dir=checkpoints,
                      resume=resume)
    clf.save(out_dir, overwrite=overwrite)  # rank 0 writes; the others wait for it
    if not main:
        return
    out.print(summary_table(clf))
    out.print(f"run directory: [bold]{out_dir}[/bold] (report: {out_dir / 'report.html'})")


# ------------------------------------------------------------------------------------------ tune
@app.command()
def tune(
    train_file: TrainFile,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory to create: best/ (the best run directory), study.json, study.csv, study.md, study.png and, without --storage, the study (study.db).")],
    trials: Annotated[int, typer.Option(help="Trials this process runs (every machine sharing a study runs this many).")] = _default(TuneConfig, "trials"),
    timeout: Annotated[Optional[float], typer.Option(help="Start no new trial after this many seconds (the running one finishes).")] = None,
    study_name: Annotated[str, typer.Option(help="Name of the study: the same --storage and --study-name continue or share one study.")] = _default(TuneConfig, "study_name"),
    storage: Annotated[Optional[str], typer.Option(envvar="LORAFIT_STORAGE", show_envvar=True, help="Optuna RDB URL of the study: sqlite:///PATH/study.db (a shared disk), postgresql://USER:PASSWORD@HOST/DB or mysql://...; default: OUT/study.db.")] = None,
    search_space: Annotated[Optional[Path], typer.Option("--search-space", help="A .json or .yaml file of ranges or choices per setting (see the README); replaces the default ranges it names.")] = None,
    pruning: Annotated[bool, typer.Option("--pruning/--no-pruning", help="Once 3 trials have finished, stop a trial whose best validation metric so far is below the median of the other trials' at the same step.")] = _default(TuneConfig, "pruning"),
    learning_rate: Annotated[Optional[float], typer.Option(help="Pin the learning rate (default: searched).")] = None,
    r: Annotated[Optional[int], typer.Option(help="Pin the LoRA rank (default: searched).")] = None,
    lora_alpha: Annotated[Optional[float], typer.Option(help="Pin lora_alpha (default: searched).")] = None,
    lora_dropout: Annotated[Optional[float], typer.Option(help="Pin the LoRA dropout (default: searched).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Pin the epochs (default: searched; --min-steps may add epochs on small data).")] = None,
    target_modules: Annotated[Optional[str], typer.Option(help="Pin the LoRA modules: comma-separated names or 'all' (the default; search them with --search-space).")] = None,
    validation: ValidationFile = None,
    test: Annotated[Optional[Path], typer.Option("--test", help="Labeled test file: checked for leakage, and the best run is evaluated on it at the end (only the best).")] = None,
    validation_fraction: ValidationFraction = _default(DataConfig, "validation_fraction"),
    validation_overlap: ValidationOverlap = _default(DataConfig, "validation_overlap"),
    text_column: TextColumn = _default(DataConfig, "text_column"),
    label_column: LabelColumn = _default(DataConfig, "label_column"),
    text_pair_column: TextPairColumn = None,
    task: Task = "classification",
    multi_label: MultiLabelFlag = False,
    label_delimiter: LabelDelimiter = _default(DataConfig, "label_delimiter"),
    model: Model = _default(TrainConfig, "model"),
    max_length: MaxLength = _default(TrainConfig, "max_length"),
    predict_max_length: PredictMaxLength = _default(TrainConfig, "predict_max_length"),
    seed: Seed = _default(TrainConfig, "seed"),
    min_steps: MinSteps = _default(TrainConfig, "min_steps"),
    batch_size: BatchSize = _default(TrainConfig, "batch_size"),
    eval_every: EvalEvery = _default(TrainConfig, "eval_every"),
    patience: Patience = _default(TrainConfig, "patience"),
    metric: Metric = _default(TrainConfig, "metric"),
    precision: Precision = _default(TrainConfig, "precision"),
    label_examples: LabelExamples = str(_default(TrainConfig, "label_examples")),
    label_template: LabelTemplate = _default(TrainConfig, "label_template"),
    progress: ProgressBar = True,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the study of an existing OUT (its best/ stays unless a trial beats it).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing OUT of `lorafit tune` and start a new study there.")] = False,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Search learning rate, LoRA rank, alpha, dropout and epochs with Optuna; keep the best run directory."""
    import optuna

    from lorafit import Classifier
    from lorafit.progress import TrialProgress, trial_line
    from lorafit.tune import read_search_space, search_space as build_space, tune as run_study

    if not logger.isEnabledFor(logging.DEBUG):  # the CLI prints each trial itself; optuna's log repeats it
        optuna.logging.set_verbosity(optuna.logging.ERROR)
    config = TuneConfig(trials=trials, timeout=timeout, study_name=study_name, storage=storage, pruning=pruning)
    pins = {"learning_rate": learning_rate, "r": r, "lora_alpha": lora_alpha, "lora_dropout": lora_dropout,
            "epochs": epochs, "target_modules": target_modules}
    space = build_space(read_search_space(search_space) if search_space else None, pins)
    base = Classifier(TrainConfig(model=model, max_length=max_length, predict_max_length=predict_max_length,
                                  seed=seed, min_steps=min_steps,
                                  batch_size=batch_size, eval_every=eval_every, patience=patience, metric=metric,
                                  precision=precision, trust_remote_code=trust_remote_code,
                                  task=_task(task, multi_label), label_examples=label_examples,
                                  label_template=label_template),
                      data=DataConfig(text_column=text_column, label_column=label_column,
                                      validation_fraction=validation_fraction,
                                      validation_overlap=validation_overlap, text_pair_column=text_pair_column,
                                      label_delimiter=label_delimiter))
    metric = selection_metric(base.train_config)
    try:
        with TrialProgress(err, enabled=progress, metric=metric, trials=trials) as callback:
            result = run_study(base, space, config, out_dir, train_file, validation, test, callback=callback,
                               on_trial=lambda trial: callback.console.print(trial_line(trial, metric)),
                               overwrite=overwrite, resume=resume)
    except KeyboardInterrupt:
        if logger.isEnabledFor(logging.DEBUG):
            raise
        err.print(f"interrupted; the study keeps its finished trials, {out_dir / 'best'} the best of them, and "
                  "the same command with --resume continues it")
        sys.exit(130)
    _print_study(result, metric)


def _print_study(result, metric: str) -> None:
    from lorafit.progress import study_table
    from lorafit.tasks import format_metric

    summary = result.summary
    out.print(study_table(summary))
    best = summary["best"]
    if best is None:
        err.print("[yellow]warning:[/yellow] no trial finished (all pruned or failed), so there is no best run; "
                  "run again with --resume and more --trials, or --no-pruning")
        return
    where = f"run directory [bold]{escape(best['run_dir'])}[/bold] on {escape(str(best['host']))}" \
        if best["run_dir"] else "its run directory was not kept"
    out.print(f"best: trial {best['trial']}, validation {metric} {format_metric(metric, best['value'])}, {where}")
    if summary.get("test"):
        scores = ", ".join(f"{name} {format_metric(name, value)}" for name, value in summary["test"]["scores"].items())
        out.print(f"test ({summary['test']['rows']} rows), best run: {scores}")
    out.print(f"study summary: {result.out_dir / 'study.md'}, {result.out_dir / 'study.csv'}, "
              f"{result.out_dir / 'study.png'}")


# -------------------------------------------------------------------------------------- evaluate
@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="Run directory from `lorafit train`.")],
    data: Annotated[Path, typer.Argument(help="Labeled file to evaluate on.")],
    text_column: Annotated[Optional[str], typer.Option(help="Text column (default: the one used in training).")] = None,
    label_column: Annotated[Optional[str], typer.Option(help="Label column (default: the one used in training).")] = None,
    text_pair_column: RunTextPairColumn = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    classes: Annotated[int, typer.Option(min=0, help="Rows of the per-class table (worst F1 first); --json has all.")] = 15,
    threshold: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Abstention threshold (default: the run's own, if any); 0: never abstain.")] = None,
    oos_label: Annotated[Optional[str], typer.Option(help="Label marking out-of-scope rows in DATA: report in-scope accuracy and out-of-scope recall.")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Also write the run report (plots, confusions, mistakes) for DATA to this .html file.")] = None,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Accuracy, macro-F1, per-class metrics, the confusion matrix and calibration of RUN_DIR on DATA."""
    from lorafit import Classifier
    from lorafit.data import read_labeled
    from lorafit.progress import evaluation_tables

    clf = Classifier.load(run_dir, trust_remote_code=trust_remote_code)
    labeled = read_labeled(data, text_column or clf.data_config.text_column,
                           label_column or clf.data_config.label_column, empty_texts="drop",
                           text_pair_column=_pair_column(clf, text_pair_column), task=clf.task)
    if clf.task.name != SINGLE_LABEL and (oos_label is not None or report is not None):
        raise ConfigError(f"--oos-label and --report apply to single-label runs; this run is {clf.task.name}")
    probabilities = None if clf.task.name == REGRESSION else clf.predict_proba(labeled.texts)
    result = clf.evaluate(labeled.texts, labeled.labels, threshold=threshold, oos_label=oos_label,
                          probabilities=probabilities)
    result["data"] = {"source": str(data), "rows": len(labeled), "dropped_empty": labeled.dropped_empty}
    if report is not None:
        _evaluation_report(clf, run_dir, labeled, probabilities, report)
    if as_json:
        out.print_json(json.dumps(result))
        return
    for table in evaluation_tables(result, classes):
        out.print(table)
    if result.get("unknown_labels"):
        consequence = "they count as errors" if clf.task.name == SINGLE_LABEL else "those labels are left out"
        err.print(f"[yellow]warning:[/yellow] {result['unknown_label_rows']} row(s) have labels the model never saw "
                  f"({', '.join(result['unknown_labels'][:10])}); {consequence}")


def _evaluation_report(clf, run_dir: Path, labeled, probabilities, path: Path) -> None:
    from lorafit.report import Predictions, ReportInputs, write_report
    from lorafit.rundir import read_manifest, read_metrics

    if path.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"--report must name an .html file, got {path.name}")
    predictions = Predictions.from_probabilities(labeled.texts, labeled.labels, probabilities, clf.classes_)
    inputs = ReportInputs(read_manifest(run_dir), read_metrics(run_dir), predictions,
                          f"{labeled.source}, {len(labeled)} rows", title=f"lorafit report: {run_dir.name} on {path.stem}")
    write_report(path, inputs)
    err.print(f"wrote the report to {path}")


# --------------------------------------------------------------------------------------- predict
@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="Run directory from `lorafit train`, or an export from `lorafit export` (merged or onnx).")],
    texts: Annotated[Optional[list[str]], typer.Argument(help="Texts to classify.")] = None,
    text_pairs: Annotated[Optional[list[str]], typer.Option("--text-pair", help="For a model trained on pairs: the second text of each TEXT, once per TEXT, in order.")] = None,
    input_file: Annotated[Optional[Path], typer.Option("--input", "-i", help="File of texts (.csv, .tsv, .jsonl, .parquet), read in chunks: it may be larger than memory.")] = None,
    output_file: Annotated[Optional[Path], typer.Option("--output", help="Write predictions to .csv or .jsonl (default: stdout, JSON lines).")] = None,
    text_column: Annotated[Optional[str], typer.Option(help="Text column of --input (default: the one used in training).")] = None,
    text_pair_column: RunTextPairColumn = None,
    top_k: Annotated[Optional[int], typer.Option(min=1, help="Keep only the K most probable labels in `probabilities` (default: all).")] = None,
    threshold: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Abstain (label: the run's unknown label) below this top probability; default: the run's own threshold, if any; 0: never.")] = None,
    trust_remote_code: TrustRemoteCode = False,
    chunk_rows: Annotated[int, typer.Option(min=1, help="Rows of --input read and classified at a time.")] = CHUNK_ROWS,
    precision: Annotated[str, typer.Option(help="fp32 (default: plain transformers' numbers), bf16, fp16 (CUDA GPUs only) or auto (bf16 where native, else fp16 on a GPU: faster, probabilities off by up to ~1e-2).")] = "fp32",
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar (with --output).")] = True,
) -> None:
    """Label, score and the full probability distribution for each text, in input order (multi-label runs:
    labels and per-label scores; regression runs: the value).

    Under `torchrun` or `accelerate launch` each process classifies a slice and rank 0 writes all of it.
    """
    from lorafit import Classifier
    from lorafit.data import pair_up, read_text_chunks
    from lorafit.exported import load_predictor
    from lorafit.inference import set_inference_precision
    from lorafit.predict_io import check_prediction_output, iter_predictions, prediction_records, write_predictions
    from lorafit.progress import StreamProgress

    if not texts and input_file is None:
        raise ConfigError("nothing to classify: give texts as arguments or --input FILE")
    if texts and input_file is not None:
        raise ConfigError("give texts as arguments or --input FILE, not both")
    if text_pairs and input_file is not None:
        raise ConfigError("--text-pair goes with TEXT arguments; with --input the second texts come from the file's "
                          "--text-pair-column (default: the one used in training)")
    if text_pairs is not None and len(text_pairs) != len(texts or []):
        raise ConfigError(f"got {len(texts or [])} text(s) but {len(text_pairs)} --text-pair; give one --text-pair per "
                          "TEXT, e.g. lorafit predict RUN \"a premise\" --text-pair \"a hypothesis\"")
    if output_file is not None:  # before any work, and in every process (so none waits for another's error)
        check_prediction_output(output_file)
    clf = load_predictor(run_dir, trust_remote_code=trust_remote_code)
    set_inference_precision(clf, precision)
    main = distributed.is_main()
    if distributed.launched() and isinstance(clf, Classifier):
        clf.model.to(distributed.device())  # under NCCL each process runs on its own GPU
    if texts:
        records = prediction_records(clf, pair_up(texts, text_pairs) if text_pairs else texts, top_k, threshold)
        if main:
            _print_jsonl(records)
        return
    meter = StreamProgress(err, "predicting", enabled=progress and output_file is not None and main)
    pair_column = _pair_column(clf, text_pair_column)
    chunks = read_text_chunks(input_file, text_column or clf.text_column, chunk_rows, pair_column)
    records = iter_predictions(clf, meter.track(chunks), top_k, threshold)
    if not main:  # its share is computed as the records are drawn; rank 0 writes them
        for _ in records:
            pass
    elif output_file is None:
        _print_jsonl(records)
        err.print(f"classified {meter.rows} texts ({meter.rate:,.0f} rows/s)")
    else:
        count = write_predictions(output_file, records, clf.classes_, clf.task, pairs=pair_column is not None)
        err.print(f"wrote {count} predictions to {output_file} ({meter.rate:,.0f} rows/s)")


def _pair_column(predictor, option: str | None) -> str | None:
    """The second-text column to read from a file: ``option``, else the run's own for a model on pairs."""
    if option is not None and not option.strip():
        raise ConfigError("--text-pair-column must name a column, got an empty name")
    if option is not None or not predictor.pairs_:
        return option
    if predictor.text_pair_column is None:
        raise ConfigError("this model takes text pairs and its run names no second-text column (it was trained "
                          "in Python); pass --text-pair-column")
    return predictor.text_pair_column


def _print_jsonl(records) -> None:
    for record in records:
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------------------- embed
@app.command()
def embed(
    run_dir: Annotated[Path, typer.Argument(help="Run directory from `lorafit train`.")],
    input_file: Annotated[Path, typer.Option("--input", "-i", help="File of texts (.csv, .tsv, .jsonl, .parquet), read in chunks.")],
    output_file: Annotated[Path, typer.Option("--output", help="Vectors to .npy (a float32 matrix) or .parquet (text, embedding).")],
    text_column: Annotated[Optional[str], typer.Option(help="Text column of --input (default: the one used in training).")] = None,
    text_pair_column: RunTextPairColumn = None,
    normalize: Annotated[bool, typer.Option("--normalize/--no-normalize", help="L2-normalise each vector (dot product = cosine similarity).")] = True,
    chunk_rows: Annotated[int, typer.Option(min=1, help="Rows of --input read and embedded at a time.")] = CHUNK_ROWS,
    precision: Annotated[str, typer.Option(help="fp32 (default: plain transformers' numbers), bf16 or auto (bf16 where native: faster, probabilities off by up to ~1e-2).")] = "fp32",
    progress: ProgressBar = True,
) -> None:
    """One vector per text from the fine-tuned encoder, pooled as the classifier pools, in input order."""
    from lorafit import Classifier
    from lorafit.data import read_text_chunks
    from lorafit.embed_io import check_embedding_output, write_embeddings
    from lorafit.inference import set_inference_precision
    from lorafit.progress import StreamProgress

    check_embedding_output(output_file)
    clf = Classifier.load(run_dir)
    set_inference_precision(clf, precision)
    meter = StreamProgress(err, "embedding", enabled=progress)
    chunks = read_text_chunks(input_file, text_column or clf.text_column, chunk_rows, _pair_column(clf, text_pair_column))
    rows, dim = write_embeddings(output_file, ((t, clf.embed(t, normalize=normalize)) for t in meter.track(chunks)))
    err.print(f"wrote {rows} vectors of dimension {dim} to {output_file} ({meter.rate:,.0f} rows/s)")


# ---------------------------------------------------------------------------------------- export
@app.command("export")
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="Run directory from `lorafit train`.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Export directory to create.")],
    fmt: Annotated[str, typer.Option("--format", help="merged: a transformers model directory (LoRA merged in); onnx: model.onnx for onnxruntime.")] = "merged",
    quantize: Annotated[Optional[str], typer.Option(help="int8: dynamic int8 quantization of the ONNX model (--format onnx only).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing export directory.")] = False,
) -> None:
    """Write RUN_DIR as a merged transformers model or an ONNX model (calibration folded into the head)."""
    from lorafit.export import export

    export(run_dir, out_dir, fmt, quantize, overwrite)
    kind = "merged transformers model" if fmt == "merged" else f"ONNX model ({quantize or 'fp32'})"
    out.print(f"{kind}: [bold]{out_dir}[/bold]")


# ------------------------------------------------------------------------------------------ info
@app.command()
def info(
    run_dir: Annotated[Path, typer.Argument(help="Run directory from `lorafit train`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print lorafit.json and metrics.json as one JSON object.")] = False,
) -> None:
    """What a run is: base model, labels, settings and metrics."""
    from lorafit.progress import info_table
    from lorafit.rundir import read_manifest, read_metrics

    manifest, metrics = read_manifest(run_dir), read_metrics(run_dir)
    if as_json:
        out.print_json(json.dumps({"manifest": manifest, "metrics": metrics}))
    else:
        out.print(info_table(manifest, metrics))


# ----------------------------------------------------------------------------------------- serve
@app.command()
def serve(
    run_dirs: Annotated[list[str], typer.Argument(help="Run directories to serve, as RUN_DIR (named after the directory) or NAME=RUN_DIR.")],
    host: Annotated[str, typer.Option(help="Interface to listen on; the default accepts connections from this machine only.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    api_key: Annotated[Optional[str], typer.Option(envvar="LORAFIT_API_KEY", show_envvar=True, help="Require this key on every route but /health ('Authorization: Bearer KEY' or 'X-API-Key: KEY').")] = None,
    max_texts: Annotated[int, typer.Option(help="Texts per request.")] = _default(ServeLimits, "max_texts"),
    max_chars: Annotated[int, typer.Option(help="Characters per text.")] = _default(ServeLimits, "max_chars"),
    max_body_bytes: Annotated[int, typer.Option(help="Bytes per request body.")] = _default(ServeLimits, "max_body_bytes"),
    max_batch_size: Annotated[int, typer.Option(help="Texts gathered from concurrent requests into one forward pass.")] = _default(ServeLimits, "max_batch_size"),
    max_wait_ms: Annotated[float, typer.Option(help="Milliseconds to wait for more requests to batch with.")] = _default(ServeLimits, "max_wait_ms"),
    threshold: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Abstain below this top probability for every model (default: each run's own threshold, if any; 0: never); a request's \"threshold\" overrides it.")] = None,
    precision: Annotated[str, typer.Option(help="fp32 (default: plain transformers' numbers), bf16 or auto (bf16 where native: faster, probabilities off by up to ~1e-2; shared bases are turned to bf16 once, still shared).")] = "fp32",
) -> None:
    """Serve run directories over HTTP: POST /v1/classify, GET /v1/models, a page at /, docs at /docs."""
    from lorafit.registry import load_runs, parse_spec
    from lorafit.serve import create_app, is_loopback, run_service

    limits = ServeLimits(max_texts=max_texts, max_chars=max_chars, max_body_bytes=max_body_bytes,
                         max_batch_size=max_batch_size, max_wait_ms=max_wait_ms)
    models = load_runs([parse_spec(spec) for spec in run_dirs], precision)
    if not is_loopback(host) and not api_key:
        err.print(f"[yellow]warning:[/yellow] listening on {escape(host)} without an API key: anyone who can reach "
                  "this machine can use the service (set --api-key or LORAFIT_API_KEY)")
    for model in models:
        err.print(f"serving [bold]{escape(model.name)}[/bold]: {len(model.labels)} labels on {escape(model.base_model)}, "
                  f"{model.precision}")
    err.print(f"page: http://{host}:{port}/   API docs: http://{host}:{port}/docs")
    run_service(create_app(models, limits, api_key, threshold), host, port)


# --------------------------------------------------------------------------------------- inspect
@app.command()
def inspect(
    train_file: TrainFile,
    validation: ValidationFile = None,
    test: TestFile = None,
    validation_fraction: ValidationFraction = _default(DataConfig, "validation_fraction"),
    validation_overlap: ValidationOverlap = _default(DataConfig, "validation_overlap"),
    text_column: TextColumn = _default(DataConfig, "text_column"),
    label_column: LabelColumn = _default(DataConfig, "label_column"),
    text_pair_column: TextPairColumn = None,
    task: Task = "classification",
    multi_label: MultiLabelFlag = False,
    label_delimiter: LabelDelimiter = _default(DataConfig, "label_delimiter"),
    model: Model = _default(TrainConfig, "model"),
    max_length: MaxLength = _default(TrainConfig, "max_length"),
    predict_max_length: PredictMaxLength = _default(TrainConfig, "predict_max_length"),
    seed: Seed = _default(TrainConfig, "seed"),
) -> None:
    """The data summary and warnings `lorafit train` prints first, without training."""
    from lorafit import Classifier
    from lorafit.progress import RichCallback, data_check_renderables

    clf = Classifier(TrainConfig(task=_task(task, multi_label), model=model, max_length=max_length,
                                 predict_max_length=predict_max_length, seed=seed),
                     data=DataConfig(text_column=text_column, label_column=label_column,
                                     validation_fraction=validation_fraction,
                                     validation_overlap=validation_overlap, text_pair_column=text_pair_column,
                                     label_delimiter=label_delimiter))
    # what the holdout says (rows moved back to training, or no holdout at all) comes first, as in `train`
    check = clf.inspect_files(train_file, validation, test, callback=RichCallback(out, enabled=False))
    for item in data_check_renderables(check):
        out.print(item)


# ---------------------------------------------------------------------------------------- report
@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory from `lorafit train`.")],
) -> None:
    """Rebuild RUN_DIR's report.html (and report/*.png) from its stored files, and print where it is."""
    from lorafit.report import rebuild_run_report

    path = rebuild_run_report(run_dir)
    out.print(f"report: {path} ({path.resolve().as_uri()})")


def main(argv: list[str] | None = None) -> None:
    """Entry point: errors become one line on stderr and exit code 1 (``--debug`` shows the traceback)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("LORAFIT_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s: %(message)s")
    for noisy in ("transformers", "peft", "accelerate", "datasets"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if not debug:  # the CLI prints the data checks' warnings in its own summary
        logging.getLogger("lorafit.datacheck").setLevel(logging.ERROR)
    if not debug and not distributed.is_main():  # with several processes, rank 0 speaks for all
        logging.getLogger("lorafit").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    import click

    # typer >= 0.2x vendors click: its usage errors and Abort are not click's classes.
    usage_errors = (click.exceptions.ClickException, getattr(typer, "TyperException", click.exceptions.ClickException))
    aborts = (click.exceptions.Abort, typer.Abort)
    try:
        code = app(args=args, standalone_mode=False)
    except usage_errors as exc:  # usage errors: click's own message and exit code 2
        exc.show()
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, *aborts):
        if debug:
            raise
        err.print(INTERRUPTED)
        sys.exit(130)
    except (LorafitError, OSError) as exc:
        if debug:
            raise
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except Exception as exc:
        if debug:
            raise
        err.print(f"[red]error:[/red] {type(exc).__name__}: {escape(str(exc))} (run with --debug for the traceback)",
                  highlight=False, soft_wrap=True)
        sys.exit(1)
    if code == 130:  # typer turns Ctrl-C into Exit(130) and, not standalone, returns it instead of raising
        err.print(INTERRUPTED)
        sys.exit(130)
