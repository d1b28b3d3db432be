"""ichkit: hematoma volume, prognosis and Grad-CAM for non-contrast head CT.

Volumes carry their geometry: ``vol.array`` is a zero-copy (ni, nj, nk) numpy view indexed like
nibabel's ``get_fdata()``, ``vol.affine`` maps (i, j, k, 1) to RAS+ mm like nibabel's
``img.affine``, and ``vol.torch()`` is a zero-copy (D, H, W) tensor.

Models trained on synthetic phantoms are for research and testing, not for clinical use.
"""
from ._core import (  # noqa: F401
    Error,
    FormatError,
    GeometryError,
    InvalidArgument,
    IoError,
    ResourceError,
    Volume,
    available_cores,
    memory_budget,
    num_threads,
    runtime_info,
    set_memory_budget,
    set_num_threads,
)
from ._core import __version__  # noqa: F401
from . import distributed, explain, io, metrics, model, phantom, preprocess  # noqa: F401
from .io import list_series, read, read_dicom, read_nifti, write_nifti  # noqa: F401
from .model import evaluate, train  # noqa: F401

__all__ = [
    "Error",
    "FormatError",
    "GeometryError",
    "InvalidArgument",
    "IoError",
    "ResourceError",
    "Volume",
    "__version__",
    "available_cores",
    "evaluate",
    "distributed",
    "explain",
    "io",
    "list_series",
    "metrics",
    "model",
    "memory_budget",
    "num_threads",
    "phantom",
    "preprocess",
    "read",
    "read_dicom",
    "read_nifti",
    "runtime_info",
    "set_memory_budget",
    "set_num_threads",
    "train",
    "write_nifti",
]
