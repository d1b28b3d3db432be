#pragma once
/// \file read.h
/// Format dispatch: choose the reader by content (NIfTI magic, gzip) before the extension.
#include <string>

#include "ichkit/core/volume.h"
#include "ichkit/io/nifti.h"

namespace ichkit::io {

/// Formats ichkit recognises by content.
enum class Format { Unknown, Nifti };

/// Identify a file's format from its bytes (not its name).
Format detect_format(const std::string& path);

/// Read any supported image as float32 (HU for CT). Throws FormatError for unknown content.
Volume<float> read(const std::string& path, const ReadOptions& options = {});

}  // namespace ichkit::io
