/// Pipeline JSON: text -> Pipeline::from_json. A pipeline that parses must serialise to JSON
/// that parses to the same serialisation, and must run on a small scan, or refuse with
/// ichkit::Error (e.g. a shape over the memory budget), and its inverse mapping must carry a
/// network-grid volume back onto the scan's grid.
#include <cmath>

#include "fuzz_common.h"
#include "ichkit/preprocess/pipeline.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::setup();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 4096) return 0;  // the JSON grammar, not the parser's speed on megabytes
  const std::string text(reinterpret_cast<const char*>(data), size);
  fuzz::expect_ok_or_error([&] {
    const ichkit::preprocess::Pipeline p = ichkit::preprocess::Pipeline::from_json(text);
    const std::string once = p.to_json();
    if (ichkit::preprocess::Pipeline::from_json(once).to_json() != once) std::abort();  // round trip
    static const ichkit::Volume<float> s = fuzz::small_scan({20, 18, 5}, Eigen::Vector3d(0.9, 0.9, 5.0), 3);
    ichkit::preprocess::PipelineResult r = p.run(s);
    ichkit::Volume<float> back = r.to_scan(r.volume, ichkit::preprocess::Interp::Linear, 0.0);
    if (back.shape() != s.shape()) std::abort();
  });
  return 0;
}
