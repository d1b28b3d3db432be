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
