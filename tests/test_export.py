"""Exports: the merged transformers directory and the ONNX model (fp32, int8) give the run's probabilities.

The run directory's ``Classifier.predict_proba`` is the reference: the merged export loaded by plain
transformers (``AutoModelForSequenceClassification`` and ``pipeline``, custom code trusted) and the fp32
ONNX model must match it within 1e-4; the int8 model must mostly agree on the labels.
"""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lorafit import Classifier
from lorafit.cli import app
from lorafit.errors import ConfigError, RunDirError
from lorafit.export import EXPORT_MANIFEST, export_merged, export_onnx, int8_saturates
from lorafit.exported import load_predictor
from lorafit.onnx_model import OnnxClassifier, load_onnx

TEXTS = ["pizza and bread today", "we heard a new song on the piano", "the team score a goal", "cheese", "",
         "the old guitar and the ball", "song goal " * 15, "pizza " * 300]
# empty; past the run's max_length 16 but read whole (predict_max_length 128); longer than the model (cut at 128)
runner = CliRunner()


@pytest.fixture(scope="module")
def reference(run_dir: Path) -> np.ndarray:
    return Classifier.load(run_dir).predict_proba(TEXTS)


@pytest.fixture(scope="module")
def exports(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    return {"merged": export_merged(run_dir, root / "merged"), "onnx": export_onnx(run_dir, root / "onnx"),
            "int8": export_onnx(run_dir, root / "int8", quantize="int8")}


def _transformers_proba(path: Path, texts: list[str]) -> tuple[np.ndarray, dict]:
    """What a user writes: plain transformers, the export's custom code trusted."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True).eval()
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return torch.softmax(model(**batch).logits, dim=-1).numpy(), model.config.id2label


# ------------------------------------------------------------------------------------------- merged
def test_merged_export_loads_with_automodel_and_matches(exports, reference, run_dir: Path) -> None:
    probs, id2label = _transformers_proba(exports["merged"], TEXTS)
    np.testing.assert_allclose(probs, reference, atol=1e-4)
    assert [id2label[i] for i in range(len(id2label))] == Classifier.load(run_dir).classes_
    config = json.loads((exports["merged"] / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSequenceClassification"] == "modeling_lorafit.LorafitForSequenceClassification"
    assert (exports["merged"] / "modeling_lorafit.py").is_file()
    tokenizer = json.loads((exports["merged"] / "tokenizer_config.json").read_text())
    assert tokenizer["model_max_length"] == 128  # the run's prediction length, not its training max_length 16
    assert json.loads((exports["merged"] / EXPORT_MANIFEST).read_text())["max_length"] == 128


def test_merged_export_works_in_a_text_classification_pipeline(exports, reference, run_dir: Path) -> None:
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(exports["merged"]), trust_remote_code=True)
    results = classify(TEXTS, top_k=None, truncation=True)
    classes = Classifier.load(run_dir).classes_
    probs = np.array([[{r["label"]: r["score"] for r in result}[label] for label in classes] for result in results])
    np.testing.assert_allclose(probs, reference, atol=1e-4)


def test_standard_loader_refuses_the_merged_export(exports) -> None:
    """Without trust_remote_code, transformers must not fall back to a standard head (BERT's pooler)."""
    from transformers import AutoModelForSequenceClassification

    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoModelForSequenceClassification.from_pretrained(exports["merged"])


def test_merge_keeps_the_trained_head(exports, run_dir: Path) -> None:
    import torch
    from safetensors.torch import load_file

    clf = Classifier.load(run_dir)
    weights = load_file(str(exports["merged"] / "model.safetensors"))
    trained = clf.model.head.modules_to_save["default"]
    torch.testing.assert_close(weights["classifier.weight"], trained.weight.detach() / clf.temperature)
    torch.testing.assert_close(weights["classifier.bias"], trained.bias.detach() / clf.temperature)


def test_merge_folds_a_nonzero_lora_update_in(run_copy: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    """LoRA B matrices made clearly non-zero: the merged weights move, and the probabilities still match."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel

    adapter = load_file(str(run_copy / "adapter_model.safetensors"))
    generator = torch.Generator().manual_seed(0)
    adapter = {k: torch.randn(v.shape, generator=generator) * 0.5 if "lora_B" in k else v for k, v in adapter.items()}
    save_file(adapter, str(run_copy / "adapter_model.safetensors"))
    lora_probs = Classifier.load(run_copy).predict_proba(TEXTS)
    merged = export_merged(run_copy, tmp_path / "merged")
    probs, _ = _transformers_proba(merged, TEXTS)
    np.testing.assert_allclose(probs, lora_probs, atol=1e-4)
    name = next(k for k in adapter if "lora_B" in k and "query" in k).split("base_model.model.")[1]
    name = name.replace("lora_B.weight", "weight").replace("lora_B.default.weight", "weight")
    base = AutoModel.from_pretrained(tiny_model_dir).state_dict()[name]
    assert not torch.allclose(load_file(str(merged / "model.safetensors"))[f"encoder.{name}"], base, atol=1e-3)


def test_calibration_temperature_is_folded_into_every_export(run_copy: Path, tmp_path: Path) -> None:
    manifest = json.loads((run_copy / "lorafit.json").read_text())
    manifest["calibration"]["temperature"] = 2.5
    (run_copy / "lorafit.json").write_text(json.dumps(manifest))
    expected = Classifier.load(run_copy).predict_proba(TEXTS)
    probs, _ = _transformers_proba(export_merged(run_copy, tmp_path / "merged"), TEXTS)
    np.testing.assert_allclose(probs, expected, atol=1e-4)
    onnx = load_onnx(export_onnx(run_copy, tmp_path / "onnx"))
    np.testing.assert_allclose(onnx.predict_proba(TEXTS), expected, atol=1e-4)
    assert json.loads((tmp_path / "onnx" / EXPORT_MANIFEST).read_text())["temperature_folded"] == 2.5


def test_cls_pooled_run_exports_too(tiny_model: str, synthetic, tmp_path: Path) -> None:
    from conftest import TINY_TRAIN

    clf = Classifier(model=tiny_model, pooling="cls", **{**TINY_TRAIN, "epochs": 1}).fit(*synthetic)
    run = clf.save(tmp_path / "cls_run")
    probs, _ = _transformers_proba(export_merged(run, tmp_path / "merged"), TEXTS)
    np.testing.assert_allclose(probs, clf.predict_proba(TEXTS), atol=1e-4)
    assert json.loads((tmp_path / "merged" / "config.json").read_text())["pooling"] == "cls"


# --------------------------------------------------------------------------------------------- onnx
def test_onnx_fp32_matches_the_adapter_model(exports, reference, run_dir: Path) -> None:
    onnx = load_onnx(exports["onnx"])
    assert isinstance(onnx, OnnxClassifier) and onnx.classes_ == Classifier.load(run_dir).classes_
    np.testing.assert_allclose(onnx.predict_proba(TEXTS), reference, atol=1e-4)
    assert onnx.predict(TEXTS) == [onnx.classes_[i] for i in reference.argmax(1)]
    for name in ("model.onnx", "tokenizer.json", "config.json", EXPORT_MANIFEST):
        assert (exports["onnx"] / name).is_file()


def test_onnx_int8_agrees_with_fp32(exports, synthetic_test) -> None:
    texts = synthetic_test[0]
    fp32, int8 = load_onnx(exports["onnx"]), load_onnx(exports["int8"])
    agreement = float(np.mean(np.array(fp32.predict(texts)) == np.array(int8.predict(texts))))
    assert agreement >= 0.9, f"int8 agrees with fp32 on {agreement:.1%} of {len(texts)} texts"
    assert np.abs(int8.predict_proba(texts) - fp32.predict_proba(texts)).max() < 0.1
    assert int8.quantize == "int8" and fp32.quantize is None
    import onnx

    ops = {node.op_type for node in onnx.load(str(exports["int8"] / "model.onnx")).graph.node}
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops  # int8 weights, activations quantized at run time
    manifest = json.loads((exports["int8"] / EXPORT_MANIFEST).read_text())
    assert manifest["quantize"] == "int8" and manifest["fp32_matmuls"] > 0
    assert manifest["reduce_range"] == int8_saturates()


@pytest.mark.parametrize(("flags", "saturates"), [("fpu avx2 fma", True), ("avx2 avx512f avx512_vnni", False),
                                                  ("avx2 avx_vnni", False), ("avx2 amx_int8 amx_tile", False)])
def test_int8_weights_use_7_bits_on_x86_without_vnni(tmp_path: Path, monkeypatch, flags: str, saturates: bool) -> None:
    import platform

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert int8_saturates(cpuinfo) is saturates
    assert int8_saturates(tmp_path / "missing") is True  # unknown x86 CPU: 7 bits are safe everywhere
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert int8_saturates(cpuinfo) is False


def test_onnx_classifier_keeps_classifier_conventions(exports) -> None:
    onnx = load_onnx(exports["onnx"])
    assert onnx.predict_proba([]).shape == (0, len(onnx.classes_)) and onnx.predict([]) == []
    with pytest.raises(TypeError, match="single string"):
        onnx.predict("pizza")


# ------------------------------------------------------------------------------ loading and the CLI
def test_load_predictor_opens_runs_and_both_exports(exports, run_dir: Path) -> None:
    labels = Classifier.load(run_dir).predict(TEXTS)
    assert isinstance(load_predictor(run_dir), Classifier)
    for name in ("merged", "onnx"):
        assert load_predictor(exports[name]).predict(TEXTS) == labels


def test_load_predictor_refuses_other_directories(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="not a lorafit run directory"):
        load_predictor(tmp_path)
    with pytest.raises(RunDirError, match="not a lorafit export"):
        load_onnx(tmp_path)


def test_cli_exports_and_predicts_from_the_export(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "int8"
    result = runner.invoke(app, ["export", str(run_dir), "--format", "onnx", "--quantize", "int8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "ONNX model (int8)" in result.stdout
    result = runner.invoke(app, ["predict", str(out), "pizza and bread", "a song on the piano"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in records] == ["pizza and bread", "a song on the piano"]
    assert abs(sum(records[0]["probabilities"].values()) - 1) < 1e-6


def test_export_refuses_bad_options_and_existing_directories(run_dir: Path, tmp_path: Path, exports) -> None:
    from lorafit.export import export

    with pytest.raises(ConfigError, match="--format must be one of merged, onnx"):
        export(run_dir, tmp_path / "x", fmt="tflite")
    with pytest.raises(ConfigError, match="--format onnx only"):
        export(run_dir, tmp_path / "x", fmt="merged", quantize="int8")
    with pytest.raises(ConfigError, match="--quantize must be one of int8"):
        export(run_dir, tmp_path / "x", fmt="onnx", quantize="int4")
    with pytest.raises(RunDirError, match="exists already"):
        export_merged(run_dir, exports["merged"])
    with pytest.raises(RunDirError, match="not a lorafit export"):
        export_merged(run_dir, shutil.copytree(run_dir, tmp_path / "a_run"), overwrite=True)
    assert not (tmp_path / "x").exists()


def test_bf16_prediction_is_opt_in_and_close(exports, run_dir: Path, reference) -> None:
    """fp32 stays the default (parity); bf16 autocast is an opt-in whose probabilities stay close."""
    from lorafit.exported import load_merged

    for predictor in (Classifier.load(run_dir), load_merged(exports["merged"])):
        assert predictor.inference_precision == "fp32"
        predictor.inference_precision = "bf16"
        np.testing.assert_allclose(predictor.predict_proba(TEXTS), reference, atol=0.05)
        predictor.inference_precision = "fp8"
        with pytest.raises(ConfigError, match="precision must be one of"):
            predictor.predict_proba(TEXTS)
        if not torch.cuda.is_available():
            predictor.inference_precision = "fp16"
            with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
                predictor.predict_proba(TEXTS)


@pytest.mark.parametrize("fused", [True, False])
def test_bf16_runs_a_bf16_copy_and_leaves_the_fp32_model_alone(exports, run_dir: Path, reference, fused: bool,
                                                               monkeypatch) -> None:
    """bf16 prediction runs a copy with bf16 weights (LoRA merged into them for a run directory) and an fp32
    head; the fp32 model keeps its weights, so switching back gives exactly the fp32 probabilities. Its linear
    layers run through oneDNN's fused operators unless LORAFIT_FUSED_LINEARS=0."""
    from lorafit.exported import load_merged
    from lorafit.fusion import FusedLinear, FusedResidual, enabled

    monkeypatch.setenv("LORAFIT_FUSED_LINEARS", "1" if fused else "0")
    if fused and not enabled():
        pytest.skip("this torch has no oneDNN fused linear operators")

    for predictor in (Classifier.load(run_dir), load_merged(exports["merged"])):
        fp32 = predictor.predict_proba(TEXTS)
        before = {k: v.clone() for k, v in predictor.model.state_dict().items()}
        predictor.inference_precision = "bf16"
        np.testing.assert_allclose(predictor.predict_proba(TEXTS), reference, atol=0.05)
        assert predictor.predict(TEXTS) == [predictor.classes_[i] for i in reference.argmax(1)]
        lowered, autocast = predictor._models.get(predictor.model, "bf16")
        assert autocast == "fp32" and lowered is not predictor.model
        assert predictor._models.get(predictor.model, "bf16")[0] is lowered  # made once
        dtypes = {n: p.dtype for n, p in lowered.named_parameters()}
        head = [n for n in dtypes if "classifier" in n]
        assert head and all(dtypes[n] == torch.float32 for n in head)
        assert all(d == torch.bfloat16 for n, d in dtypes.items() if n not in head)
        lora = [m for m in lowered.modules() if hasattr(m, "merged") and hasattr(m, "lora_A")]
        linears = [m for m in lowered.modules() if type(m) is torch.nn.Linear]
        head_modules = list(getattr(lowered, "head" if isinstance(predictor, Classifier) else "classifier").modules())
        if fused:  # every linear but the head fused, the merged LoRA layers replaced by their fused base layers
            assert not lora and linears and all(any(m is h for h in head_modules) for m in linears)
            assert any(isinstance(m, FusedResidual) for m in lowered.modules())
            assert {m.activation for m in lowered.modules() if isinstance(m, FusedLinear)} == {"none", "gelu"}
        elif isinstance(predictor, Classifier):
            assert lora and all(m.merged for m in lora)
        if isinstance(predictor, Classifier):
            assert predictor.embed(TEXTS).shape == (len(TEXTS), predictor.model.encoder.config.hidden_size)
        assert pickle.loads(pickle.dumps(predictor)).predict(TEXTS) == predictor.predict(TEXTS)  # still picklable
        predictor.inference_precision = "fp32"
        assert np.array_equal(predictor.predict_proba(TEXTS), fp32)
        after = predictor.model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)


def test_cli_precision_is_refused_for_onnx_exports(exports, run_dir: Path) -> None:
    result = runner.invoke(app, ["predict", str(exports["onnx"]), "--precision", "bf16", "pizza"])
    assert result.exit_code != 0 and "fixed when it is exported" in str(result.exception)
    result = runner.invoke(app, ["predict", str(run_dir), "--precision", "bf16", "pizza and bread"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["label"] in Classifier.load(run_dir).classes_


def test_abstaining_runs_abstain_in_every_export(run_copy: Path, tmp_path: Path) -> None:
    manifest = json.loads((run_copy / "lorafit.json").read_text())
    manifest["abstain"] = {"threshold": 0.999, "unknown_label": "not_sure"}
    (run_copy / "lorafit.json").write_text(json.dumps(manifest))
    expected = Classifier.load(run_copy).predict(TEXTS)
    assert "not_sure" in expected
    for path in (export_merged(run_copy, tmp_path / "merged"), export_onnx(run_copy, tmp_path / "onnx")):
        predictor = load_predictor(path)
        assert predictor.predict(TEXTS) == expected
        assert "not_sure" not in predictor.predict(TEXTS, threshold=0)
        result = runner.invoke(app, ["predict", str(path), "--threshold", "1", TEXTS[0]])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["label"] == "not_sure"


def test_predict_on_an_onnx_export_keeps_its_precision(exports) -> None:
    refused = runner.invoke(app, ["predict", str(exports["onnx"]), "--precision", "bf16", TEXTS[0]])
    assert refused.exit_code == 1 and "precision is fixed when it is exported" in str(refused.exception)
    kept = runner.invoke(app, ["predict", str(exports["onnx"]), "--precision", "auto", TEXTS[0]])
    assert kept.exit_code == 0, kept.output
    assert json.loads(kept.stdout)["label"]


def test_serving_in_bf16_lowers_merged_exports_and_refuses_onnx_ones(exports, run_dir: Path, reference) -> None:
    from lorafit.registry import load_runs

    merged, run = load_runs([("merged", exports["merged"]), ("run", run_dir)], precision="bf16")
    assert merged.precision == run.precision == "bf16" and merged.backend.inference_precision == "bf16"
    np.testing.assert_allclose(merged.backend.predict_proba(TEXTS), reference, atol=3e-2)
    with pytest.raises(ConfigError, match="ONNX export's precision is fixed"):
        load_runs([("onnx", exports["onnx"])], precision="bf16")
    assert load_runs([("onnx", exports["onnx"])], precision="fp32")[0].precision == "onnx"
    assert load_runs([("onnx", exports["onnx"])], precision="auto")[0].precision == "onnx"  # kept as exported


def test_the_service_serves_an_onnx_export_beside_a_run(exports, run_dir: Path, reference) -> None:
    from fastapi.testclient import TestClient

    from lorafit.registry import load_runs
    from lorafit.serve import create_app

    with TestClient(create_app(load_runs([("onnx", exports["onnx"]), ("run", run_dir)]))) as client:
        models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        assert models["onnx"]["labels"] == models["run"]["labels"]
        for name in ("onnx", "run"):
            body = client.post("/v1/classify", json={"texts": TEXTS, "model": name}).json()
            probs = np.array([list(r["probabilities"].values()) for r in body["results"]])
            np.testing.assert_allclose(probs, reference, atol=1e-4)
