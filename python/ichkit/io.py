"""Image input/output: NIfTI-1/2 (``.nii``, ``.nii.gz``), format chosen by content."""
from ._core.io import detect_format, is_nifti, read, read_nifti, read_nifti_header, write_nifti  # noqa: F401

__all__ = ["detect_format", "is_nifti", "read", "read_nifti", "read_nifti_header", "write_nifti"]
