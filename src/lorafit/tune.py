"""Hyperparameter search with Optuna: trials train on data read once, bad trials are pruned early, and the
best run directory is kept as ``OUT/best``.

Each trial trains a :class:`Classifier` in memory with settings the sampler (seeded TPE) proposes from the
search space; its objective is the validation metric (``TrainConfig.metric``, maximised, or minimised for
an error such as ``mse``) of the checkpoint training keeps. Every evaluation during training is reported to
the trial, so the pruner (median of earlier trials at the same step) can stop it. A trial that beats every finished trial of the study is saved, atomically, to
``OUT/best``. The study lives in an Optuna RDB storage (``OUT/study.db`` by default), so a run can be
continued, and several machines can share one study through one database.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lorafit.classifier import Classifier
from lorafit.config import SEARCHABLE, TASK_METRICS, SearchParam, TuneConfig, redact_url, selection_metric, \
    setting_value, to_dict
from lorafit.data import LabeledData
from lorafit.errors import ConfigError, RunDirError
from lorafit.rundir import check_writable
from lorafit.study_summary import BEST_DIR, KEPT, STUDY_JSON, write_summary
from lorafit.tasks import LOWER_IS_BETTER
from lorafit.training import Callback

logger = logging.getLogger(__name__)

DEFAULT_SPACE: dict[str, dict] = {
    "learning_rate": {"low": 1e-4, "high": 3e-3, "log": True},
    "r": {"choices": [4, 8, 16]},
    "lora_alpha": {"choices": [8, 16, 32]},
    "lora_dropout": {"low": 0.0, "high": 0.3},
    "epochs": {"low": 1, "high": 4},
}
"""What ``lorafit tune`` searches unless a search space file or a flag says otherwise (``target_modules``
is not searched by default: its names depend on the architecture)."""
SPEC_KEYS = {"value", "low", "high", "log", "choices"}


# ------------------------------------------------------------------------------------ search space
def parse_param(name: str, spec: object) -> SearchParam:
    """A search space entry: a fixed value (``8``), or a mapping with ``low``/``high`` (and ``log``) or
    ``choices``; e.g. ``{"low": 1e-4, "high": 3e-3, "log": true}``."""
    if not isinstance(spec, dict):
        if isinstance(spec, list):
            raise ConfigError(f"search space: {name} is a list; write {{\"choices\": {json.dumps(spec)}}} to "
                              "choose among values")
        return SearchParam(name, value=_number(name, spec))
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise ConfigError(f"search space: {name} has unknown key(s) {', '.join(unknown)}; use low, high and "
                          "log for a range, choices for a list, or value for a fixed value")
    choices = spec.get("choices")
    if choices is not None and not isinstance(choices, list):
        raise ConfigError(f"search space: {name} choices must be a list, got {choices!r}")
    return SearchParam(name, value=_number(name, spec.get("value")), low=_number(name, spec.get("low")),
                       high=_number(name, spec.get("high")), log=bool(spec.get("log", False)),
                       choices=tuple(_number(name, c) for c in choices) if choices is not None else None)


def _number(name: str, value: object) -> object:
    """A float setting's value written as text, such as YAML's ``1e-4`` (YAML 1.1 reads a float without a dot
    as a string), is the number it spells; anything else is left for the checks."""
    if SEARCHABLE.get(name) is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def read_search_space(path: str | Path) -> dict[str, object]:
    """The entries of a search space file (.json, .yaml or .yml): a mapping from setting to spec."""
    path = Path(path)
    if path.suffix.lower() not in (".json", ".yaml", ".yml"):
        raise ConfigError(f"search space file {path.name} must be .json, .yaml or .yml")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the search space file {path} ({exc.strerror or exc})") from None
    entries = _parse_json(path, text) if path.suffix.lower() == ".json" else _parse_yaml(path, text)
    if not isinstance(entries, dict):
        raise ConfigError(f"search space file {path} must hold a mapping from setting to range, e.g. "
                          '{"learning_rate": {"low": 1e-4, "high": 3e-3, "log": true}, "r": {"choices": [4, 8]}}')
    return entries


def _parse_json(path: Path, text: str) -> object:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"search space file {path} is not valid JSON: {exc}") from None


def _parse_yaml(path: Path, text: str) -> object:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"search space file {path} is not valid YAML: {' '.join(str(exc).split())}") from None


def search_space(entries: dict[str, object] | None = None, pinned: dict[str, object] | None = None
                 ) -> list[SearchParam]:
    """The full search space: ``DEFAULT_SPACE``, updated by ``entries`` (a search space file's), then the
    ``pinned`` values (flags: a value that is not None fixes its setting)."""
    merged: dict[str, object] = {**DEFAULT_SPACE, **(entries or {})}
    merged.update({name: value for name, value in (pinned or {}).items() if value is not None})
    return [parse_param(name, spec) for name, spec in merged.items()]


def suggest(trial, param: SearchParam) -> object:
    """The value of ``param`` for ``trial`` (recorded by Optuna under the setting's name)."""
    if not param.searched:
        return param.values()[0]
    if param.choices is not None:
        return trial.suggest_categorical(param.name, list(param.choices))
    if SEARCHABLE[param.name] is int:
        return trial.suggest_int(param.name, param.low, param.high, log=param.log)
    return trial.suggest_float(param.name, param.low, param.high, log=param.log)


# ------------------------------------------------------------------------------------------- study
class TrialReporter:
    """Stands in for the user's training callback (every hook goes on to it) and reports each validation
    evaluation to the Optuna trial, raising ``optuna.TrialPruned`` when the pruner says stop."""

    def __init__(self, trial, metric: str, callback: Callback | None) -> None:
        self.trial, self.metric, self.callback = trial, metric, callback or Callback()

    def __getattr__(self, name: str):
        return getattr(self.callback, name)

    def on_evaluate(self, record: dict) -> None:
        import optuna

        self.callback.on_evaluate(record)
        self.trial.report(record[f"val_{self.metric}"], record["step"])
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.metric} {record[f'val_{self.metric}']:.4f} at step {record['step']}")


@dataclass
class TuneResult:
    """What :func:`tune` leaves behind."""

    study: object
    """The ``optuna.Study`` (all its trials, this process's and others')."""
    out_dir: Path
    best_dir: Path | None
    """``OUT/best`` when this process (or an earlier run into the same OUT) kept a run, else None."""
    summary: dict
    """The content of ``OUT/study.json``: settings, search space, best trial, a row per trial."""


def prepare_out(out_dir: str | Path, overwrite: bool, resume: bool) -> Path:
    """Check ``out_dir`` before any work: new, or (``resume``) an earlier ``lorafit tune`` output, or
    (``overwrite``) one to replace."""
    out = Path(out_dir)
    if overwrite and resume:
        raise ConfigError("--resume continues the study in OUT and --overwrite starts over; pass one of them")
    if out.exists() and not (overwrite or resume):
        raise RunDirError(f"{out} exists already; pass --resume to continue its study, --overwrite to start "
                          "again there, or choose another --out")
    if out.exists():
        check_writable(out, True, marker=STUDY_JSON)
    return out


def _make_out(out: Path, overwrite: bool) -> None:
    try:
        if overwrite and out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create the output directory {out} ({exc.strerror or exc}); choose a "
                          "writable --out") from None


