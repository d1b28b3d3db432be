#pragma once
/// \file overlay.h
/// Heatmap overlays for a person to look at: an axial montage, or three orthogonal slices
/// through a point (default: the heatmap's peak), the scan in an HU window underneath and the
/// heatmap in matplotlib's perceptually uniform 'inferno' colour map with an opacity that grows
/// with the value; optionally a lesion outline (cyan). PNG written with libpng, atomically.
///
/// Display: the volumes are reoriented to RAS (permutations and flips only, exact), then shown
/// in the radiological convention - axial slices from the feet, the patient's right on the
/// image's left, anterior up; coronal and sagittal with superior up (sagittal: anterior left).
/// Pixels are square in mm (size `pixel_mm`, default the finest in-plane spacing), so thick
/// slices are not squashed.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ichkit/core/volume.h"

namespace ichkit::explain {

/// An 8-bit RGB image, row-major, top row first.
struct Image {
  int width = 0, height = 0;
  std::vector<std::uint8_t> rgb;  ///< width * height * 3
};

struct OverlayOptions {
  double level = 40, width = 80;  ///< HU window of the scan (default: brain)
  float alpha = 0.6f;             ///< heatmap opacity at value 1
  float threshold = 0.2f;         ///< heatmap values below are not drawn
  int slices = 12;                ///< montage: axial slices, evenly spaced over the head (> -300 HU)
  int columns = 6;                ///< montage: slices per row
  double pixel_mm = 0;            ///< output pixel size in mm (0: the finest in-plane spacing)
};

/// The axial montage. `heatmap` (values in [0, 1], e.g. Heatmap::normalized) and `outline`
/// (non-zero = lesion) are optional (empty volumes) and must be on the scan's grid.
Image render_montage(const Volume<float>& scan, const Volume<float>& heatmap = {},
                     const Volume<std::uint8_t>& outline = {}, const OverlayOptions& options = {});
/// Axial, coronal and sagittal slices side by side through voxel `through` of the scan grid
/// (default: the heatmap's maximum, or the centre without a heatmap).
Image render_orthogonal(const Volume<float>& scan, const Volume<float>& heatmap = {},
                        const Volume<std::uint8_t>& outline = {}, const OverlayOptions& options = {},
                        std::optional<Shape3> through = std::nullopt);
/// PNG bytes of an image.
std::string encode_png(const Image& image);
/// Write a PNG atomically (temporary file + rename); IoError on failure.
void write_png(const std::string& path, const Image& image);

}  // namespace ichkit::explain
