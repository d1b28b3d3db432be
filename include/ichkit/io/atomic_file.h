#pragma once
/// \file atomic_file.h
/// Write-to-temporary-then-rename, so a crash or an exception never leaves a truncated output.
#include <cstdio>
#include <string>

namespace ichkit::io {

/// An output file that only appears under its final name when commit() succeeds.
/// Bytes go to a temporary file in the same folder (same filesystem, so rename is atomic);
/// the destructor removes the temporary file if commit() was not reached.
class AtomicFile {
public:
  explicit AtomicFile(const std::string& path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  /// Append bytes; throws IoError (e.g. disk full).
  void write(const void* data, std::size_t n);
  /// Flush, close and rename onto the final path; throws IoError.
  void commit();
  const std::string& temporary_path() const { return tmp_; }

private:
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

/// Remove temporary files an AtomicFile for `path` left behind when its process was killed
/// before commit ("<path>.tmp-XXXXXX"); returns how many. Call it only where no other process
/// is writing `path` at the same time (e.g. a training run resuming its own checkpoint).
std::size_t remove_stale_temporaries(const std::string& path);

/// Write a whole string atomically (CSV, JSON, HTML reports).
void write_file_atomic(const std::string& path, const std::string& content);

}  // namespace ichkit::io
