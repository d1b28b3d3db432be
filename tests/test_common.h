#pragma once
// Shared helpers of the C++ test suites: where test data lives, temporary folders.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "ichkit/core/error.h"
#include "ichkit/core/value_stats.h"

namespace ichkit::test {

/// tests/data in the source tree (copied real scans and the malformed-file corpus).
inline std::filesystem::path data_path(const std::string& rel = {}) {
  return std::filesystem::path(ICHKIT_TEST_DATA_DIR) / rel;
}

/// What ichkit::ValueStats must equal, by a plain loop: the NaN count, and the smallest and
/// largest of the other values (+inf / -inf when there are none).
inline ValueStats plain_value_stats(const float* x, std::size_t n) {
  ValueStats p;
  for (std::size_t i = 0; i < n; ++i) {
    if (std::isnan(x[i])) ++p.nan;
    else p.lo = std::min(p.lo, x[i]), p.hi = std::max(p.hi, x[i]);
  }
  return p;
}

/// The ichkit error class of `e` ("ResourceError", "GeometryError", "FormatError", "IoError",
/// "InvalidArgument"), or "other: <what>" for anything else: what the malformed-corpus
/// expected.csv files name.
inline std::string error_kind(const std::exception& e) {
  if (dynamic_cast<const ResourceError*>(&e)) return "ResourceError";
  if (dynamic_cast<const GeometryError*>(&e)) return "GeometryError";
  if (dynamic_cast<const FormatError*>(&e)) return "FormatError";
  if (dynamic_cast<const IoError*>(&e)) return "IoError";
  if (dynamic_cast<const InvalidArgument*>(&e)) return "InvalidArgument";
  return std::string("other: ") + e.what();
}

/// The rows of a CSV file without its header line; a field in double quotes keeps its commas.
inline std::vector<std::vector<std::string>> read_csv(const std::filesystem::path& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot open " + path.string());
  std::vector<std::vector<std::string>> rows;
  std::string line;
  std::getline(f, line);
  while (std::getline(f, line)) {
    std::vector<std::string> row(1);
    bool quoted = false;
    for (char c : line) {
      if (c == '"') quoted = !quoted;
      else if (c == ',' && !quoted) row.emplace_back();
      else row.back() += c;
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

/// A fresh folder under the system temp dir, removed when the object goes away.
class TempDir {
public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("ichkit-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

private:
  std::filesystem::path path_;
};

}  // namespace ichkit::test
