"""Safe loading: weights from safetensors only, no remote code unless asked, clear errors for damaged runs."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from lorafit import Classifier, ModelError, RunDirError
from lorafit.models import load_encoder

ADAPTER = "adapter_model.safetensors"


class _Trap:
    """Unpickling this writes a marker file: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pickle was loaded"))


def _plant_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(_Trap(marker)))


# --------------------------------------------------------------------------------- run directories
def test_a_pickled_adapter_beside_the_safetensors_is_never_loaded(run_copy: Path, run_dir: Path,
                                                                 tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    _plant_pickle(run_copy / "adapter_model.bin", marker)
    clf = Classifier.load(run_copy)
    assert not marker.exists()
    assert clf.predict(["pizza and bread"]) == Classifier.load(run_dir).predict(["pizza and bread"])


def test_a_pickled_adapter_alone_is_refused_unread(run_copy: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    (run_copy / ADAPTER).unlink()
    _plant_pickle(run_copy / "adapter_model.bin", marker)
    with pytest.raises(RunDirError, match=f"missing {ADAPTER}"):
        Classifier.load(run_copy)
    assert not marker.exists()


def test_truncated_adapter_weights_name_the_file(run_copy: Path) -> None:
    path = run_copy / ADAPTER
    path.write_bytes(path.read_bytes()[: path.stat().st_size - 100])
    with pytest.raises(RunDirError, match=rf"{ADAPTER} is truncated or damaged"):
        Classifier.load(run_copy)


def test_garbage_adapter_weights_name_the_file(run_copy: Path) -> None:
    (run_copy / ADAPTER).write_bytes(b"\x00" * 3)
    with pytest.raises(RunDirError, match=rf"{ADAPTER} is truncated or damaged"):
        Classifier.load(run_copy)


def _rewrite_weights(run: Path, change) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(run / ADAPTER))
    change(tensors)
    save_file(tensors, str(run / ADAPTER))


def test_wrong_tensor_shape_names_the_file_and_the_tensor(run_copy: Path) -> None:
    def shrink(tensors: dict) -> None:
        name = next(k for k in tensors if "lora_A" in k)
        tensors[name] = torch.zeros(3, 3)

    _rewrite_weights(run_copy, shrink)
    with pytest.raises(RunDirError, match=rf"{ADAPTER} does not fit the adapter .*size mismatch.*lora_A"):
        Classifier.load(run_copy)


def test_missing_lora_tensor_names_the_file(run_copy: Path) -> None:
    _rewrite_weights(run_copy, lambda tensors: tensors.pop(next(k for k in tensors if "lora_B" in k)))
    with pytest.raises(RunDirError, match=rf"{ADAPTER} lacks 1 tensor\(s\).*lora_B"):
        Classifier.load(run_copy)


def test_labels_not_matching_the_head(run_copy: Path) -> None:
    manifest = json.loads((run_copy / "lorafit.json").read_text())
    manifest["labels"] = manifest["labels"] + ["extra"]
    (run_copy / "lorafit.json").write_text(json.dumps(manifest))
    with pytest.raises(RunDirError, match=r"head for 3 labels, but .*lorafit.json lists 4"):
        Classifier.load(run_copy)


def test_damaged_adapter_config_names_the_file(run_copy: Path) -> None:
    (run_copy / "adapter_config.json").write_text('{"r": 8,')
    with pytest.raises(RunDirError, match="adapter_config.json is not valid JSON"):
        Classifier.load(run_copy)


def test_damaged_tokenizer_names_the_files(run_copy: Path) -> None:
    path = run_copy / "tokenizer.json"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(RunDirError, match=r"tokenizer files in .*tokenizer.json.*cannot be read"):
        Classifier.load(run_copy)


# -------------------------------------------------------------------------------------- base models
def test_a_base_model_with_only_pickled_weights_is_refused_unread(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "pickled"))
    (model / "model.safetensors").unlink()
    marker = tmp_path / "marker"
    _plant_pickle(model / "pytorch_model.bin", marker)
    with pytest.raises(ModelError, match=r"only as pytorch_model.bin \(Python pickle.*safetensors only"):
        load_encoder(str(model))
    assert not marker.exists()


def _model_with_code(tiny_model_dir: Path, tmp_path: Path, model_type: str = "bert") -> tuple[Path, Path]:
    """A copy of the tiny model whose config asks for its own modelling code, which leaves a marker if run."""
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "custom"))
    marker = tmp_path / "code_ran"
    (model / "modeling_custom.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import BertModel\n\nclass CustomModel(BertModel):\n    pass\n")
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_custom.CustomModel"}
    config["model_type"] = model_type
    (model / "config.json").write_text(json.dumps(config))
    return model, marker


def test_remote_code_is_not_run_without_the_flag(tiny_model_dir: Path, tmp_path: Path) -> None:
    model, marker = _model_with_code(tiny_model_dir, tmp_path)
    encoder, _ = load_encoder(str(model))  # a known architecture: transformers' own class, the code ignored
    assert not marker.exists() and type(encoder).__name__ == "BertModel"


def test_a_model_that_only_loads_with_its_code_asks_for_the_flag(tiny_model_dir: Path, tmp_path: Path) -> None:
    model, marker = _model_with_code(tiny_model_dir, tmp_path, model_type="lorafit_custom_bert")
    with pytest.raises(ModelError, match="needs its own Python code.*--trust-remote-code"):
        load_encoder(str(model))
    assert not marker.exists()


def test_remote_code_runs_with_the_flag(tiny_model_dir: Path, tmp_path: Path) -> None:
    model, marker = _model_with_code(tiny_model_dir, tmp_path)
    encoder, _ = load_encoder(str(model), trust_remote_code=True)
    assert marker.exists() and type(encoder).__name__ == "CustomModel"


def test_train_and_predict_have_the_trust_remote_code_flag() -> None:
    from typer.testing import CliRunner

    from lorafit.cli import app

    for command in ("train", "evaluate", "predict"):
        result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert "--trust-remote-code" in result.output, command
