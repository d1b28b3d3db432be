#pragma once
/// \file pipeline.h
/// A preprocessing pipeline: an ordered list of named steps with parameters, built in C++ or
/// Python or loaded from JSON, stored inside model files. Running it on a scan gives the network
/// input (C, D, H, W) and the way back: every step keeps the geometry, so a map on the network
/// grid returns to the scan grid by one world-space resampling (`PipelineResult::to_scan`).
///
/// JSON form: {"version": 1, "steps": [{"op": "reorient", "code": "RAS"},
///   {"op": "resample_to_spacing", "spacing": [1, 1, 5], "interp": "linear"}, ...,
///   {"op": "window", "windows": [[40, 80], [80, 200], [600, 2800]]}]}
/// Ops: reorient(code), resample_to_spacing(spacing, interp), resample_to_shape(shape, interp),
/// crop_to_foreground(threshold, margin_mm), center_crop_or_pad(shape, fill), skull_strip(fill),
/// clip(min, max), window(windows, out_min, out_max) - `window` must be last; without
/// "windows" it stacks the default brain / subdural / bone windows.
#include <string>
#include <vector>

#include "ichkit/core/value_stats.h"
#include "ichkit/core/volume.h"
#include "ichkit/preprocess/resample.h"
#include "ichkit/preprocess/window.h"

namespace ichkit::preprocess {

/// What running a pipeline on one scan gives.
struct PipelineResult {
  Channels input;          ///< network input, (C, D, H, W) = (C, nk, nj, ni) of `volume`'s grid
  Volume<float> volume;    ///< the scan after the spatial steps (HU), on the network grid
  Geometry scan_geometry;  ///< the original scan's grid
  Shape3 scan_shape{0, 0, 0};
  /// Carry a map on the network grid (same shape as `volume`) back onto the scan grid.
  Volume<float> to_scan(const Volume<float>& on_network_grid, Interp interp = Interp::Linear, double fill = 0.0) const;
};

/// Refuse, with InvalidArgument naming what was found, a scan that cannot be a CT in Hounsfield
/// units: NaN or infinite voxels; no voxel above -500 HU (air or padding only: no head); values
/// above 40000 (beyond any CT scale); values spanning less than 20 HU (constant, or already
/// normalised / windowed); or no voxel below 0 with values above 1500 (stored values whose rescale
/// slope / intercept was not applied, or not a CT: a head CT in HU always holds air, about -1000);
/// or no voxel below 0 and most positive voxels above 500 (stored values without bone, e.g. a
/// skull-stripped scan saved as HU + 1024: brain and blood in HU lie between 0 and 100).
/// It refuses only what cannot be HU; the DICOM reader's report (`io::GeometryReport::non_hu`) warns
/// more widely (nothing below -200, or a modality other than CT). The model calls it on every scan before
/// its pipeline (predict, predict_files, explain, training samples); Pipeline::run itself does
/// not, so that pipelines stay usable on other images (masks, maps). One pass over the voxels,
/// on the kernel threads.
void check_hu(const Volume<float>& scan);

/// check_hu with the scan's ValueStats already known (io::read gathers them while it reads):
/// no pass over the voxels unless the scan is refused for NaN or infinite values (to name the
/// first). `stats` must be those of `scan`'s voxels as they are now.
void check_hu(const Volume<float>& scan, const ValueStats& stats);

/// Refuse, with InvalidArgument, a scan that is too thin along any axis to be a CT of the head:
/// fewer than `min_voxels` voxels or `min_mm` millimetres (a single DICOM image instead of its
/// series, a localizer, a slab). The model calls it on every scan beside check_hu; the check_hu
/// gate stays about values only.
void check_coverage(const Shape3& shape, const Geometry& geometry, std::size_t min_voxels = 3, double min_mm = 30.0);
template <class T>
void check_coverage(const Volume<T>& scan, std::size_t min_voxels = 3, double min_mm = 30.0) {
  check_coverage(scan.shape(), scan.geometry(), min_voxels, min_mm);
}

class Pipeline {
public:
  struct Step {
    std::string op;
    std::vector<double> values;            ///< spacing/shape/range numbers
    std::vector<std::vector<double>> windows;
    std::string text;                      ///< orientation code or interpolation
    double a = 0, b = 0;                   ///< scalar parameters (threshold/margin, fill, out range)
  };

  Pipeline& reorient(const std::string& code = "RAS");
  Pipeline& resample_to_spacing(const Eigen::Vector3d& spacing_mm, Interp interp = Interp::Linear);
  Pipeline& resample_to_shape(const Shape3& shape, Interp interp = Interp::Linear);
  Pipeline& crop_to_foreground(double threshold_hu = -500, double margin_mm = 5);
  Pipeline& center_crop_or_pad(const Shape3& shape, float fill = -1024.0f);
  Pipeline& skull_strip(float fill = -1024.0f);
  Pipeline& clip(double min_hu, double max_hu);
  Pipeline& window(const std::vector<Window>& windows = default_windows(), double out_min = 0, double out_max = 1);

  const std::vector<Step>& steps() const { return steps_; }

  /// The pipeline as JSON (numbers round-trip exactly).
  std::string to_json() const;
  /// Parse JSON written by to_json (or by hand); unknown ops or bad parameters throw FormatError.
  static Pipeline from_json(const std::string& json);

  /// Run on a scan in HU. Without a `window` step the input has one channel: the HU volume.
  PipelineResult run(const Volume<float>& scan) const;

  /// The default head-CT pipeline: RAS, 1 x 1 x 5 mm, crop to the head with a 5 mm margin,
  /// centre crop/pad to 192 x 192 x 32, brain/subdural/bone windows.
  static Pipeline default_head_ct();

private:
  Pipeline& add(Step s);
  std::vector<Step> steps_;
};

}  // namespace ichkit::preprocess
