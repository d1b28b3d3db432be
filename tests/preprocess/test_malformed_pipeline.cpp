// Every file of tests/data/malformed/pipeline is refused as expected.csv says: at parse time
// (Pipeline::from_json) or, for shapes that only a scan can size, at run time, before any
// allocation (the memory budget). Runs under AddressSanitizer + UBSan in CI too.
// (A ';' in expected.csv's message stands for a comma.)
#include <fstream>
#include <sstream>
#include <string>

#include "ichkit/core/error.h"
#include "ichkit/preprocess/pipeline.h"
#include "test_common.h"

using namespace ichkit;

namespace {
std::string kind(const std::exception& e) {
  if (dynamic_cast<const ResourceError*>(&e)) return "ResourceError";
  if (dynamic_cast<const GeometryError*>(&e)) return "GeometryError";
  if (dynamic_cast<const FormatError*>(&e)) return "FormatError";
  if (dynamic_cast<const InvalidArgument*>(&e)) return "InvalidArgument";
  if (dynamic_cast<const IoError*>(&e)) return "IoError";
  return "other";
}
}  // namespace

TEST_CASE("pipeline: every malformed pipeline JSON is refused with its expected error") {
  const Volume<float> scan({20, 18, 5}, Geometry::from_spacing(Eigen::Vector3d(0.9, 0.9, 5.0)), 30.0f);
  std::ifstream csv(test::data_path("malformed/pipeline/expected.csv"));
  REQUIRE(csv.good());
  std::string line;
  std::getline(csv, line);
  int n = 0;
  while (std::getline(csv, line)) {
    std::stringstream ss(line);
    std::string file, stage, exception, message;
    std::getline(ss, file, ',');
    std::getline(ss, stage, ',');
    std::getline(ss, exception, ',');
    std::getline(ss, message);
    for (char& c : message)
      if (c == ';') c = ',';
    CAPTURE(file);
    std::ifstream f(test::data_path("malformed/pipeline/" + file));
    REQUIRE(f.good());
    const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    std::string got_stage = "parse", got_kind = "no error", got_what;
    try {
      const preprocess::Pipeline p = preprocess::Pipeline::from_json(text);
      got_stage = "run";
      (void)p.run(scan);
    } catch (const std::exception& e) {
      got_kind = kind(e);
      got_what = e.what();
    }
    CHECK(got_stage == stage);
    CHECK(got_kind == exception);
    CHECK(got_what.find(message) != std::string::npos);
    ++n;
  }
  CHECK(n >= 19);
}
