"""lorafit.config: validation in __post_init__, eval_every parsing, dict round trips."""
from __future__ import annotations

import pytest

from lorafit.config import DataConfig, LoraSettings, TrainConfig, from_dict, parse_eval_every, to_dict
from lorafit.errors import ConfigError


@pytest.mark.parametrize("cls,kwargs,field", [
    (LoraSettings, {"r": 0}, "r"),
    (LoraSettings, {"r": 2.5}, "r"),
    (LoraSettings, {"lora_alpha": 0}, "lora_alpha"),
    (LoraSettings, {"lora_dropout": 1.5}, "lora_dropout"),
    (LoraSettings, {"lora_dropout": -0.1}, "lora_dropout"),
    (LoraSettings, {"bias": "some"}, "bias"),
    (LoraSettings, {"target_modules": [" ", ""]}, "target_modules"),
    (LoraSettings, {"layers_to_transform": [-1]}, "layers_to_transform"),
    (LoraSettings, {"layers_to_transform": []}, "layers_to_transform"),
    (TrainConfig, {"metric": "f2"}, "metric"),
    (TrainConfig, {"eval_every": "often"}, "eval_every"),
    (TrainConfig, {"eval_every": 0}, "eval_every"),
    (TrainConfig, {"eval_every": "-5"}, "eval_every"),
    (TrainConfig, {"pooling": "max"}, "pooling"),
    (TrainConfig, {"precision": "fp8"}, "precision"),
    (TrainConfig, {"epochs": 0}, "epochs"),
    (TrainConfig, {"epochs": "often"}, "epochs"),
    (TrainConfig, {"epochs": 1.5}, "epochs"),
    (TrainConfig, {"batch_size": 0}, "batch_size"),
    (TrainConfig, {"eval_batch_size": -1}, "eval_batch_size"),
    (TrainConfig, {"max_length": 2}, "max_length"),
    (TrainConfig, {"predict_max_length": "whole"}, "predict_max_length"),
    (TrainConfig, {"pad_to_multiple_of": 0}, "pad_to_multiple_of"),
    (TrainConfig, {"pad_to_multiple_of": "eight"}, "pad_to_multiple_of"),
    (TrainConfig, {"wise_alpha": 1.5}, "wise_alpha"),
    (TrainConfig, {"wise_alpha": "auto"}, "wise_alpha"),
    (TrainConfig, {"wise_alpha": 0.5, "probe_init": False}, "wise_alpha"),
    (TrainConfig, {"ema_decay": 1.0}, "ema_decay"),
    (TrainConfig, {"ema_decay": -0.5}, "ema_decay"),
    (TrainConfig, {"ema_decay": "often"}, "ema_decay"),
    (TrainConfig, {"learning_rate": 0.0}, "learning_rate"),
    (TrainConfig, {"weight_decay": -0.1}, "weight_decay"),
    (TrainConfig, {"warmup_ratio": 1.0}, "warmup_ratio"),
    (TrainConfig, {"patience": -1}, "patience"),
    (TrainConfig, {"min_steps": -1}, "min_steps"),
    (TrainConfig, {"model": ""}, "model"),
    (DataConfig, {"validation_fraction": -0.1}, "validation_fraction"),
    (DataConfig, {"validation_fraction": "half"}, "validation_fraction"),
    (DataConfig, {"validation_fraction": 1.0}, "validation_fraction"),
    (DataConfig, {"empty_texts": "keep"}, "empty_texts"),
    (DataConfig, {"text_column": ""}, "text_column"),
])
def test_bad_values_raise_config_error_naming_the_field(cls: type, kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        cls(**kwargs)
    assert field in str(info.value)


def test_config_error_shows_the_value_received() -> None:
    with pytest.raises(ConfigError, match="'f2'"):
        TrainConfig(metric="f2")
    with pytest.raises(ConfigError, match="fp8") as info:
        TrainConfig(precision="fp8")
    assert "auto" in str(info.value) and "bf16" in str(info.value)  # and the choices


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        LoraSettings(r=0)


@pytest.mark.parametrize("value,expected", [("epoch", "epoch"), ("EPOCH ", "epoch"), ("200", 200), (200, 200),
                                            (1, 1)])
def test_eval_every_parsed(value: object, expected: object) -> None:
    assert parse_eval_every(value) == expected
    assert TrainConfig(eval_every=value).eval_every == expected


def test_defaults_are_valid() -> None:
    cfg = TrainConfig()
    assert cfg.model == "minilm" and cfg.eval_every == "epoch" and cfg.pooling == "mean"
    assert LoraSettings().target_modules is None
    assert DataConfig().validation_fraction == "auto"


def test_validation_fraction_auto_depends_on_the_smallest_class() -> None:
    from lorafit.config import AUTO_VALIDATION_MIN_ROWS, resolve_validation_fraction

    assert resolve_validation_fraction("auto", AUTO_VALIDATION_MIN_ROWS) == 0.1
    assert resolve_validation_fraction("auto", AUTO_VALIDATION_MIN_ROWS - 1) == 0.0
    assert resolve_validation_fraction(0.25, 1) == 0.25
    assert DataConfig(validation_fraction="0").validation_fraction == 0.0
    assert DataConfig(validation_fraction=" AUTO ").validation_fraction == "auto"


def test_target_modules_are_stripped() -> None:
    assert LoraSettings(target_modules=[" query", "value ", ""]).target_modules == ["query", "value"]


def test_dict_round_trip_ignores_unknown_keys() -> None:
    cfg = TrainConfig(epochs=5, eval_every="20", metric="macro_f1")
    values = {**to_dict(cfg), "a_future_setting": 1}
    again = from_dict(TrainConfig, values)
    assert again == cfg and again.eval_every == 20


def test_wise_alpha_reads_flag_strings() -> None:
    assert TrainConfig(wise_alpha="0.25").wise_alpha == 0.25 and TrainConfig().wise_alpha == 1.0
    assert TrainConfig(probe_init=False, wise_alpha="1").wise_alpha == 1.0  # 1 moves nothing: no probe needed


def test_ema_decay_reads_flag_strings() -> None:
    assert TrainConfig(ema_decay="0.999").ema_decay == 0.999 and TrainConfig(ema_decay="0").ema_decay == 0.0
    assert TrainConfig(ema_decay=" Auto ").ema_decay == "auto" and TrainConfig().ema_decay == 0.0


def test_pad_to_multiple_of_reads_flag_strings() -> None:
    assert TrainConfig(pad_to_multiple_of="8").pad_to_multiple_of == 8
    assert TrainConfig(pad_to_multiple_of=" AUTO ").pad_to_multiple_of == "auto"


def test_epochs_read_flag_strings() -> None:
    assert TrainConfig().epochs == "auto" and TrainConfig(epochs=" AUTO ").epochs == "auto"
    assert TrainConfig(epochs="3").epochs == 3 and TrainConfig(epochs=1).epochs == 1
