#pragma once
/// \file read.h
/// Format dispatch: choose the reader by content (NIfTI magic, gzip, "DICM" at byte 128)
/// before the extension; folders are read as DICOM series.
#include <string>

#include "ichkit/core/volume.h"
#include "ichkit/io/dicom.h"
#include "ichkit/io/nifti.h"

namespace ichkit::io {

/// Formats ichkit recognises by content.
enum class Format { Unknown, Nifti, Dicom, DicomFolder };

/// Identify a path's format from its bytes (not its name); a folder is a DicomFolder.
Format detect_format(const std::string& path);

/// Read any supported image as float32 (HU for CT): a NIfTI file, a DICOM file or a folder of
/// DICOM files (the default series; see read_dicom for options and the geometry report).
/// Throws FormatError for unknown content, IoError for a missing path.
Volume<float> read(const std::string& path, const ReadOptions& options = {});

/// read(), and the ValueStats (NaN count, smallest, largest) of the voxels it returns, for
/// preprocess::check_hu(scan, stats), gathered while the stored values are converted (NIfTI)
/// or decoded (DICOM, slice by slice as each is decoded or resampled).
Volume<float> read(const std::string& path, const ReadOptions& options, ValueStats& stats);

}  // namespace ichkit::io