def open_study(config: TuneConfig, out: Path, metric: str, space: list[SearchParam], seed: int, pruner=None):
    """Create or load the study (``load_if_exists``): maximise ``metric`` (minimise an error such as ``mse``),
    seeded TPE, median pruning."""
    import optuna

    storage = config.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    try:
        study = optuna.create_study(storage=storage, study_name=config.study_name, direction=direction(metric),
                                    load_if_exists=True, pruner=pruner or _pruner(config))
    except ImportError:
        raise ConfigError(f"the database driver for {storage.split(':')[0]} is not installed; install it, e.g. "
                          "pip install psycopg2-binary (PostgreSQL) or pymysql (MySQL, URL mysql+pymysql://...)"
                          ) from None
    except Exception as exc:  # sqlalchemy's errors: the database cannot be reached or opened
        raise ConfigError(f"cannot open the study storage ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                          "check --storage") from None
    _check_same(study, metric, space)
    study.sampler = optuna.samplers.TPESampler(seed=_sampler_seed(seed, len(study.trials), config.storage))
    return study


def _pruner(config: TuneConfig):
    import optuna

    if not config.pruning:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=config.pruning_startup_trials)


def _check_same(study, metric: str, space: list[SearchParam]) -> None:
    """A study compares one metric over one search space: refuse to continue it with others."""
    wanted = {"metric": metric, "search_space": {p.name: p.describe() for p in space}}
    for key, value in wanted.items():
        stored = study.user_attrs.get(key)
        if stored is None:
            study.set_user_attr(key, value)
        elif stored != value:
            raise ConfigError(f"study {study.study_name!r} was started with {key} {_words(stored)}, and this run "
                              f"has {_words(value)}; continue it with the same --metric, --search-space and pinned "
                              "settings, or start another with a new --study-name")


def _words(value: object) -> str:
    return "; ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else str(value)


def _sampler_seed(seed: int, done: int, storage: str | None) -> int:
    """``seed`` moved on by the trials the study already has (a continued study does not propose its first
    settings again); with a shared ``storage`` also by host and process, so that machines started together do
    not all try the same settings."""
    if storage is None:
        return seed + done
    return zlib.crc32(f"{seed}:{done}:{socket.gethostname()}:{os.getpid()}".encode())


