"""Exports of a run directory: a merged transformers model directory, and an ONNX model (fp32 or int8).

Both start from the same merged model: the LoRA weights folded into the base weights
(``peft``'s ``merge_and_unload``), the trained head kept, and the calibration temperature folded into
the head (weight and bias divided by T), so exported logits are already calibrated. The merged
directory holds lorafit's head as transformers custom code (:mod:`lorafit.modeling_lorafit`, named
in ``config.json``'s ``auto_map``); the ONNX directory holds ``model.onnx`` with the tokenizer and
the label map beside it. Each export carries ``lorafit_export.json``, which ``lorafit predict``
reads to recognise it. Exports are written atomically, like run directories.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from lorafit import __version__
from lorafit.config import SINGLE_LABEL
from lorafit.errors import ConfigError
from lorafit.modeling_lorafit import LorafitConfig, LorafitForSequenceClassification
from lorafit.rundir import check_writable, predict_length_of, read_manifest, write_atomically, write_json

logger = logging.getLogger(__name__)

EXPORT_MANIFEST = "lorafit_export.json"
ONNX_FILE = "model.onnx"
FORMATS = ("merged", "onnx")
QUANTIZE = ("int8",)
ONNX_OPSET = 17
_DROP_FROM_ENCODER = ("id2label", "label2id", "architectures", "auto_map", "_name_or_path", "transformers_version",
                      "torch_dtype", "dtype", "name_or_path")


def merged_model(run_dir: str | Path) -> tuple[LorafitForSequenceClassification, object, dict]:
    """The run's classifier with LoRA merged into the base weights and 1/T folded into the head.

    Returns ``(model, tokenizer, manifest)``; the model is in eval mode and gives the run's
    calibrated logits (``Classifier.load(run_dir)``'s logits divided by the temperature).
    """
    from lorafit.classifier import Classifier

    manifest = read_manifest(run_dir)
    clf = Classifier.load(run_dir)
    encoder = clf.model.peft_model.merge_and_unload()  # LoRA folded in; the head wrapper replaced by its trained copy
    head = encoder.classifier
    del encoder.classifier
    encoder_settings = {k: v for k, v in encoder.config.to_dict().items() if k not in _DROP_FROM_ENCODER}
    config = LorafitConfig(encoder=encoder_settings, pooling=manifest["pooling"],
                           id2label=dict(enumerate(clf.classes_)),
                           label2id={label: i for i, label in enumerate(clf.classes_)},
                           problem_type=_problem_type(manifest))
    config.architectures = [LorafitForSequenceClassification.__name__]
    config.auto_map = {"AutoConfig": "modeling_lorafit.LorafitConfig",
                       "AutoModelForSequenceClassification": "modeling_lorafit.LorafitForSequenceClassification"}
    model = LorafitForSequenceClassification(config).eval()
    model.encoder.load_state_dict(encoder.state_dict(), strict=True)
    with torch.no_grad():
        model.classifier.weight.copy_(head.weight / clf.temperature)
        model.classifier.bias.copy_(head.bias / clf.temperature)
    tokenizer = clf.tokenizer
    tokenizer.model_max_length = predict_length_of(manifest)  # pipelines then truncate as lorafit predicts
    return model, tokenizer, manifest


def _problem_type(manifest: dict) -> str | None:
    """transformers' ``problem_type`` of the merged model: what a pipeline applies to its logits, sigmoid for
    multi-label and nothing for regression (the head answers in the target's units); None for single-label,
    whose exports stay as they were (softmax over two or more labels either way)."""
    task = manifest.get("task", SINGLE_LABEL)
    return None if task == SINGLE_LABEL else task


def _export_manifest(fmt: str, run_dir: str | Path, manifest: dict, quantize: str | None = None) -> dict:
    return {"format": fmt, "quantize": quantize, "labels": manifest["labels"],
            "max_length": predict_length_of(manifest),
            "text_column": manifest.get("text_column", "text"), "text_pair_column": manifest.get("text_pair_column"),
            "text_pairs": bool(manifest.get("text_pairs", False)), "pooling": manifest["pooling"],
            "task": manifest.get("task", SINGLE_LABEL), "task_settings": manifest.get("task_settings", {}),
            "temperature_folded": float(manifest.get("calibration", {}).get("temperature", 1.0)),
            "abstain": manifest.get("abstain") or {"threshold": None, "unknown_label": "unknown"},
            "source_run": str(Path(run_dir).resolve()), "base_model": manifest.get("base_model", {}),
            "lorafit_version": __version__, **({"onnx_file": ONNX_FILE} if fmt == "onnx" else {})}


def _copy_custom_code(directory: Path) -> None:
    """Ship the modeling file that ``config.json``'s ``auto_map`` names."""
    shutil.copyfile(Path(__file__).with_name("modeling_lorafit.py"), directory / "modeling_lorafit.py")


def export_merged(run_dir: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write a plain transformers model directory (custom code included) for the run in ``run_dir``.

    Example:
        >>> export_merged("runs/banking", "exports/banking")  # doctest: +SKIP
        >>> from transformers import pipeline
        >>> pipeline("text-classification", model="exports/banking", trust_remote_code=True)("hi")  # doctest: +SKIP
    """
    check_writable(out, overwrite)
    model, tokenizer, manifest = merged_model(run_dir)

    def fill(tmp: Path) -> None:
        model.save_pretrained(str(tmp))
        _copy_custom_code(tmp)
        tokenizer.save_pretrained(str(tmp))
        write_json(tmp / EXPORT_MANIFEST, _export_manifest("merged", run_dir, manifest))

    return write_atomically(out, fill, overwrite=overwrite, marker=EXPORT_MANIFEST)


class _LogitsOnly(torch.nn.Module):
    """What the ONNX graph computes: token ids in, calibrated logits out."""

    def __init__(self, model: LorafitForSequenceClassification) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """The tracer's and the quantizer's notes are about their internals, not about the user's model."""
    def drop(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=".*aten::index.*")
            yield
    finally:
        root.removeFilter(drop)


def _write_onnx(model: LorafitForSequenceClassification, tokenizer, path: Path) -> None:
    sample = tokenizer(["a short text", "a somewhat longer text to give the batch two lengths"], padding=True,
                       return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    axes = {name: {0: "batch", 1: "sequence"} for name in names} | {"logits": {0: "batch"}}
    with torch.no_grad(), _quiet_exporters():
        torch.onnx.export(_LogitsOnly(model).eval(), tuple(sample[n] for n in names), str(path), input_names=names,
                          output_names=["logits"], dynamic_axes=axes, opset_version=ONNX_OPSET, dynamo=False)


def _kept_fp32(path: Path, blocks: int | None) -> list[str]:
    """The matrix multiplications the int8 model keeps in fp32: every feed-forward output projection (its
    post-GELU input has the widest range of any activation) and the whole last block (its errors reach the
    pooled vector undamped). Measured on BANKING77 (BENCHMARKS.md): label agreement with fp32 98.9% with
    every MatMul in int8, 99.0% with these kept. Names follow the module paths (BERT-style encoders);
    where they do not match, every MatMul is quantized."""
    import onnx

    names = [n.name for n in onnx.load(str(path), load_external_data=False).graph.node if n.op_type == "MatMul"]
    last = f"/layer.{blocks - 1}/" if blocks else None
    return [n for n in names if ("/output/dense/" in n and "/attention/" not in n) or (last and last in n)]


def int8_saturates(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether onnxruntime's int8 MatMul on this CPU can saturate with 8-bit weights: x86 without VNNI
    (AVX2, AVX-512 before Cascade Lake) multiplies uint8 by int8 pairs into int16 sums (``vpmaddubsw``),
    which overflow unless the weights use 7 bits. VNNI CPUs and ARM accumulate in int32. Where the
    flags cannot be read on x86, the answer is yes (7 bits are safe everywhere)."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    try:
        flags = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return True
    return not any(f in flags.split() for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def _quantize_int8(source: Path, target: Path, blocks: int | None) -> dict:
    """Dynamic int8 quantization of the encoder's matrix multiplications (weights per output channel,
    activations at run time; embeddings and head stay fp32). Returns the facts for the export manifest:
    how many MatMuls stay fp32, and whether the weights use 7 bits (``reduce_range``, on CPUs where 8-bit
    weights saturate, see :func:`int8_saturates`)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    kept, reduce_range = _kept_fp32(source, blocks), int8_saturates()
    if reduce_range:
        logger.info("this CPU has no VNNI: int8 weights use 7 bits (reduce_range) so its int8 MatMuls do not saturate")
    with _quiet_exporters():
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=kept, reduce_range=reduce_range)
    return {"fp32_matmuls": len(kept), "reduce_range": reduce_range}


def label_map(config: LorafitConfig):
    """A bare transformers config holding only the label map (``id2label``, ``label2id``) for the ONNX directory.

    No ``model_type``: ``AutoTokenizer`` reads the directory without asking to run custom code.
    """
    from transformers import PretrainedConfig

    return PretrainedConfig(id2label=config.id2label, label2id=config.label2id)


def export_onnx(run_dir: str | Path, out: str | Path, quantize: str | None = None, overwrite: bool = False) -> Path:
    """Write ``model.onnx`` (fp32, or dynamically quantized to int8), the tokenizer and the label map.

    Example:
        >>> export_onnx("runs/banking", "exports/banking-int8", quantize="int8")  # doctest: +SKIP
        >>> from lorafit.onnx_model import load_onnx
        >>> load_onnx("exports/banking-int8").predict(["I lost my card"])  # doctest: +SKIP
    """
    if quantize is not None and quantize not in QUANTIZE:
        raise ConfigError(f"--quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}; "
                          "leave it out for an fp32 model")
    check_writable(out, overwrite)
    model, tokenizer, manifest = merged_model(run_dir)

    def fill(tmp: Path) -> None:
        facts = {}
        if quantize:
            _write_onnx(model, tokenizer, tmp / "fp32.onnx")
            blocks = model.config.encoder.get("num_hidden_layers")
            facts = _quantize_int8(tmp / "fp32.onnx", tmp / ONNX_FILE, blocks)
            (tmp / "fp32.onnx").unlink()
        else:
            _write_onnx(model, tokenizer, tmp / ONNX_FILE)
        label_map(model.config).save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        write_json(tmp / EXPORT_MANIFEST, {**_export_manifest("onnx", run_dir, manifest, quantize), **facts})

    return write_atomically(out, fill, overwrite=overwrite, marker=EXPORT_MANIFEST)


def export(run_dir: str | Path, out: str | Path, fmt: str = "merged", quantize: str | None = None,
           overwrite: bool = False) -> Path:
    """Export the run in ``run_dir`` as ``merged`` (transformers directory) or ``onnx``."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "merged":
        if quantize:
            raise ConfigError("--quantize applies to --format onnx only; the merged export is fp32")
        return export_merged(run_dir, out, overwrite)
    return export_onnx(run_dir, out, quantize, overwrite)
