"""Test helpers: a small vocabulary, learnable synthetic labeled data, and writers for every file format.

The fixtures in ``conftest.py`` build on these; tests import them directly (``from helpers import ...``).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd

from lorafit.training import Callback

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# Each class has its own words, so labels are learnable from the words alone.
CLASS_WORDS: dict[str, list[str]] = {
    "food": ["pizza", "bread", "cheese", "soup", "salad", "pasta"],
    "music": ["guitar", "song", "piano", "drum", "singer", "album"],
    "sports": ["ball", "goal", "team", "match", "score", "player"],
}
FILLER = ["the", "a", "is", "was", "my", "this", "that", "very", "really", "quite", "today", "yesterday", "i",
          "we", "you", "they", "like", "love", "saw", "heard", "about", "with", "and", "it", "of", "some", "new",
          "old", "good", "great", "nice", "again"]
# More ordinary words, so the vocabulary is a few hundred entries as a real one would be.
EXTRA = """able above across after against almost along already also always among another answer any anyone
anything around ask away back because become been before began behind being below best better between big
both bring brother build business call came can care carry cause change child city close cold come common
could country course cut dark day deep did different does done door down draw during each early earth east
eat end enough even ever every eye face fact fall family far fast father feel few field find fine fire first
fish follow food foot form found four free friend from front full game gave get girl give go gold gone green
ground group grow hand happen hard have head hear help here high hold home hope horse hot hour house how
however idea important inside island just keep kind king know land large last late learn leave left less
letter life light line list little live long look made make man many map mark may mean men might mile mind
minute miss money month more morning most mother move much must name near need never next night north
nothing notice now number often once only open order other our out over own page paper part pass people
perhaps picture place plan plant play point power press problem pull put question quick rain read ready red
remember rest right river road rock room round run said same sat say school sea second see seem sentence set
several shall she ship short should show side simple since sing size sleep slow small snow so something
sometimes soon sound south space speak special stand star start state stay still stop story street strong
study such sun sure table take talk teacher tell ten than thing think those though thought three through time
together told too took top toward town tree true try turn two under until up upon us use usual voice walk
wall want warm watch water way well went were west what wheel when where which while white who whole why
wide will wind window winter wish without woman wood word work world would write year yes yet young""".split()

LABELS = sorted(CLASS_WORDS)


def vocabulary() -> list[str]:
    """Special tokens then every word the synthetic texts use, without duplicates, in a fixed order."""
    words = [w for ws in CLASS_WORDS.values() for w in ws] + FILLER + EXTRA
    return SPECIAL_TOKENS + list(dict.fromkeys(words))


def make_texts(n_per_class: int, seed: int = 0, labels: list[str] | None = None) -> tuple[list[str], list[str]]:
    """Shuffled ``(texts, labels)``: each text has 2-3 words of its class among 2-4 shared filler words."""
    rng = random.Random(seed)
    texts, out_labels = [], []
    for label in labels or LABELS:
        for _ in range(n_per_class):
            words = rng.sample(CLASS_WORDS[label], rng.randint(2, 3)) + rng.sample(FILLER, rng.randint(2, 4))
            rng.shuffle(words)
            texts.append(" ".join(words))
            out_labels.append(label)
    order = list(range(len(texts)))
    rng.shuffle(order)
    return [texts[i] for i in order], [out_labels[i] for i in order]


def write_table(path: str | Path, rows: dict[str, list] | pd.DataFrame) -> Path:
    """Write ``rows`` (columns) to ``path`` in the format its extension names: csv, tsv, jsonl or parquet."""
    path = Path(path)
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".jsonl":
        with path.open("w", encoding="utf-8") as handle:
            for record in frame.to_dict(orient="records"):
                handle.write(json.dumps(record) + "\n")
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        raise ValueError(f"helpers.write_table cannot write {suffix}")
    return path


def write_labeled(path: str | Path, n_per_class: int = 20, seed: int = 0) -> Path:
    """A labeled file of synthetic data (columns ``text`` and ``label``)."""
    texts, labels = make_texts(n_per_class, seed)
    return write_table(path, {"text": texts, "label": labels})


def make_multilabel(n: int, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """``(texts, label lists)``: each text has 2 words of each of its 0-2 classes among 2-3 filler words."""
    rng = random.Random(seed)
    texts, sets = [], []
    for _ in range(n):
        labels = sorted(rng.sample(LABELS, rng.randint(0, 2)))
        words = [w for label in labels for w in rng.sample(CLASS_WORDS[label], 2)] + rng.sample(FILLER, rng.randint(2, 3))
        rng.shuffle(words)
        texts.append(" ".join(words))
        sets.append(labels)
    return texts, sets


def make_regression(n: int, seed: int = 0) -> tuple[list[str], list[float]]:
    """``(texts, targets)``: the target is 10 + 2 x (food words) - (music words), learnable from the words."""
    texts, sets = make_multilabel(n, seed)
    values = [10.0 + sum(2.0 * (w in CLASS_WORDS["food"]) - (w in CLASS_WORDS["music"]) for w in text.split())
              for text in texts]
    return texts, values


def run_main(capsys, args: list[str]) -> tuple[int, str]:
    """Run ``lorafit.cli.main(args)`` as the console script does; (exit code, stderr)."""
    from lorafit.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


class Infos(Callback):
    """A training callback that keeps what lorafit announces (``on_info``)."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def on_info(self, message: str) -> None:
        self.messages.append(message)


def adapter_weights(run: Path) -> dict:
    """The LoRA and head tensors a run directory saved (``adapter_model.safetensors``)."""
    from safetensors.torch import load_file

    return load_file(str(Path(run) / "adapter_model.safetensors"))


def child_env(hide_gpus: bool = False) -> dict[str, str]:
    """The environment of a `lorafit` child process in a test: one OpenMP thread (as the test process runs),
    offline, quiet tokenizers; ``hide_gpus`` keeps it on the CPUs (gloo) also where there is a GPU."""
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if hide_gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def kill_after_checkpoint(command: list[str], env: dict[str, str], out: Path, step: int,
                          timeout: float = 120) -> int:
    """Start ``command`` (a `lorafit train ... --out OUT` process, or a launcher of several) with ``env`` in a
    session of its own, SIGKILL the whole session once the checkpoint of ``step`` is complete, and return the
    newest checkpoint's step."""
    import os
    import signal
    import subprocess
    import time

    from lorafit.checkpoint import CHECKSUMS, checkpoint_dir

    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    deadline = time.monotonic() + timeout
    while not (checkpoint_dir(out) / f"step-{step:08d}" / CHECKSUMS).is_file():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL and not out.exists()
    return max(int(p.name[5:]) for p in checkpoint_dir(out).glob("step-*"))
