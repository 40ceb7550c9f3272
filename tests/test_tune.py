"""``lorafit tune``: the search space, a short study through the CLI, pruning, shared and continued studies,
and the errors bad input gets (before any directory is made)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from helpers import make_texts, run_main, write_labeled, write_table
from lorafit import Classifier
from lorafit.cli import app
from lorafit.config import SearchParam, TuneConfig
from lorafit.errors import ConfigError
from lorafit.tune import DEFAULT_SPACE, read_search_space, search_space, tune

runner = CliRunner()
QUICK = ["--min-steps", "0", "--batch-size", "16", "--precision", "fp32", "--no-progress"]


@pytest.fixture(scope="module")
def tune_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Training, validation (a fifth of its labels wrong, so trials can differ) and test files."""
    root = tmp_path_factory.mktemp("tune")
    texts, labels = make_texts(10, seed=8)
    names = sorted(set(labels))
    labels = [names[(names.index(y) + 1) % 3] if i % 5 == 0 else y for i, y in enumerate(labels)]
    return {"train": write_labeled(root / "train.csv", n_per_class=20, seed=7),
            "validation": write_table(root / "validation.csv", {"text": texts, "label": labels}),
            "test": write_labeled(root / "test.csv", n_per_class=5, seed=9)}


def _args(data: dict[str, Path], out: Path, model: str, *extra: str, validation: bool = True) -> list[str]:
    return ["tune", str(data["train"]), "--out", str(out), "--model", model, *QUICK, *extra,
            *(["--validation", str(data["validation"])] if validation else [])]


