"""Multi-task models (C++/LibTorch): a 3D ResNet encoder, named heads (regression,
classification, ordinal, segmentation, or a type registered in C++), and the preprocessing
pipeline they were trained with, in one model file.

>>> m = ichkit.model.Model(ichkit.model.default_config(), seed=0)
>>> m.save("model.ichkit"); m = ichkit.model.Model.load("model.ichkit")
>>> p = m.predict(ichkit.read("scan.nii.gz")); p["volume"]["value"]

``ichkit.model.MultiTaskNet`` is the same network in pure PyTorch (same parameter names), for
experiments in Python; ``MultiTaskNet.from_ichkit(model)`` copies a model's weights into it.
"""
from ._core.model import Manifest, Model, default_config, evaluate, head_types, patient_folds, train  # noqa: F401


def __getattr__(name):
    # the PyTorch mirror imports torch only when asked for
    if name == "MultiTaskNet":
        from .nets import MultiTaskNet

        return MultiTaskNet
    raise AttributeError(name)


__all__ = ["Manifest", "Model", "MultiTaskNet", "default_config", "evaluate", "head_types", "patient_folds", "train"]
