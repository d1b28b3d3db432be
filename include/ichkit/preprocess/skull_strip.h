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
///     The cap of 300 HU keeps bone-like voxels out of the mask - except next to a bleed (7).
///  7. Blood against the inner table: hyperdense cores - mask voxels whose smoothed HU is
///     within [blood_min_hu, brain_max_hu], eroded by `blood_core_mm` (thin partial-volume
///     shells of brain against bone, 50..100 HU, do not survive it; a bleed does), hyperdense
///     in the slices above and below as well (brain sharing a thick slice with bone at the
///     vertex or the skull base reads 50..100 HU over wide areas, with bone above or below
///     it), of at least `blood_core_min_ml` (on a normal GE head CT with 4 mm slices the
///     largest such core is 0.05 mL; a 2 mL bleed's is several times 0.1 mL) - dilated
///     by blood_core_mm + 2 * smooth_sigma_mm + 1 mm and by one slice up and down, mark the
///     voxels next to blood. A rim
///     voxel so marked, with a marked neighbour in the mask, joins whatever its HU when, by linear unmixing
///     of its HU between its neighbours in the mask and the brightest voxel of its 3x3x3, at
///     least `blood_rim_fraction` of it is blood. These voxels straddle blood and the inner
///     table and carry part of the bleed's volume (a lobar bleed's ground truth counts them):
///     without this step a small lobar hematoma loses up to ~3 % of its voxels. The zone
///     reaches ~3 mm past the bleed's edge, so rim voxels beside it join by the same rule;
///     away from blood nothing above rim_max_hu enters the mask. blood_core_mm = 0 turns step 7 off.
/// The result is one 6-connected component.
#include <cstdint>

#include "ichkit/core/volume.h"

namespace ichkit::preprocess {

struct SkullStripOptions {
  float brain_min_hu = 0.0f;     ///< lower threshold of intracranial soft tissue (HU, on the smoothed scan)
  float brain_max_hu = 100.0f;   ///< upper threshold; above it is bone or calcification
  float bone_hu = 100.0f;        ///< skull: unsmoothed voxels at or above this bound the brain
  double smooth_sigma_mm = 1.0;  ///< Gaussian pre-smoothing (0 = none; at most 50 mm)
  double opening_mm = 5.0;       ///< radius of the erosion that cuts thin bridges to scalp/neck (at most 500 mm)
  float rim_max_hu = 300.0f;     ///< cap of the partial-volume rim (HU); <= bone_hu switches the rim off,
                                 ///< +inf keeps every rim voxel that is less than half bone
  float blood_min_hu = 50.0f;    ///< hyperdense blood starts here (HU, smoothed scan); step 7
  double blood_core_mm = 2.0;    ///< erosion that tells a bleed from a thin partial-volume shell; 0 = no step 7 (at most 500 mm)
  double blood_core_min_ml = 0.1;  ///< smallest hyperdense core that counts as a bleed (mL)
  float blood_rim_fraction = 0.25f;  ///< least blood share of a rim voxel next to a bleed, (0, 0.5]
};

/// Brain (intracranial) mask of a CT in HU, on the scan's own grid: 1 inside, 0 outside.
/// Throws InvalidArgument for nonsensical options or when no brain-like soft tissue
/// survives step 3 (not a head CT in HU, or opening_mm too large for the scan).
Volume<std::uint8_t> skull_strip(const Volume<float>& hu, const SkullStripOptions& options = {});

}  // namespace ichkit::preprocess
