"""The run directory: contents, save/load round trip, atomic writes, and clear errors on bad directories."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import LABELS
from lorafit import Classifier, RunDirError
from lorafit.rundir import FORMAT_VERSION, read_manifest, write_atomically

PROBE_TEXTS = ["pizza and bread", "a song on the piano", "the team scored a goal", "", "cheese guitar goal"]


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name and path.name in p.name)


def _edit_manifest(run: Path, **changes: object) -> None:
    manifest = json.loads((run / "lorafit.json").read_text())
    manifest.update(changes)
    (run / "lorafit.json").write_text(json.dumps(manifest))


# ------------------------------------------------------------------------------------------ contents
def test_run_directory_contents(run_dir: Path) -> None:
    names = {p.name for p in run_dir.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "lorafit.json", "metrics.json", "README.md"} <= names
    assert not _siblings(run_dir)  # no temporary directory left behind


def test_manifest(run_dir: Path, tiny_model_dir: Path) -> None:
    manifest = read_manifest(run_dir)
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["labels"] == LABELS
    # max_length "auto": the synthetic texts have at most 9 tokens, so the 99th percentile rounds up to 16
    assert manifest["pooling"] == "mean" and manifest["max_length"] == 16 and manifest["max_length_auto"] is True
    assert manifest["train_config"]["max_length"] == 16
    # predictions read whole texts up to the tiny model's 128 positions (max_length was auto)
    assert manifest["predict_max_length"] == manifest["train_config"]["predict_max_length"] == 128
    assert manifest["predict_max_length_auto"] is True
    assert manifest["base_model"]["path"] == str(tiny_model_dir.resolve())
    assert len(manifest["base_model"]["hash"]) == 16
    assert manifest["calibration"]["temperature"] == 1.0
    assert set(manifest["versions"]) == {"lorafit", "torch", "transformers", "peft"}
    assert manifest["train_config"]["precision"] == "fp32" and manifest["train_precision"] == "fp32"
    assert manifest["data"]["train"]["rows"] + manifest["data"]["validation"]["rows"] == 90


def test_adapter_config_keeps_the_head(run_dir: Path) -> None:
    config = json.loads((run_dir / "adapter_config.json").read_text())
    assert config["modules_to_save"] == ["classifier"]
    assert config["task_type"] == "FEATURE_EXTRACTION"
    from safetensors.torch import load_file

    weights = load_file(run_dir / "adapter_model.safetensors")
    assert any("classifier" in k for k in weights) and any("lora_A" in k for k in weights)


def test_model_card(run_dir: Path) -> None:
    card = (run_dir / "README.md").read_text()
    assert all(f"`{label}`" in card for label in LABELS)
    assert "Classifier.load" in card and "r=8" in card


# --------------------------------------------------------------------------------------- round trip
def test_save_load_round_trip_gives_identical_probabilities(trained, run_dir: Path) -> None:
    loaded = Classifier.load(run_dir)
    assert loaded.classes_ == trained.classes_
    np.testing.assert_allclose(loaded.predict_proba(PROBE_TEXTS), trained.predict_proba(PROBE_TEXTS), atol=1e-6)
    assert loaded.predict(PROBE_TEXTS) == trained.predict(PROBE_TEXTS)
    assert loaded.train_config == trained.train_config and loaded.lora == trained.model.lora_settings
    assert loaded.metrics_["history"] == trained.metrics_["history"]


def test_loaded_classifier_saves_again(run_dir: Path, tmp_path: Path) -> None:
    again = Classifier.load(run_dir).save(tmp_path / "again")
    np.testing.assert_allclose(Classifier.load(again).predict_proba(PROBE_TEXTS),
                               Classifier.load(run_dir).predict_proba(PROBE_TEXTS), atol=1e-6)


def test_resave_keeps_train_precision(run_copy: Path, tmp_path: Path) -> None:
    _edit_manifest(run_copy, train_precision="bf16")
    again = Classifier.load(run_copy).save(tmp_path / "again")
    assert read_manifest(again)["train_precision"] == "bf16"


def test_temperature_from_the_manifest_is_used(run_copy: Path, run_dir: Path) -> None:
    manifest = json.loads((run_copy / "lorafit.json").read_text())
    _edit_manifest(run_copy, calibration={**manifest["calibration"], "temperature": 2.0})
    plain, hot = Classifier.load(run_dir), Classifier.load(run_copy)
    assert hot.temperature == 2.0
    p, q = plain.predict_proba(PROBE_TEXTS), hot.predict_proba(PROBE_TEXTS)
    np.testing.assert_array_equal(p.argmax(1), q.argmax(1))
    assert (q.max(1) < p.max(1)).all()  # softer


# ------------------------------------------------------------------------------------ atomic saving
def test_save_refuses_an_existing_directory(trained, tmp_path: Path) -> None:
    target = tmp_path / "run"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(RunDirError, match="exists already.*--overwrite"):
        trained.save(target)
    assert (target / "keep.txt").read_text() == "mine"


def test_save_with_overwrite_replaces_a_run(trained, run_dir: Path, tmp_path: Path) -> None:
    import shutil

    target = Path(shutil.copytree(run_dir, tmp_path / "run"))
    (target / "stale.txt").write_text("old")
    assert trained.save(target, overwrite=True) == target
    assert not (target / "stale.txt").exists() and (target / "lorafit.json").is_file()
    assert not _siblings(target)
    Classifier.load(target)  # a complete run directory


def test_save_with_overwrite_replaces_an_empty_directory(trained, tmp_path: Path) -> None:
    target = tmp_path / "run"
    target.mkdir()
    trained.save(target, overwrite=True)
    assert (target / "lorafit.json").is_file() and not _siblings(target)


def test_overwrite_refuses_a_directory_that_is_not_a_run(trained, tmp_path: Path) -> None:
    target = tmp_path / "my_data"
    target.mkdir()
    (target / "precious.csv").write_text("text,label\n")
    with pytest.raises(RunDirError, match="not a lorafit run directory"):
        trained.save(target, overwrite=True)
    assert (target / "precious.csv").is_file()


def test_run_directory_permissions_follow_the_umask(run_dir: Path) -> None:
    import os

    umask = os.umask(0)
    os.umask(umask)
    assert run_dir.stat().st_mode & 0o777 == 0o777 & ~umask


def test_save_refuses_a_file_in_the_way(trained, tmp_path: Path) -> None:
    target = tmp_path / "run"
    target.write_text("a file")
    with pytest.raises(RunDirError, match="not a directory"):
        trained.save(target, overwrite=True)


@pytest.mark.parametrize("existing", [False, True])
def test_failing_save_leaves_nothing_behind(trained, run_dir: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch, existing: bool) -> None:
    import shutil

    import lorafit.card

    target = tmp_path / "run"
    if existing:  # a previous run that overwrite=True would replace
        shutil.copytree(run_dir, target)
        (target / "marker.txt").write_text("previous run")
    before = sorted(p.name for p in target.iterdir()) if existing else []

    def broken_card(*args: object) -> str:  # the last step of filling the run directory
        raise OSError("disk full")

    monkeypatch.setattr(lorafit.card, "model_card", broken_card)
    with pytest.raises(OSError, match="disk full"):
        trained.save(target, overwrite=existing)
    assert list(tmp_path.iterdir()) == ([target] if existing else [])
    if existing:
        assert sorted(p.name for p in target.iterdir()) == before
        assert (target / "marker.txt").read_text() == "previous run"


def test_write_atomically_cleans_up_after_keyboard_interrupt(tmp_path: Path) -> None:
    def fill(tmp: Path) -> None:
        (tmp / "half.bin").write_bytes(b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(tmp_path / "run", fill)
    assert list(tmp_path.iterdir()) == []


def test_write_atomically_creates_parents(tmp_path: Path) -> None:
    target = write_atomically(tmp_path / "a" / "b" / "run", lambda tmp: (tmp / "f").write_text("ok"))
    assert (target / "f").read_text() == "ok"


# ---------------------------------------------------------------------------------------- bad loads
def test_load_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="not found"):
        Classifier.load(tmp_path / "nope")


def test_load_non_run_directory(tmp_path: Path) -> None:
    (tmp_path / "something.txt").write_text("hi")
    with pytest.raises(RunDirError, match="not a lorafit run directory.*lorafit.json"):
        Classifier.load(tmp_path)


def test_load_newer_format_version(run_copy: Path) -> None:
    _edit_manifest(run_copy, format_version=999)
    with pytest.raises(RunDirError) as info:
        Classifier.load(run_copy)
    assert "999" in str(info.value) and "newer" in str(info.value) and "upgrade" in str(info.value)


def test_load_without_format_version(run_copy: Path) -> None:
    manifest = json.loads((run_copy / "lorafit.json").read_text())
    del manifest["format_version"]
    (run_copy / "lorafit.json").write_text(json.dumps(manifest))
    with pytest.raises(RunDirError, match="format_version"):
        Classifier.load(run_copy)


def test_load_damaged_manifest(run_copy: Path) -> None:
    (run_copy / "lorafit.json").write_text("{not json")
    with pytest.raises(RunDirError, match="not valid JSON"):
        Classifier.load(run_copy)


def test_load_without_adapter_weights(run_copy: Path) -> None:
    (run_copy / "adapter_model.safetensors").unlink()
    with pytest.raises(RunDirError) as info:
        Classifier.load(run_copy)
    assert "incomplete" in str(info.value) and "adapter_model.safetensors" in str(info.value)


def test_load_with_another_base_model(run_copy: Path) -> None:
    manifest = json.loads((run_copy / "lorafit.json").read_text())
    _edit_manifest(run_copy, base_model={**manifest["base_model"], "hash": "0123456789abcdef"})
    with pytest.raises(RunDirError, match="weights hash"):
        Classifier.load(run_copy)


def test_a_run_written_before_predict_max_length_predicts_at_its_max_length(run_copy: Path) -> None:
    """Older run directories have no ``predict_max_length``: they keep predicting as they did (and as their
    metrics were measured), at ``max_length``."""
    long_text = " ".join(["pizza"] * 40)  # 42 tokens: past max_length 16
    now = Classifier.load(run_copy).predict_proba([long_text, PROBE_TEXTS[0]])
    manifest = json.loads((run_copy / "lorafit.json").read_text())
    for key in ("predict_max_length", "predict_max_length_auto"):
        del manifest[key]
    del manifest["train_config"]["predict_max_length"]
    (run_copy / "lorafit.json").write_text(json.dumps(manifest))
    old = Classifier.load(run_copy)
    assert old.train_config.predict_max_length == 16
    before = old.predict_proba([long_text, PROBE_TEXTS[0]])
    np.testing.assert_allclose(before[1], now[1], atol=1e-6)  # a short text: the same either way
    assert not np.allclose(before[0], now[0], atol=1e-4)  # the long one was cut at 16 tokens
    cut = old.tokenizer.decode(old.tokenizer(long_text, truncation=True, max_length=16)["input_ids"][1:-1])
    np.testing.assert_allclose(before[0], old.predict_proba([cut])[0], atol=1e-6)
