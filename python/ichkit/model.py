"""Multi-task models (C++/LibTorch): a 3D ResNet encoder, named heads (regression,
classification, ordinal, segmentation, or a type registered in C++), and the preprocessing
pipeline they were trained with, in one model file.

>>> m = ichkit.model.Model(ichkit.model.default_config(), seed=0)
>>> m.save("model.ichkit"); m = ichkit.model.Model.load("model.ichkit")
>>> p = m.predict(ichkit.read("scan.nii.gz")); p["volume"]["value"]

``ichkit.model.MultiTaskNet`` is the same network in pure PyTorch (same parameter names), for
experiments in Python; ``MultiTaskNet.from_ichkit(model)`` copies a model's weights into it.
"""
import os
from pathlib import Path

from ._core.model import Manifest, Model, default_config, evaluate, head_types, patient_folds, train  # noqa: F401


def default_model_path() -> str:
    """The model file shipped with ichkit ($ICHKIT_MODEL overrides it). It is trained on synthetic
    phantoms by scripts/make_default_model: for trying ichkit out, not for clinical use."""
    env = os.environ.get("ICHKIT_MODEL")
    if env:
        return env
    p = Path(__file__).with_name("models") / "default.ichkit"
    if not p.is_file():
        raise FileNotFoundError(f"no default model at {p} (scripts/make_default_model makes it)")
    return str(p)


def default_model() -> Model:
    """Load the default (phantom-trained, not for clinical use) model."""
    return Model.load(default_model_path())


def __getattr__(name):
    # the PyTorch mirror imports torch only when asked for
    if name == "MultiTaskNet":
        from .nets import MultiTaskNet

        return MultiTaskNet
    raise AttributeError(name)


__all__ = ["Manifest", "Model", "MultiTaskNet", "default_config", "default_model", "default_model_path", "evaluate", "head_types", "patient_folds", "train"]
