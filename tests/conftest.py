"""Shared fixtures: a tiny random BERT saved to disk, synthetic data, and one trained run directory.

Everything here runs offline in seconds: the tiny model (hidden 32, 2 layers) is built once per session
and saved with ``save_pretrained``, so lorafit loads it through ``from_pretrained`` as it would any
local model directory.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import shutil  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from browser import browser_page  # noqa: E402,F401  (the headless Chromium fixture, for every test module)
from helpers import make_texts, vocabulary, write_labeled  # noqa: E402

# Settings that make the tiny model learn the synthetic data quickly and reliably on a CPU.
TINY_TRAIN = dict(epochs=3, min_steps=0, batch_size=16, learning_rate=5e-3, precision="fp32", seed=0, patience=0,
                  eval_batch_size=64)


@pytest.fixture(scope="session", autouse=True)
def torch_threads() -> Iterator[int]:
    """One intra-op torch thread for the whole session (restored at the end; yields the original count).

    The tiny model's matrices are so small that a second OpenMP thread only waits, and on these 2-core
    machines, as soon as anything else uses a core, two threads make even MiniLM training ~20x slower
    (measured: 180 s instead of 8 s for the e2e training), so the e2e tests run on one thread too.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield before
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny BERT and its fast tokenizer, saved with ``save_pretrained``."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("tiny_bert")
    vocab_file = root / "vocab.txt"
    vocab_file.write_text("\n".join(vocabulary()) + "\n", encoding="utf-8")
    model_dir = root / "model"
    # transformers 5 names the argument `vocab` (a path or a dict); `vocab_file=` would be ignored silently.
    tokenizer = BertTokenizerFast(vocab=str(vocab_file))
    tokenizer.save_pretrained(model_dir)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        vocab_size=len(tokenizer), max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(model_dir)
    assert (model_dir / "tokenizer.json").is_file() and (model_dir / "config.json").is_file()
    loaded = AutoTokenizer.from_pretrained(model_dir)
    assert loaded.is_fast and loaded.unk_token_id not in loaded("pizza guitar ball")["input_ids"]
    return model_dir


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path) -> str:
    """The tiny model directory as the string ``TrainConfig.model`` / ``--model`` takes."""
    return str(tiny_model_dir)


@pytest.fixture(scope="session")
def synthetic() -> tuple[list[str], list[str]]:
    """90 training rows, 3 classes of 30, labels learnable from the words."""
    return make_texts(30, seed=0)


@pytest.fixture(scope="session")
def synthetic_test() -> tuple[list[str], list[str]]:
    """Held-out rows drawn like :func:`synthetic` with another seed."""
    return make_texts(15, seed=1)


@pytest.fixture(scope="session")
def trained(tiny_model: str, synthetic: tuple[list[str], list[str]]):
    """ONE Classifier trained on the synthetic data; shared by many tests, which must not change it."""
    from lorafit import Classifier

    texts, labels = synthetic
    return Classifier(model=tiny_model, **TINY_TRAIN).fit(texts, labels)


@pytest.fixture(scope="session")
def run_dir(trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared classifier saved as a run directory (read-only for tests: copy it to change it)."""
    path = tmp_path_factory.mktemp("runs") / "tiny_run"
    trained.save(path)
    return path


@pytest.fixture
def run_copy(run_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the shared run directory that a test may damage."""
    return Path(shutil.copytree(run_dir, tmp_path / "run_copy"))


@pytest.fixture
def train_csv(tmp_path: Path) -> Path:
    """A small labeled CSV (3 classes x 20 rows)."""
    return write_labeled(tmp_path / "train.csv", n_per_class=20, seed=2)


def _serve_run(tiny_model: str, tmp_path_factory: pytest.TempPathFactory, name: str, labels: list[str]) -> Path:
    """A run trained on every row (no validation split, so the last state with trained LoRA weights is kept:
    on this easy data the probe-initialised head alone wins the validation and LoRA would stay zero)."""
    from lorafit import Classifier

    texts, labels = make_texts(20, seed=3, labels=labels)
    path = tmp_path_factory.mktemp("runs") / name
    Classifier(model=tiny_model, validation_fraction=0, **TINY_TRAIN).fit(texts, labels).save(path)
    return path


@pytest.fixture(scope="session")
def three_label_run(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run on the tiny base with labels food, music, sports, for multi-model serving."""
    return _serve_run(tiny_model, tmp_path_factory, "three_labels", ["food", "music", "sports"])


@pytest.fixture(scope="session")
def two_label_run(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second run on the same tiny base with another label set (music, sports)."""
    return _serve_run(tiny_model, tmp_path_factory, "two_labels", ["music", "sports"])


@pytest.fixture(scope="session")
def served_models(three_label_run: Path, two_label_run: Path):
    """``three_label_run`` (as "three") and ``two_label_run`` (as "two") loaded together on one shared base."""
    from lorafit.registry import load_runs

    return load_runs([("three", three_label_run), ("two", two_label_run)])
