"""The probe fit: lorafit's torch solver (``lorafit.probe.fit_probe``) against scikit-learn's
``LogisticRegression(C=10, max_iter=2000)`` (lbfgs, what lorafit called before), on the frozen embeddings of a
training set, interleaved, in one process.

The embeddings are what a default fit hands the probe: the base model's mean-pooled, L2-normalised final
states from the caching pass (bf16 where the CPU has it, as training uses). Each round times both solvers on
them, alternating which goes first. One JSON line per solver and round (seconds, iterations, the regularised
objective both minimise), and a summary line: the two solutions' label agreement on the training rows and on
TEST's rows (their embeddings from the same pass), their test accuracies, and the largest difference of their
probabilities.

Usage: python bench/probe_solver.py TRAIN.csv TEST.csv OUT.jsonl [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import pandas as pd
import torch

from common import Sink


def embeddings(texts: list[str]) -> np.ndarray:
    """The probe's features as a default training run computes them."""
    from lorafit import cache
    from lorafit.config import LoraSettings
    from lorafit.data import tokenize
    from lorafit.inference import bf16_supported
    from lorafit.models import build_classifier, load_encoder

    encoder, tokenizer = load_encoder("minilm")
    model = build_classifier(encoder, ["a", "b"], "mean", LoraSettings(layers_to_transform=[5]), "bench")
    precision = "bf16" if bf16_supported(torch.device("cpu")) else "fp32"
    encoded = tokenize(tokenizer, texts, 56)
    _, features = cache.build_cache(model.encoder, encoded, 5, tokenizer.pad_token_id, 256, precision,
                                    torch.device("cpu"), pooling="mean")
    return features


def objective(x: np.ndarray, y: np.ndarray, weight: np.ndarray, bias: np.ndarray, c: float) -> float:
    """scikit-learn's: mean cross-entropy + ||W||^2 / (2 C n), in float64."""
    z = x.astype(np.float64) @ weight.T.astype(np.float64) + bias
    z -= z.max(1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(1))
    penalty = (weight.astype(np.float64) ** 2).sum() / (2 * c * len(y))
    return float(np.mean(log_norm - z[np.arange(len(y)), y]) + penalty)


def main() -> None:
    from sklearn.linear_model import LogisticRegression

    from lorafit.probe import fit_probe

    p = argparse.ArgumentParser()
    p.add_argument("train"); p.add_argument("test"); p.add_argument("out")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(2)
    sink = Sink(a.out, " ".join(["python", *sys.argv]))
    train = pd.read_csv(a.train, keep_default_na=False, dtype=str)
    test = pd.read_csv(a.test, keep_default_na=False, dtype=str)
    labels = sorted(set(train.label))
    y = np.array([labels.index(v) for v in train.label])
    y_test = np.array([labels.index(v) if v in labels else -1 for v in test.label])
    features = embeddings(train.text.tolist() + test.text.tolist())
    x, x_test = features[:len(train)], features[len(train):]

    def sklearn_fit() -> tuple[np.ndarray, np.ndarray, int]:
        fitted = LogisticRegression(C=10.0, max_iter=2000).fit(x, y)
        return fitted.coef_.astype(np.float32), fitted.intercept_.astype(np.float32), int(fitted.n_iter_[0])

    def lorafit_fit() -> tuple[np.ndarray, np.ndarray, None]:
        weight, bias = fit_probe(x, y, len(labels))
        return weight, bias, None

    solvers = {"scikit-learn LogisticRegression (lbfgs)": sklearn_fit,
               "lorafit.probe.fit_probe (torch L-BFGS)": lorafit_fit}
    seconds: dict[str, list[float]] = {name: [] for name in solvers}
    fitted = {}
    for r in range(a.rounds):
        for name in (list(solvers) if r % 2 == 0 else list(solvers)[::-1]):
            started = time.perf_counter()
            weight, bias, iterations = solvers[name]()
            seconds[name].append(time.perf_counter() - started)
            fitted[name] = (weight, bias)
            sink.keep({"solver": name, "round": r + 1, "seconds": round(seconds[name][-1], 2), "iterations": iterations,
                       "objective": round(objective(x, y, weight, bias, 10.0), 6), "train_rows": len(y)})
    logits = {name: (x_test @ w.T + b, x @ w.T + b) for name, (w, b) in fitted.items()}
    (test_sk, train_sk), (test_ours, train_ours) = logits.values()
    probs = [torch.softmax(torch.from_numpy(t).double(), 1).numpy() for t in (test_sk, test_ours)]
    medians = {name: statistics.median(times) for name, times in seconds.items()}
    sink.keep({"summary": True, "median_seconds": {k: round(v, 2) for k, v in medians.items()},
               "speedup": round(medians[list(solvers)[0]] / medians[list(solvers)[1]], 2),
               "train_label_agreement": round(float(np.mean(train_sk.argmax(1) == train_ours.argmax(1))), 4),
               "test_label_agreement": round(float(np.mean(test_sk.argmax(1) == test_ours.argmax(1))), 4),
               "test_accuracy": {name: round(float(np.mean(t.argmax(1) == y_test)), 4)
                                 for name, t in zip(solvers, (test_sk, test_ours))},
               "max_test_probability_difference": round(float(np.abs(probs[0] - probs[1]).max()), 4)})


if __name__ == "__main__":
    main()
