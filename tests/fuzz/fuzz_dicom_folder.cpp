/// DICOM reader, a folder: the input is split at "ICHKFUZZ" into up to 8 files of one folder,
/// which is then read as a series (sorting, spacing and tilt checks across slices). The seed
/// corpus joins real slices with that separator.
#include <cstring>

#include "fuzz_common.h"
#include "ichkit/io/dicom.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::setup();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const char sep[] = "ICHKFUZZ";
  const fuzz::fs::path dir = fuzz::scratch() / "series";
  std::error_code ec;
  fuzz::fs::remove_all(dir, ec);
  fuzz::fs::create_directories(dir);
  std::size_t start = 0, files = 0;
  while (files < 8) {
    const std::uint8_t* hit = static_cast<const std::uint8_t*>(
        start < size ? memmem(data + start, size - start, sep, 8) : nullptr);
    const std::size_t end = hit ? static_cast<std::size_t>(hit - data) : size;
    fuzz::put("series/" + std::to_string(files++) + ".dcm", data + start, end - start);
    if (!hit) break;
    start = end + 8;
  }
  ichkit::io::DicomReadOptions o;
  o.max_bytes = fuzz::kBudget;
  o.scan.max_files = 16;
  fuzz::expect_ok_or_error([&] { (void)ichkit::io::list_series(dir.string(), o.scan); });
  fuzz::expect_ok_or_error([&] { (void)ichkit::io::read_dicom(dir.string(), o); });
  return 0;
}
