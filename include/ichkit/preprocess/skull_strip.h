#pragma once
/// \file skull_strip.h
/// CT skull stripping without FSL/ANTs, in the spirit of Muschelli et al. 2015: smooth,
/// threshold 0..100 HU, remove the > 100 HU skull, keep the largest 3D connected component,
/// fill holes, and use morphology to cut the brain from scalp and neck. Hyperdense blood
/// (50..90 HU) next to the inner table and in the ventricles stays inside the mask.
///
/// Steps (implemented in src/preprocess/skull_strip.cpp):
///  1. S = the scan smoothed by a Gaussian of `smooth_sigma_mm` (per axis in voxels; an axis
///     whose sigma is under 0.25 voxel, e.g. 5 mm slices, is left alone).
///  2. Soft tissue T = brain_min_hu <= S <= brain_max_hu.
///  3. Erode T by a ball of `opening_mm` (anisotropic voxels handled in mm) and keep the
///     largest 6-connected component: this cuts the thin soft-tissue bridges through the
///     skull base foramina, orbits and thin bone that join the brain to scalp, face and neck.
///  4. Restore the brain's outline: voxels within opening_mm + 2 * smooth_sigma_mm of that
///     core that are not bone on the unsmoothed scan (HU < bone_hu) and not fat/air
///     (S >= brain_min_hu - 30), largest 6-connected component. (Smoothing lifts the voxels
///     within ~1.5 sigma of the skull above brain_max_hu; this step takes them back.)
///  5. Fill 3D holes: ventricles, calcifications and blood enclosed by the mask.
///  6. Partial-volume rim: a 6-neighbour of the mask joins it when less than half of it is
///     bone by its HU - HU < (mean HU of its neighbours in the mask + the brightest HU of its
///     3x3x3 neighbourhood) / 2, the majority rule of a voxel that straddles the inner table -
///     and its HU is at most `rim_max_hu`. With 5 mm slices this layer is a few per cent of
///     the brain (the skull is oblique to the slices at the vertex and the skull base).
///     The default cap of 300 HU keeps bone-like voxels out of the mask; the price is that a
///     hematoma pressed against the inner table loses its partial-volume voxels above 300 HU
///     (up to ~3 % of a small lobar bleed's voxels on 5 mm phantoms). rim_max_hu = +inf gives
///     the pure majority boundary (no blood lost, but up to ~(bone HU)/2 voxels inside).
/// The result is one 6-connected component.
#include <cstdint>

#include "ichkit/core/volume.h"

namespace ichkit::preprocess {

struct SkullStripOptions {
  float brain_min_hu = 0.0f;     ///< lower threshold of intracranial soft tissue (HU, on the smoothed scan)
  float brain_max_hu = 100.0f;   ///< upper threshold; above it is bone or calcification
  float bone_hu = 100.0f;        ///< skull: unsmoothed voxels at or above this bound the brain
  double smooth_sigma_mm = 1.0;  ///< Gaussian pre-smoothing (0 = none)
  double opening_mm = 5.0;       ///< radius of the erosion that cuts thin bridges to scalp/neck
  float rim_max_hu = 300.0f;     ///< cap of the partial-volume rim (HU); <= bone_hu switches the rim off,
                                 ///< +inf keeps every rim voxel that is less than half bone
};

/// Brain (intracranial) mask of a CT in HU, on the scan's own grid: 1 inside, 0 outside.
/// Throws InvalidArgument for nonsensical options or when no brain-like soft tissue
/// survives step 3 (not a head CT in HU, or opening_mm too large for the scan).
Volume<std::uint8_t> skull_strip(const Volume<float>& hu, const SkullStripOptions& options = {});

}  // namespace ichkit::preprocess