def direction(metric: str) -> str:
    """Optuna's study direction for a validation metric: errors (``mse``, ``mae``) are minimised."""
    return "minimize" if metric in LOWER_IS_BETTER else "maximize"


def best_value(study) -> float | None:
    """The best value of the study's finished trials (None before the first)."""
    import optuna

    values = [t.value for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    if not values:
        return None
    return min(values) if study.direction == optuna.study.StudyDirection.MINIMIZE else max(values)


# -------------------------------------------------------------------------------------------- tune
def tune(base: Classifier, space: list[SearchParam], config: TuneConfig, out_dir: str | Path,
         train_path: str | Path, validation_path: str | Path | None = None, test_path: str | Path | None = None,
         callback: Callback | None = None, on_trial: Callable[[object], None] | None = None,
         overwrite: bool = False, resume: bool = False, pruner=None) -> TuneResult:
    """Search ``space`` for the settings of ``base`` that do best on its validation metric (maximised; an
    error such as ``mse`` minimised).

    ``config.trials`` trials run in this process; ``on_trial(frozen_trial)`` is called after each. ``OUT``
    gets ``best/`` (the best run directory), ``study.json``, ``study.csv``, ``study.md`` and ``study.png``
    (rewritten after every trial) and, without ``config.storage``, the study itself (``study.db``).

    Example:
        >>> base = Classifier(model="minilm", metric="macro_f1")                         # doctest: +SKIP
        >>> result = tune(base, search_space(), TuneConfig(trials=20), "tuned", "train.csv")  # doctest: +SKIP
        >>> Classifier.load(result.best_dir).predict(["I lost my card"])                  # doctest: +SKIP
    """
    out = prepare_out(out_dir, overwrite, resume)
    train, val, test = base._read_files(train_path, validation_path, test_path, callback)
    if val is None:
        raise ConfigError("lorafit tune compares trials on validation data, and there is none: pass "
                          "--validation FILE or --validation-fraction 0.1 ('auto' holds out nothing when a class "
                          "has fewer than 20 rows)")
    metric = selection_metric(base.train_config)
    # a database of --storage is opened before OUT is made (so an unreachable one leaves nothing behind)
    study = open_study(config, out, metric, space, base.train_config.seed, pruner) if config.storage else None
    _make_out(out, overwrite)
    study = study or open_study(config, out, metric, space, base.train_config.seed, pruner)
    storage = redact_url(config.storage) if config.storage else str(out / "study.db")
    settings = {"tune": {**to_dict(config), "storage": storage}, "metric": metric, "direction": direction(metric),
                "search_space": {p.name: p.describe() for p in space}}
    write_summary(study, out, settings)

    def objective(trial) -> float:
        return _run_trial(trial, base, space, (train, val, test), out, callback)

    def after(study, trial) -> None:
        write_summary(study, out, settings)
        if on_trial:
            on_trial(trial)

    study.optimize(objective, n_trials=config.trials, timeout=config.timeout, callbacks=[after],
                   gc_after_trial=True)
    best_dir = out / BEST_DIR if (out / BEST_DIR).is_dir() else None
    summary = write_summary(study, out, {**settings, "test": _test_scores(best_dir, test)})
    return TuneResult(study, out, best_dir, summary)


def _run_trial(trial, base: Classifier, space: list[SearchParam],
               data: tuple[LabeledData, LabeledData, LabeledData | None], out: Path, callback: Callback | None
               ) -> float:
    """Train one trial's classifier; save it to ``OUT/best`` when it beats every finished trial."""
    values = {p.name: setting_value(p.name, suggest(trial, p)) for p in space}
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("out_dir", str(out.resolve()))
    clf = Classifier(base.train_config, base.lora, base.data_config, **values)
    metric = selection_metric(clf.train_config)
    clf._fit(*data, callback=TrialReporter(trial, metric, callback))
    value = float(clf.metrics_["validation"][metric])
    best = best_value(trial.study)
    if best is None or (value < best if direction(metric) == "minimize" else value > best):
        clf.save(out / BEST_DIR, overwrite=True)
        trial.set_user_attr(KEPT, True)
        logger.info("trial %d: %s %.4f, the best so far: saved to %s", trial.number, metric, value, out / BEST_DIR)
    return value


def _test_scores(best_dir: Path | None, test: LabeledData | None) -> dict | None:
    """The kept run's headline metrics on the test data (the only time the test data is scored): accuracy and
    macro-F1; multi-label micro/macro-F1 and subset accuracy; regression MSE, MAE, Pearson and Spearman."""
    if best_dir is None or test is None:
        return None
    clf = Classifier.load(best_dir)
    result = clf.evaluate(test.texts, test.labels)
    return {"source": test.source, "rows": len(test),
            "scores": {k: result[k] for k in TASK_METRICS[clf.task.name] if k in result}}
