// Every file of tests/data/malformed/nifti raises the exception named in expected.csv,
// and nothing crashes (this suite also runs under AddressSanitizer + UBSan in CI).
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "ichkit/io/nifti.h"
#include "ichkit/io/read.h"
#include "test_common.h"

using namespace ichkit;

namespace {
std::string classify(const std::string& path) {
  try {
    (void)io::read_nifti<float>(path);
  } catch (const std::exception& e) {
    return test::error_kind(e);
  }
  return "no error";
}
}  // namespace

TEST_CASE("nifti: every malformed file raises its expected exception") {
  std::ifstream csv(ichkit::test::data_path("malformed/nifti/expected.csv"));
  REQUIRE(csv.good());
  std::string line;
  std::getline(csv, line);  // header
  int n = 0;
  while (std::getline(csv, line)) {
    std::stringstream ss(line);
    std::string file, expected;
    std::getline(ss, file, ',');
    std::getline(ss, expected, ',');
    const std::string path = ichkit::test::data_path("malformed/nifti/" + file).string();
    CAPTURE(file);
    CHECK(classify(path) == expected);
    // The header-only path refuses with an ichkit error or defers to the voxel read: it never
    // throws anything else, and it never accepts a file whose header the full read rejects.
    std::string header = "no error";
    try {
      (void)io::read_nifti_header(path);
    } catch (const Error&) {
      header = "ichkit error";
    } catch (const std::exception& e) {
      header = std::string("other: ") + e.what();
    }
    CHECK(header.rfind("other", 0) != 0);
    if (expected == "GeometryError" || expected == "ResourceError") CHECK(header == "ichkit error");
    ++n;
  }
  CHECK(n >= 15);
}

TEST_CASE("nifti: missing files and folders are IoErrors") {
  CHECK(classify("/nonexistent/definitely/not/here.nii") == "IoError");
  CHECK(classify(ichkit::test::data_path("malformed").string()) == "IoError");
}

TEST_CASE("nifti: a memory budget refuses big headers before allocating") {
  io::ReadOptions o;
  o.max_bytes = 1000;  // the blast-ct mask needs 6 MB
  CHECK_THROWS_AS(io::read_nifti<float>(ichkit::test::data_path("nifti/blast-ct-lesions/scan_0_segmentation.nii.gz").string(), o),
                  ResourceError);
}
