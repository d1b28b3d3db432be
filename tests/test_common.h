#pragma once
// Shared helpers of the C++ test suites: where test data lives, temporary folders.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

namespace ichkit::test {

/// tests/data in the source tree (copied real scans and the malformed-file corpus).
inline std::filesystem::path data_path(const std::string& rel = {}) {
  return std::filesystem::path(ICHKIT_TEST_DATA_DIR) / rel;
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