def _first_best(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The first trial with the best value (the one ``OUT/best`` holds; Optuna's best_trial may be any of equals)."""
    return next(t for t in study.trials if t.value == study.best_value)


def _main(capsys: pytest.CaptureFixture, args: list[str]) -> tuple[int, str]:
    """Run ``main(args)``; return (exit code, stderr with its line breaks and runs of spaces as single spaces)."""
    code, err = run_main(capsys, args)
    return code, " ".join(err.split())


# ------------------------------------------------------------------------------------- search space
def test_search_space_defaults_file_ranges_and_pins(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("learning_rate: {low: 1e-3, high: 1e-2, log: true}\nr: {choices: [2, 4]}\n"
                    "target_modules: {choices: [all, 'query,value']}\nlora_dropout: 0.05\n", encoding="utf-8")
    space = {p.name: p for p in search_space(read_search_space(path), {"r": 8, "epochs": None})}
    assert set(space) == set(DEFAULT_SPACE) | {"target_modules"}
    assert space["learning_rate"].describe() == "0.001 .. 0.01 (log scale)" and space["learning_rate"].searched
    assert space["r"].describe() == "fixed 8" and not space["r"].searched  # a flag pins over the file
    assert space["lora_dropout"].describe() == "fixed 0.05"
    assert space["epochs"].describe() == "1 .. 4" and space["target_modules"].choices == ("all", "query,value")


def test_the_weight_averaging_settings_can_be_searched_from_a_file() -> None:
    space = {p.name: p for p in search_space({"ema_decay": {"choices": [0, 0.995]},
                                              "wise_alpha": {"low": 0.5, "high": 1.0}}, {})}
    assert space["ema_decay"].describe() == "one of 0, 0.995" and space["ema_decay"].searched
    assert space["wise_alpha"].describe() == "0.5 .. 1" and set(DEFAULT_SPACE) < set(space)
    assert "ema_decay" not in {p.name for p in search_space(None, {})}  # not searched unless a file says so


@pytest.mark.parametrize("entries, message", [
    ({"seed": {"low": 0, "high": 3}}, "'seed' cannot be searched"),
    ({"r": {"low": 2.5, "high": 8}}, "r takes whole numbers"),
    ({"lora_dropout": {"low": 0.0, "high": 1.5}}, "lora_dropout must be in [0, 1), got 1.5"),
    ({"learning_rate": {"low": 0, "high": 0.1, "log": True}}, "a log range needs low > 0"),
    ({"epochs": {"low": 4, "high": 2}}, "low must be a number below high"),
    ({"r": [4, 8]}, 'write {"choices": [4, 8]}'),
    ({"r": {"min": 4}}, "unknown key(s) min"),
    ({"target_modules": {"low": 1, "high": 2}}, "takes choices, not a range"),
    ({"epochs": {"choices": [1, 0]}}, "epochs must be 'auto' or an integer >= 1, got 0"),
    ({"ema_decay": {"low": 0.9, "high": 1.0}}, "ema_decay must be 'auto' or a number in [0, 1)"),
    ({"wise_alpha": {"choices": [0.5, 2]}}, "wise_alpha must be a number in [0, 1]"),
])
def test_bad_search_spaces_are_config_errors(entries: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        search_space(entries)
    assert message in str(caught.value) and "search space" in str(caught.value)


def test_bad_search_space_files(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{r: 4", encoding="utf-8")
    (tmp_path / "list.yaml").write_text("- r\n", encoding="utf-8")
    for name, message in (("bad.json", "is not valid JSON"), ("list.yaml", "must hold a mapping"),
                          ("space.toml", "must be .json, .yaml or .yml"), ("missing.json", "cannot read")):
        with pytest.raises(ConfigError, match=message):
            read_search_space(tmp_path / name)


def test_tune_config_checks() -> None:
    with pytest.raises(ConfigError, match="trials must be an integer >= 1, got 0"):
        TuneConfig(trials=0)
    with pytest.raises(ConfigError, match=r"storage scheme 'redis' is not supported \(in redis://u:\*\*\*@host\)"):
        TuneConfig(storage="redis://u:secret@host")
    assert TuneConfig(storage="postgresql://u:secret@host/db").storage.startswith("postgresql")
    with pytest.raises(ConfigError, match="needs exactly one of"):
        SearchParam("r", value=4, low=2, high=8)


# ------------------------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def cli_study(tune_data: dict[str, Path], tiny_model: str) -> tuple[Path, str]:
    """Three short trials through ``lorafit tune``, with a test file."""
    out = tune_data["train"].parent / "study"
    result = runner.invoke(app, _args(tune_data, out, tiny_model, "--trials", "3", "--seed", "1", *_same_space(out),
                                      "--test", str(tune_data["test"]), "--timeout", "3600"))
    assert result.exit_code == 0, result.output
    return out, result.output


def _same_space(out: Path) -> list[str]:
    """The search space flags of ``cli_study``: a file (epochs 1-2, r 2 or 4) and a pinned learning rate."""
    path = out.parent / "space.json"
    path.write_text(json.dumps({"epochs": {"low": 1, "high": 2}, "r": {"choices": [2, 4]}}), encoding="utf-8")
    return ["--learning-rate", "5e-3", "--search-space", str(path)]


def test_tune_keeps_the_best_run_and_writes_the_summary(cli_study: tuple[Path, str],
                                                         tune_data: dict[str, Path]) -> None:
    out, output = cli_study
    summary = json.loads((out / "study.json").read_text())
    study = optuna.load_study(study_name="lorafit", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 3 and summary["trials"] == {"complete": 3}
    best = Classifier.load(out / "best")
    assert best.metrics_["validation"]["accuracy"] == pytest.approx(study.best_value)
    assert summary["best"]["trial"] == _first_best(study).number and summary["best"]["value"] == study.best_value
    assert summary["best"]["run_dir"] == str((out / "best").resolve())
    best_trial = _first_best(study).params
    assert best.lora.r == best_trial["r"] and best.train_config.epochs == best_trial["epochs"]
    assert best.train_config.learning_rate == 5e-3  # pinned by the flag, so not a searched parameter
    assert set(best_trial) == {"r", "lora_alpha", "lora_dropout", "epochs"}
    # the kept run scores on the validation data what the study recorded for it
    assert best.evaluate(*_read(tune_data["validation"]))["accuracy"] == pytest.approx(study.best_value)
    assert summary["search_space"]["learning_rate"] == "fixed 0.005" and summary["search_space"]["r"] == "one of 2, 4"
    assert summary["tune"]["timeout"] == 3600 and summary["tune"]["trials"] == 3
    assert summary["test"]["rows"] == 15 and 0 <= summary["test"]["scores"]["accuracy"] <= 1
    with (out / "study.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["trial"] for row in rows] == ["0", "1", "2"] and {"r", "epochs", "value"} <= set(rows[0])
    assert (out / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| setting | searched over |" in (out / "study.md").read_text()
    assert "trial 2:" in output and "best: trial" in output and "test (15 rows)" in output
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def _read(path: Path) -> tuple[list[str], list[str]]:
    import pandas as pd

    frame = pd.read_csv(path)
    return list(frame["text"]), list(frame["label"])


def test_tune_refuses_an_existing_out_and_resumes_it(cli_study: tuple[Path, str], tune_data: dict[str, Path],
                                                    tiny_model: str, capsys: pytest.CaptureFixture) -> None:
    out, _ = cli_study
    code, message = _main(capsys, _args(tune_data, out, tiny_model, "--trials", "1"))
    assert code == 1 and "exists already; pass --resume to continue its study, --overwrite" in message
    code, message = _main(capsys, _args(tune_data, out, tiny_model, "--resume", "--overwrite"))
    assert code == 1 and "pass one of them" in message
    code, message = _main(capsys, _args(tune_data, out, tiny_model, "--resume", "--metric", "macro_f1"))
    assert code == 1 and "was started with metric accuracy, and this run has macro_f1" in message
    code, message = _main(capsys, _args(tune_data, out, tiny_model, "--resume", "--learning-rate", "5e-3"))
    assert code == 1 and "r one of 2, 4" in message and "r one of 4, 8, 16" in message  # another search space
    before = json.loads((out / "best" / "metrics.json").read_text())
    result = runner.invoke(app, _args(tune_data, out, tiny_model, "--trials", "1", "--resume", *_same_space(out)))
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "study.json").read_text())
    assert len(summary["rows"]) == 4 and [r["trial"] for r in summary["rows"]] == [0, 1, 2, 3]
    if summary["best"]["trial"] != 3:  # the kept run changes only when the new trial beats it
        assert json.loads((out / "best" / "metrics.json").read_text()) == before


@pytest.mark.parametrize("extra, message", [
    (["--trials", "0"], "trials must be an integer >= 1, got 0"),
    (["--storage", "foo://host/db"], "storage scheme 'foo' is not supported"),
    (["--storage", "not a url"], "is not a database URL"),
    (["--r", "0"], "search space: r must be an integer >= 1, got 0"),
    (["--storage", "postgresql://user:secret@localhost/db"], "the database driver for postgresql is not installed"),
    (["--storage", "sqlite:////no/such/directory/study.db"], "cannot open the study storage"),
])
def test_bad_input_is_refused_before_out_is_made(extra: list[str], message: str, tune_data: dict[str, Path],
                                                  tiny_model: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "study"
    code, error = _main(capsys, _args(tune_data, out, tiny_model, *extra))
    assert code == 1 and message in error and "Traceback" not in error
    assert not out.exists()


def test_tune_needs_validation_data(tune_data: dict[str, Path], tiny_model: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "study"
    code, error = _main(capsys, _args(tune_data, out, tiny_model, "--validation-fraction", "0", validation=False))
    assert code == 1 and "compares trials on validation data, and there is none" in error and not out.exists()


def test_an_unwritable_out_is_a_clear_error(tune_data: dict[str, Path], tiny_model: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, error = _main(capsys, _args(tune_data, blocker / "study", tiny_model))
    assert code == 1 and f"cannot create the output directory {blocker / 'study'}" in error


# ------------------------------------------------------------------------------ pruning and sharing
def test_pruned_trials_leave_no_run_directory(tune_data: dict[str, Path], tiny_model: str, tmp_path: Path) -> None:
    """A pruner that stops every trial at its first evaluation: the exception leaves fit cleanly."""
    base = Classifier(model=tiny_model, min_steps=0, batch_size=16, precision="fp32")
    result = tune(base, search_space(None, {"epochs": 2}), TuneConfig(trials=2), tmp_path / "study",
                  tune_data["train"], tune_data["validation"], pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    states = [t.state for t in result.study.trials]
    assert states == [optuna.trial.TrialState.PRUNED] * 2
    assert [t.last_step for t in result.study.trials] == [0, 0]  # the probe head's evaluation, before any step
    assert result.best_dir is None and result.summary["best"] is None
    assert sorted(p.name for p in (tmp_path / "study").iterdir()) == ["study.csv", "study.db", "study.json",
                                                                     "study.md", "study.png"]


def test_median_pruning_stops_a_trial_below_the_finished_ones(tune_data: dict[str, Path], tiny_model: str,
                                                              tmp_path: Path) -> None:
    """A learning rate that cannot learn (1e-7, random head) after one that does (0.05, by its 24th step): pruned
    at that evaluation."""
    storage = f"sqlite:///{tmp_path / 'median.db'}"
    queued = optuna.create_study(storage=storage, study_name="median", direction="maximize")
    for rate in (0.05, 1e-7):
        queued.enqueue_trial({"learning_rate": rate})
    space = search_space({"learning_rate": {"choices": [0.05, 1e-7]}},
                         {"epochs": 8, "r": 4, "lora_alpha": 8, "lora_dropout": 0.0})
    base = Classifier(model=tiny_model, min_steps=0, batch_size=16, precision="fp32", probe_init=False, patience=0,
                      eval_every=24)
    result = tune(base, space, TuneConfig(trials=2, storage=storage, study_name="median", pruning_startup_trials=1),
                  tmp_path / "study", tune_data["train"], tune_data["test"])
    good, bad = result.study.trials
    assert good.state == optuna.trial.TrialState.COMPLETE and bad.state == optuna.trial.TrialState.PRUNED
    assert bad.intermediate_values[24] < good.value
    assert result.summary["best"]["trial"] == 0 and result.summary["trials"] == {"complete": 1, "pruned": 1}


def test_the_sampler_is_seeded(tmp_path: Path) -> None:
    """The same --seed proposes the same settings; a continued study does not repeat its first proposals."""
    from lorafit.tune import open_study, suggest

    space = search_space()

    def first_proposal(out: Path, seed: int) -> dict:
        out.mkdir(exist_ok=True)
        study = open_study(TuneConfig(), out, "accuracy", space, seed)
        trial = study.ask()
        values = {p.name: suggest(trial, p) for p in space}
        study.tell(trial, 0.5)
        return values

    first = first_proposal(tmp_path / "a", 0)
    assert first_proposal(tmp_path / "b", 0) == first and first_proposal(tmp_path / "c", 1) != first
    assert first_proposal(tmp_path / "a", 0) != first  # the same study, continued


def test_median_pruning_is_the_default() -> None:
    from lorafit.tune import _pruner

    pruner = _pruner(TuneConfig())
    assert isinstance(pruner, optuna.pruners.MedianPruner) and pruner._n_startup_trials == 3
    assert isinstance(_pruner(TuneConfig(pruning=False)), optuna.pruners.NopPruner)


def test_a_shared_storage_continues_one_study(tune_data: dict[str, Path], tiny_model: str, tmp_path: Path) -> None:
    """Two processes (here: two calls) with one storage and study name add to the same study."""
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    machines = (("machine_a", ["--storage", storage], {}), ("machine_b", [], {"LORAFIT_STORAGE": storage}))
    for name, flag, env in machines:  # the second one gets the URL from the environment
        result = runner.invoke(app, _args(tune_data, tmp_path / name, tiny_model, "--trials", "1", "--epochs", "1",
                                          *flag, "--study-name", "shared"), env=env)
        assert result.exit_code == 0, result.output
        assert not (tmp_path / name / "study.db").exists()
    study = optuna.load_study(study_name="shared", storage=storage)
    assert [t.number for t in study.trials] == [0, 1]
    assert [t.user_attrs["out_dir"] for t in study.trials] == [str((tmp_path / n).resolve())
                                                              for n in ("machine_a", "machine_b")]
    summary = json.loads((tmp_path / "machine_b" / "study.json").read_text())
    assert len(summary["rows"]) == 2 and summary["tune"]["storage"] == storage
    assert (tmp_path / "machine_a" / "best" / "lorafit.json").is_file()
    # the second machine keeps a run only if its trial beat the first one's
    assert (tmp_path / "machine_b" / "best").is_dir() == (study.trials[1].value > study.trials[0].value)


def test_the_trial_progress_bar_names_the_trial_and_says_things_once() -> None:
    from rich.console import Console

    from lorafit.progress import TrialProgress

    console = Console(record=True, width=200)
    with TrialProgress(console, enabled=True, metric="accuracy", trials=3) as bar:
        for _ in range(2):
            bar.on_phase("load")
            bar.on_info("LoRA on encoder blocks 1")
            bar.on_phase("train")
            bar.on_train_begin(10, 100, 1000)
            bar.on_evaluate({"step": 5, "val_accuracy": 0.5})
        assert bar.progress.tasks[0].description == "trial 2/3: training"
        assert bar.progress.tasks[0].fields["val"] == "accuracy 50.00%"
    text = console.export_text()
    assert text.count("LoRA on encoder blocks 1") == 1 and "trainable parameters" not in text


def test_trial_lines() -> None:
    from optuna.distributions import IntDistribution

    from lorafit.progress import trial_line

    pruned = optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, params={"r": 8},
                                       distributions={"r": IntDistribution(4, 16)}, intermediate_values={30: 0.25})
    assert trial_line(pruned, "macro_f1").endswith(": pruned at step 30 (macro_f1 25.00%)  r=8")
    done = optuna.trial.create_trial(value=0.875, params={"r": 8}, distributions={"r": IntDistribution(4, 16)})
    assert trial_line(done, "accuracy").endswith(": accuracy 87.50%  r=8")


def test_importances_need_enough_trials_that_differ(tmp_path: Path) -> None:
    from lorafit.study_summary import importances, write_summary

    def study_of(values: list[float]) -> optuna.Study:
        def objective(trial: optuna.Trial) -> float:
            trial.suggest_int("r", 4, 6)
            trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
            return values[trial.number]

        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
        study.optimize(objective, n_trials=len(values))
        return study

    assert importances(study_of([0.5] * 6)) == {} and importances(study_of([0.1, 0.9, 0.5, 0.2])) == {}
    varied = study_of([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    weights = importances(varied)
    assert set(weights) == {"r", "learning_rate"} and sum(weights.values()) == pytest.approx(1.0)
    summary = write_summary(varied, tmp_path, {"metric": "accuracy", "search_space": {"r": "4 .. 6"}})
    assert summary["importances"] == weights and summary["best"]["trial"] == 5 and summary["best"]["run_dir"] is None
    assert "Best: trial 5, accuracy 0.6000, run not kept." in (tmp_path / "study.md").read_text()


def test_an_interrupted_study_keeps_its_finished_trials(tune_data: dict[str, Path], tiny_model: str,
                                                        tmp_path: Path) -> None:
    """Ctrl-C in the second trial: the first trial, its run in best/ and the summary stay, nothing half-written."""
    from lorafit.training import Callback

    class CtrlC(Callback):
        loads = 0

        def on_phase(self, name: str) -> None:
            if name == "load":  # each trial starts by loading the base model
                self.loads += 1

        def on_evaluate(self, record: dict) -> None:
            if self.loads == 2:
                raise KeyboardInterrupt

    base = Classifier(model=tiny_model, min_steps=0, batch_size=16, precision="fp32")
    out = tmp_path / "study"
    with pytest.raises(KeyboardInterrupt):
        tune(base, search_space(None, {"epochs": 1}), TuneConfig(trials=3), out, tune_data["train"],
             tune_data["validation"], callback=CtrlC())
    study = optuna.load_study(study_name="lorafit", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"]
    assert Classifier.load(out / "best").metrics_["validation"]["accuracy"] == pytest.approx(study.trials[0].value)
    assert json.loads((out / "study.json").read_text())["trials"] == {"complete": 1}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_the_cli_says_how_to_continue_after_ctrl_c(monkeypatch: pytest.MonkeyPatch, tune_data: dict[str, Path],
                                                   tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("lorafit.tune.tune", interrupted)
    code, error = _main(capsys, _args(tune_data, tmp_path / "study", "minilm"))
    assert code == 130 and "the same command with --resume continues it" in error


def test_regression_study_minimises_the_error(tiny_model: str, tmp_path: Path, capsys) -> None:
    """A regression study minimises its validation MSE: best/ holds the trial with the lowest, and the CLI
    prints errors as numbers, not percentages."""
    from helpers import make_regression

    texts, values = make_regression(80, seed=3)
    train = write_table(tmp_path / "train.csv", {"text": texts[:60], "label": values[:60]})
    val = write_table(tmp_path / "val.csv", {"text": texts[60:], "label": values[60:]})
    code, err = _main(capsys, ["tune", str(train), "--out", str(tmp_path / "study"), "--model", tiny_model, *QUICK,
                               "--task", "regression", "--validation", str(val), "--trials", "3", "--epochs", "1"])
    assert code == 0, err
    study = optuna.load_study(study_name="lorafit", storage=f"sqlite:///{tmp_path / 'study' / 'study.db'}")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    values_seen = [t.value for t in study.trials if t.value is not None]
    best = Classifier.load(tmp_path / "study" / "best")
    assert best.metrics_["validation"]["mse"] == pytest.approx(min(values_seen))
    summary = json.loads((tmp_path / "study" / "study.json").read_text())
    assert summary["metric"] == "mse" and summary["direction"] == "minimize"
    assert summary["best"]["value"] == pytest.approx(min(values_seen))
