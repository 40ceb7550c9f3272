"""lorafit: LoRA fine-tuning of transformer encoders into fast, accurate text classifiers.

Example:
    >>> from lorafit import Classifier
    >>> clf = Classifier(epochs=2).fit(texts, labels)  # doctest: +SKIP
    >>> clf.predict(["I lost my card"])                # doctest: +SKIP
"""
__version__ = "0.1.0"

import os

# OpenMP threads that sleep when idle instead of spinning: the same speed on an idle machine, and far
# less slowdown beside another busy process (BENCHMARKS.md, "Threads"). It must be set before torch
# loads its OpenMP runtime; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from lorafit.classifier import Classifier  # noqa: E402
from lorafit.config import DataConfig, LoraSettings, TrainConfig  # noqa: E402
from lorafit.errors import ConfigError, DataError, LorafitError, ModelError, RunDirError  # noqa: E402

__all__ = ["Classifier", "TrainConfig", "LoraSettings", "DataConfig", "LorafitError", "DataError",
           "ConfigError", "RunDirError", "ModelError", "__version__"]
