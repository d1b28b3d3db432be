/// DICOM reader, one file: bytes -> a .dcm file -> the folder listing (headers only) and the
/// volume (pixel data through GDCM's codecs, geometry checks).
#include "fuzz_common.h"
#include "ichkit/io/dicom.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::setup();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string path = fuzz::put("in.dcm", data, size);
  fuzz::expect_ok_or_error([&] { (void)ichkit::io::list_series(path); });
  ichkit::io::DicomReadOptions o;
  o.max_bytes = fuzz::kBudget;
  fuzz::expect_ok_or_error([&] { (void)ichkit::io::read_dicom(path, o); });
  return 0;
}
