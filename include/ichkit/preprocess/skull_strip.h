#pragma once
/// \file skull_strip.h
/// CT skull stripping without FSL/ANTs, in the spirit of Muschelli et al. 2015: smooth,
/// threshold 0..100 HU, remove the > 100 HU skull, keep the largest 3D connected component,
/// fill holes, and use morphology to cut the brain from scalp and neck. Hyperdense blood
/// (50..90 HU) next to the inner table and in the ventricles stays inside the mask.
#include <cstdint>

#include "ichkit/core/volume.h"

namespace ichkit::preprocess {

struct SkullStripOptions {
  float brain_min_hu = 0.0f;     ///< lower threshold of intracranial soft tissue (HU)
  float brain_max_hu = 100.0f;   ///< upper threshold; above it is bone or calcification
  float bone_hu = 100.0f;        ///< skull: voxels above this (after smoothing) bound the brain
  double smooth_sigma_mm = 1.0;  ///< Gaussian pre-smoothing (0 = none)
  double opening_mm = 3.0;       ///< radius of the opening that cuts thin bridges to scalp/neck
};

/// Brain (intracranial) mask of a CT in HU, on the scan's own grid: 1 inside, 0 outside.
Volume<std::uint8_t> skull_strip(const Volume<float>& hu, const SkullStripOptions& options = {});

}  // namespace ichkit::preprocess
