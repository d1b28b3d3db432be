/// Model-file loader: bytes -> Model::from_bytes -> (when it loads) predict on a small scan.
/// Random bytes almost never pass the CRC-32, so when the container's lengths are consistent
/// the target writes the right CRC before loading: mutations then reach the JSON header, the
/// config, the tensor table, the network and its pipeline. (The checksum check itself is
/// covered by the unit tests and the malformed corpus.)
#include <zlib.h>

#include <cstring>

#include "fuzz_common.h"
#include "ichkit/model/model.h"

namespace {
std::uint64_t u64(const std::string& s, std::size_t at) {
  std::uint64_t v;
  std::memcpy(&v, s.data() + at, 8);
  return v;
}
void fix_crc(std::string& s) {
  if (s.size() < 24 + 8) return;
  const std::uint64_t hlen = u64(s, 16);
  if (hlen > s.size() - 32) return;
  const std::size_t dpos = 24 + static_cast<std::size_t>(hlen);
  const std::uint64_t dlen = u64(s, dpos);
  if (dlen > s.size() - dpos - 8) return;
  const std::size_t crc_pos = dpos + 8 + static_cast<std::size_t>(dlen);
  if (s.size() != crc_pos + 4 + 8) return;
  const std::uint32_t c = static_cast<std::uint32_t>(
      crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(s.data()), static_cast<uInt>(crc_pos)));
  std::memcpy(&s[crc_pos], &c, 4);
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::setup();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  fix_crc(bytes);
  ichkit::model::LoadOptions o;
  o.max_bytes = std::uint64_t(64) << 20;
  fuzz::expect_ok_or_error([&] {
    const ichkit::model::Model m = ichkit::model::Model::from_bytes(bytes, o);
    static const ichkit::Volume<float> s = fuzz::small_scan({34, 34, 5}, Eigen::Vector3d(3.6, 3.6, 10.0), 5);
    (void)m.predict(s);
  });
  return 0;
}
