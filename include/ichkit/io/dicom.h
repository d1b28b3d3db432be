#pragma once
/// \file dicom.h
/// DICOM CT series: scan folders (headers only), choose the series, read it into HU with the
/// geometry right - slices ordered by ImagePositionPatient projected on the slice normal (never
/// by InstanceNumber or file name), per-slice rescale, padding, multi-frame files, LPS -> RAS,
/// gantry tilt and varying slice spacing resampled in world space (or kept / refused on
/// request) - and a report of what was found and done. Decoding is GDCM's (JPEG baseline,
/// extended and lossless, JPEG-LS, JPEG 2000 through OpenJPEG, RLE, deflate, big endian).
#include <Eigen/Dense>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "ichkit/core/value_stats.h"
#include "ichkit/core/volume.h"

namespace ichkit::io {

/// What a series is, judged from SOP class, ImageType, orientation and slice count.
enum class SeriesKind { AxialCT, Localizer, SecondaryCapture, Other };
const char* to_string(SeriesKind k);  ///< "axial_ct", "localizer", "secondary_capture", "other"

/// One series found in a folder (a SeriesInstanceUID, split further when its images mix
/// orientations or matrix sizes - then `key` is the UID plus "#2", "#3", ...).
struct DicomSeries {
  std::string key;            ///< unique within one scan: the UID, or UID#n for split parts
  std::string series_uid;     ///< SeriesInstanceUID (0020,000E)
  std::string study_uid;      ///< StudyInstanceUID
  std::string description;    ///< SeriesDescription
  std::string modality;       ///< e.g. "CT"
  std::string kernel;         ///< ConvolutionKernel
  std::string sop_class_uid;
  std::string orientation;    ///< "axial", "coronal", "sagittal" or "oblique" (from the slice normal)
  SeriesKind kind = SeriesKind::Other;
  std::size_t rows = 0, columns = 0;
  std::size_t images = 0;     ///< frames in the series (a multi-frame file counts its frames)
  std::array<double, 6> orientation_patient{};  ///< ImageOrientationPatient of the first image
  std::vector<std::string> files;
};

/// Limits of a folder scan (folders from PACS exports are untrusted).
struct ScanOptions {
  std::size_t max_files = 200000;  ///< refuse (ResourceError) folders with more files
  bool follow_symlinks = false;    ///< symlinks are never followed out of the folder
};

/// Scan a folder recursively (or one file) reading headers only, no pixel data. Files that
/// are not DICOM are skipped. Throws IoError for a missing path.
std::vector<DicomSeries> list_series(const std::string& path, const ScanOptions& options = {},
                                     std::vector<std::string>* warnings = nullptr);

/// The series to read from a study: `key` when given (a UID or a split key; InvalidArgument if
/// absent), else the axial CT series with the most images, preferring a soft-tissue kernel.
/// Throws FormatError when there is no image series at all.
const DicomSeries& choose_series(const std::vector<DicomSeries>& series, const std::string& key = {});

/// What to do about a gantry tilt.
enum class TiltMode {
  Resample,  ///< resample onto an orthogonal grid in world space (default; no shear left)
  Keep       ///< keep the sheared grid (the affine is non-orthogonal; NIfTI stores it in the sform)
};
/// What to do about varying slice spacing or missing slices.
enum class SpacingMode {
  Resample,  ///< resample to a uniform spacing (default: the smallest regular spacing found)
  Refuse     ///< throw GeometryError instead
};

struct DicomReadOptions {
  std::string series;               ///< series key/UID; empty = choose_series' default
  TiltMode tilt = TiltMode::Resample;
  SpacingMode spacing = SpacingMode::Resample;
  double slice_spacing = 0;         ///< output slice spacing in mm when resampling (0 = the smallest
                                    ///< spacing that repeats, else the smallest step)
  float fill_hu = -1024.0f;         ///< value outside the acquired field (and for padding voxels)
  std::uint64_t max_bytes = std::uint64_t(8) << 30;  ///< memory budget for the volume
  ScanOptions scan;
};

/// A gap between consecutive slices larger than 1.5x the median spacing.
struct SliceGap {
  double position_mm = 0;  ///< position along the normal of the slice before the gap
  double size_mm = 0;
};

/// Consecutive slices with one spacing (a series may hold several blocks).
struct SpacingRun {
  double spacing_mm = 0;   ///< mean step along the normal
  std::size_t steps = 0;   ///< number of steps in the run
};

/// What the reader found and what it did about it.
struct GeometryReport {
  std::string series_key, series_uid, description, modality, kernel;
  std::vector<std::string> transfer_syntaxes;  ///< distinct transfer syntax UIDs read
  std::size_t images = 0;            ///< frames used (after removing duplicates)
  std::size_t files_skipped = 0;     ///< non-DICOM or non-image files in the folder
  std::size_t duplicates = 0;        ///< frames dropped because their position repeated
  double tilt_deg = 0;               ///< angle between the slice normal and the stacking direction
  double spacing_min_mm = 0, spacing_median_mm = 0, spacing_max_mm = 0;  ///< along the normal
  bool uniform_spacing = true;
  std::vector<SpacingRun> spacing_runs;  ///< blocks of equal spacing, in slice order
  std::vector<SliceGap> gaps;        ///< missing slices: a step > 1.5x the steps around it
  bool inconsistent_orientation = false;  ///< ImageOrientationPatient varies within the series
  bool non_hu = false;               ///< values are probably not Hounsfield units
  std::string non_hu_reason;
  std::size_t padding_voxels = 0;    ///< voxels equal to PixelPaddingValue, set to fill_hu
  bool resampled = false;
  bool orthogonal = true;            ///< the output affine has no shear
  Eigen::Vector3d output_spacing{0, 0, 0};
  std::vector<std::string> actions;   ///< what was done, one sentence each
  std::vector<std::string> warnings;  ///< what a user should know
  /// The report as a JSON object (for `ichkit info --json`).
  std::string to_json() const;
};

struct DicomVolume {
  Volume<float> volume;  ///< HU (float32), RAS affine
  GeometryReport report;
  /// NaN count, smallest and largest voxel of `volume`, gathered slice by slice as each is
  /// decoded (or resampled) and still in cache: what preprocess::check_hu needs.
  ValueStats stats;
};

/// True if the file looks like DICOM: "DICM" at byte 128, or a plausible implicit-VR dataset.
bool is_dicom(const std::string& path);

/// Read a series from a folder, or the series of one file (a multi-frame or single slice).
DicomVolume read_dicom(const std::string& path, const DicomReadOptions& options = {});

}  // namespace ichkit::io
