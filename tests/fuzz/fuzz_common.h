#pragma once
/// \file fuzz_common.h
/// Shared by the libFuzzer targets: a private scratch folder in /dev/shm (or $TMPDIR), a small
/// memory budget so oversized headers must be refused before allocation, one thread, and the
/// rule that only ichkit::Error may escape the library.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "ichkit/core/error.h"
#include "ichkit/core/threading.h"
#include "ichkit/core/volume.h"

namespace fuzz {

namespace fs = std::filesystem;

/// Budget for one voxel buffer inside a fuzz run (libFuzzer's -malloc_limit_mb is above it).
constexpr std::uint64_t kBudget = std::uint64_t(256) << 20;

inline const fs::path& scratch() {
  static const fs::path dir = [] {
    const fs::path base = fs::exists("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
    fs::path d = base / ("ichkit-fuzz-" + std::to_string(::getpid()));
    fs::create_directories(d);
    std::atexit([] { std::error_code ec; fs::remove_all(scratch(), ec); });
    return d;
  }();
  return dir;
}

inline void setup() {
  ichkit::set_num_threads(1);
  ichkit::set_memory_budget(kBudget);
  (void)scratch();
}

/// Write bytes to a file in the scratch folder and return its path.
inline std::string put(const std::string& name, const std::uint8_t* data, std::size_t size) {
  const fs::path p = scratch() / name;
  std::FILE* f = std::fopen(p.c_str(), "wb");
  if (!f) std::abort();
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return p.string();
}

/// A small scan in HU for targets that run something on a volume: air, a block of soft tissue
/// a `margin` of voxels in from the edge, and scattered bone-bright voxels.
inline ichkit::Volume<float> small_scan(const ichkit::Shape3& shape, const Eigen::Vector3d& spacing, std::size_t margin) {
  const Eigen::Vector3d origin = -0.5 * spacing.cwiseProduct(Eigen::Vector3d(double(shape[0]), double(shape[1]), double(shape[2])));
  ichkit::Volume<float> v(shape, ichkit::Geometry::from_spacing(spacing, origin), -1000.0f);
  for (std::size_t k = 0; k < shape[2]; ++k)
    for (std::size_t j = margin; j + margin < shape[1]; ++j)
      for (std::size_t i = margin; i + margin < shape[0]; ++i) v(i, j, k) = (i * j + k) % 9 == 0 ? 900.0f : 30.0f + float(j % 4);
  return v;
}

/// Run `fn`; ichkit::Error is the expected way to refuse an input, anything else escapes to
/// libFuzzer as a crash.
template <class Fn>
void expect_ok_or_error(Fn&& fn) {
  try {
    fn();
  } catch (const ichkit::Error&) {
  }
}

}  // namespace fuzz
