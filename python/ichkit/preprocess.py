"""Preprocessing on ichkit.Volume: windowing, resampling in world space, reorientation, crop/pad.
Every step keeps the geometry (the affine follows the voxels) and releases the GIL."""
from ._core.preprocess import (  # noqa: F401
    Pipeline,
    PipelineResult,
    center_crop_or_pad,
    check_coverage,
    check_hu,
    crop_or_pad,
    crop_to_foreground,
    reorient,
    resample,
    resample_like,
    resample_to_shape,
    resample_to_spacing,
    scale_intensity_range,
    skull_strip,
    window,
    window_stack,
)

__all__ = ["Pipeline", "PipelineResult", "center_crop_or_pad", "check_coverage", "check_hu", "crop_or_pad", "crop_to_foreground", "reorient", "resample", "resample_like",
           "resample_to_shape", "resample_to_spacing", "scale_intensity_range", "skull_strip", "window", "window_stack"]
