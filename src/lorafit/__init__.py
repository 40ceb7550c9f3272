"""lorafit: LoRA fine-tuning of transformer encoders into fast, accurate text classifiers.

Example:
    >>> from lorafit import Classifier
    >>> clf = Classifier(epochs=2).fit(texts, labels)  # doctest: +SKIP
    >>> clf.predict(["I lost my card"])                # doctest: +SKIP
"""
__version__ = "0.1.0"

from lorafit.classifier import Classifier
from lorafit.config import DataConfig, LoraSettings, TrainConfig
from lorafit.errors import ConfigError, DataError, LorafitError, ModelError, RunDirError

__all__ = ["Classifier", "TrainConfig", "LoraSettings", "DataConfig", "LorafitError", "DataError",
           "ConfigError", "RunDirError", "ModelError", "__version__"]
