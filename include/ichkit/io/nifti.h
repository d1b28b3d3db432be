#pragma once
/// \file nifti.h
/// NIfTI-1 and NIfTI-2 reading and writing (`.nii`, `.nii.gz`).
///
/// Header semantics come from nifticlib (structures, byte swapping, datatype tables, quaternion
/// conversion); the voxel payload is read and (de)compressed by ichkit with libdeflate, which
/// is several times faster than zlib. The affine follows nibabel's `img.affine` exactly:
/// sform if sform_code > 0, else qform if qform_code > 0, else nibabel's fallback
/// (diag(-dx, dy, dz) centred on the grid). `scl_slope`/`scl_inter` are applied on read
/// unless the on-disk values are asked for. Every malformed file raises FormatError (or
/// IoError when it cannot be read at all) before any voxel is returned.
#include <Eigen/Dense>

#include <cstdint>
#include <string>

#include "ichkit/core/any_volume.h"
#include "ichkit/core/value_stats.h"
#include "ichkit/core/volume.h"

namespace ichkit::io {

/// What a NIfTI header says, after validation.
struct NiftiHeader {
  int version = 1;                 ///< 1 or 2
  bool compressed = false;         ///< gzip stream
  bool swapped = false;            ///< stored in the other byte order
  Shape3 shape{0, 0, 0};           ///< (ni, nj, nk)
  int ndim = 3;                    ///< dim[0]
  DataType datatype = DataType::UInt8;  ///< on-disk voxel type
  int nifti_datatype = 0;          ///< NIFTI_TYPE_* code
  Eigen::Vector3d pixdim{1, 1, 1}; ///< pixdim[1..3] (mm after unit conversion)
  double qfac = 1;                 ///< pixdim[0] as nibabel reads it (+1 or -1)
  double scl_slope = 1, scl_inter = 0;  ///< effective scaling (slope 0 means none, as nibabel)
  bool has_scaling = false;        ///< slope/inter change values
  int qform_code = 0, sform_code = 0;
  Eigen::Matrix4d qform = Eigen::Matrix4d::Identity();
  Eigen::Matrix4d sform = Eigen::Matrix4d::Identity();
  Eigen::Matrix4d affine = Eigen::Matrix4d::Identity();  ///< nibabel's best affine
  std::int64_t vox_offset = 0;     ///< byte offset of the voxels in the (uncompressed) stream
  std::string descrip;             ///< header description text
  std::string xyzt_units;          ///< "mm", "micron", "meter" or "unknown"
};

/// Limits applied while reading untrusted files.
struct ReadOptions {
  /// Refuse any file whose voxels would need more than this many bytes (decompression bombs).
  std::uint64_t max_bytes = std::uint64_t(8) << 30;
};

/// Options for writing.
struct WriteOptions {
  int version = 1;            ///< 1 (NIfTI-1, 348-byte header) or 2 (540-byte header)
  int compression_level = 1;  ///< gzip level for `.nii.gz`, 0..12: 1-3 ISA-L igzip's fast levels, 0 (stored)
                              ///< and 4-12 libdeflate's (nibabel's default is 1)
  int qform_code = 1;         ///< NIFTI_XFORM_* code written for the qform (0 = none)
  int sform_code = 1;         ///< NIFTI_XFORM_* code written for the sform (0 = none)
  double scl_slope = 0;       ///< written scl_slope (0 = no scaling)
  double scl_inter = 0;
  std::string descrip;        ///< up to 79 characters
};

/// True if `path` starts with a NIfTI header (plain or gzip-compressed), judged by content.
bool is_nifti(const std::string& path);

/// Read and validate the header only.
NiftiHeader read_nifti_header(const std::string& path, const ReadOptions& options = {});

/// Read a NIfTI file as voxel type T, with scl_slope/scl_inter applied (computed in T's
/// precision for floating T, in double then rounded for integer T; integer targets that
/// cannot hold a scaled value raise FormatError).
template <class T>
Volume<T> read_nifti(const std::string& path, const ReadOptions& options = {});

/// read_nifti<float>, and the returned voxels' ValueStats (NaN count, smallest, largest),
/// gathered while the stored values are converted (a second pass only for float32 files, which
/// need no conversion): what preprocess::check_hu needs, without another pass over the scan.
Volume<float> read_nifti(const std::string& path, const ReadOptions& options, ValueStats& stats);

/// Read a NIfTI file keeping its on-disk voxel type; scaling is NOT applied (see header).
AnyVolume read_nifti_raw(const std::string& path, NiftiHeader* header = nullptr, const ReadOptions& options = {});

/// Write a volume. `.nii.gz` (gzip) or `.nii` by extension. Written to a temporary file in
/// the same folder and renamed, so a failure never leaves a truncated file behind.
template <class T>
void write_nifti(const Volume<T>& volume, const std::string& path, const WriteOptions& options = {});

/// Write an AnyVolume in its own voxel type.
void write_nifti(const AnyVolume& volume, const std::string& path, const WriteOptions& options = {});

}  // namespace ichkit::io
