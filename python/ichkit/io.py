"""Image input/output: NIfTI-1/2 (``.nii``, ``.nii.gz``) and DICOM CT series, chosen by content."""
from ._core.io import (  # noqa: F401
    detect_format,
    is_dicom,
    is_nifti,
    list_series,
    read,
    read_dicom,
    read_nifti,
    read_nifti_header,
    write_nifti,
)

__all__ = ["detect_format", "is_dicom", "is_nifti", "list_series", "read", "read_dicom", "read_nifti",
           "read_nifti_header", "write_nifti"]
