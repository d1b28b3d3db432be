// Every file of tests/data/malformed/pipeline is refused as expected.csv says: at parse time
// (Pipeline::from_json) or, for shapes that only a scan can size, at run time, before any
// allocation (the memory budget). Runs under AddressSanitizer + UBSan in CI too.
#include <fstream>
#include <string>

#include "ichkit/core/error.h"
#include "ichkit/preprocess/pipeline.h"
#include "test_common.h"

using namespace ichkit;

TEST_CASE("pipeline: every malformed pipeline JSON is refused with its expected error") {
  const Volume<float> scan({20, 18, 5}, Geometry::from_spacing(Eigen::Vector3d(0.9, 0.9, 5.0)), 30.0f);
  int n = 0;
  for (const auto& row : test::read_csv(test::data_path("malformed/pipeline/expected.csv"))) {
    REQUIRE(row.size() == 4);
    const std::string &file = row[0], &stage = row[1], &exception = row[2], &message = row[3];
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
      got_kind = test::error_kind(e);
      got_what = e.what();
    }
    CHECK(got_stage == stage);
    CHECK(got_kind == exception);
    CHECK(got_what.find(message) != std::string::npos);
    ++n;
  }
  CHECK(n >= 21);
}
