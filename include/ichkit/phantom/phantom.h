#pragma once
/// \file phantom.h
/// Synthetic non-contrast head CTs with a known hematoma: exact mask, volume, location and
/// an outcome label drawn from a documented ICH-score-like logistic model. Deterministic by
/// seed (same seed, same options -> bit-identical volumes on every machine).
#include <Eigen/Dense>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ichkit/core/progress.h"
#include "ichkit/core/volume.h"

namespace ichkit::phantom {

/// Typical locations of spontaneous ICH.
enum class Location { BasalGanglia, Thalamus, Lobar, Cerebellum, Brainstem };
std::string to_string(Location loc);             ///< "basal_ganglia", "thalamus", "lobar", "cerebellum", "brainstem"
Location location_from_string(const std::string& s);  ///< inverse of to_string; throws InvalidArgument
bool is_infratentorial(Location loc);             ///< cerebellum, brainstem

/// Tissue labels of the phantom's label map.
enum Tissue : std::uint8_t {
  kAir = 0, kScalp = 1, kSkull = 2, kGreyMatter = 3, kWhiteMatter = 4, kCsf = 5, kVentricle = 6,
  kHematoma = 7, kEdema = 8, kIvh = 9
};

/// Options of one case. Defaults give a clinical-like thick-slice scan: 512 x 512 x 32 at
/// 0.45 x 0.45 x 5 mm.
struct CaseOptions {
  Shape3 shape{512, 512, 32};
  Eigen::Vector3d spacing{0.45, 0.45, 5.0};  ///< mm
  double tilt_deg = 0;           ///< gantry tilt: slices sheared in the y-z plane (degrees)
  double noise_sd = 6.0;         ///< Gaussian image noise (HU), at most 1000
  int supersample = 3;           ///< partial-volume sub-samples per in-plane axis for boundary voxels
  std::optional<Location> location;         ///< random when empty
  std::optional<double> target_volume_ml;   ///< random (log-normal, ~2..120 mL) when empty
  std::optional<bool> ivh;                  ///< intraventricular extension; random when empty
  bool hematoma = true;          ///< false: a normal head
  std::uint64_t seed = 0;
};

/// One generated case.
struct Case {
  Volume<float> image;             ///< HU, float32
  Volume<std::uint8_t> mask;       ///< hematoma (parenchymal + intraventricular part) = 1
  Volume<std::uint8_t> labels;     ///< Tissue label of each voxel (majority at voxel centre)
  Volume<std::uint8_t> brain;      ///< intracranial soft tissue incl. CSF and blood = 1 (skull-strip truth)
  double volume_ml = 0;            ///< hematoma volume from `mask` at scan resolution (mL)
  double analytic_volume_ml = 0;   ///< volume of the continuous hematoma shape (mL)
  Location location = Location::BasalGanglia;
  bool ivh = false;
  int age = 0;                     ///< years
  int gcs = 15;                    ///< Glasgow coma scale, 3..15
  double outcome_probability = 0;  ///< P(poor outcome) of the documented model
  int outcome = 0;                 ///< 1 = poor 90-day outcome (mRS 3-6), drawn from the model
  Eigen::Vector3d centroid_mm{0, 0, 0};  ///< hematoma centroid in world (RAS mm)
  std::uint64_t seed = 0;
};

/// Generate one case.
Case make_case(const CaseOptions& options = {});

/// The outcome model (log-odds of poor outcome), ICH-score-like:
///   logit = -2.2 + 1.6*[volume >= 30 mL] + 1.0*[IVH] + 0.9*[infratentorial] + 0.9*[age >= 80]
///           + 0.035*volume_ml(capped at 80) + 1.5*[GCS 3-4] + 0.8*[GCS 5-12]
double outcome_logit(double volume_ml, bool ivh, Location location, int age, int gcs);

/// One row of a cohort manifest.
struct ManifestRow {
  std::string id, image, mask;  ///< image and mask paths relative to the manifest's folder
  double volume_ml = 0;
  std::string location;
  bool ivh = false;
  int age = 0, gcs = 15, outcome = 0;
  double outcome_probability = 0;
};

/// Options of a cohort.
struct CohortOptions {
  int n = 10;
  std::uint64_t seed = 1;       ///< case c uses seed `seed * 1000003 + c`
  CaseOptions case_options;     ///< location/volume/ivh/seed are drawn per case unless set
  bool compress = true;         ///< write `.nii.gz`
};

/// Generate `n` cases into `out_dir` (created if needed): `images/<id>.nii.gz`,
/// `masks/<id>.nii.gz` and `manifest.csv` with columns
/// id,image,mask,volume_ml,location,ivh,age,gcs,outcome,outcome_probability.
/// Cases are generated in parallel; the manifest is written last, atomically.
std::vector<ManifestRow> make_cohort(const std::string& out_dir, const CohortOptions& options = {},
                                     ProgressReporter* progress = nullptr);

}  // namespace ichkit::phantom
