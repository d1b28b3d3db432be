/// NIfTI reader (header, data, gzip): bytes -> a .nii or .nii.gz file -> header, voxels as
/// stored and as float; what reads is written back and must read again with the same voxels.
#include <cstring>

#include "fuzz_common.h"
#include "ichkit/io/nifti.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::setup();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const bool gz = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
  const std::string path = fuzz::put(gz ? "in.nii.gz" : "in.nii", data, size);
  ichkit::io::ReadOptions o;
  o.max_bytes = fuzz::kBudget;
  fuzz::expect_ok_or_error([&] { (void)ichkit::io::read_nifti_header(path, o); });
  fuzz::expect_ok_or_error([&] {
    ichkit::AnyVolume raw = ichkit::io::read_nifti_raw(path, nullptr, o);
    (void)raw;
    ichkit::Volume<float> v = ichkit::io::read_nifti<float>(path, o);
    const std::string out = (fuzz::scratch() / "out.nii").string();
    ichkit::io::write_nifti(v, out);
    ichkit::Volume<float> w = ichkit::io::read_nifti<float>(out, o);
    if (w.shape() != v.shape()) std::abort();
    for (std::size_t n = 0; n < v.size(); ++n)  // NaN in, NaN out
      if (std::memcmp(&w.data()[n], &v.data()[n], sizeof(float)) != 0 && !(v.data()[n] != v.data()[n])) std::abort();
  });
  return 0;
}
