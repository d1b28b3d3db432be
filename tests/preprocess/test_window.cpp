#include "ichkit/preprocess/window.h"

#include <cmath>
#include <limits>

#include "test_common.h"

using namespace ichkit;
using namespace ichkit::preprocess;

TEST_CASE("window: level/width maps to [0, 1], clipped; stacks are (C, D, H, W)") {
  Volume<std::int16_t> v({3, 1, 1}, Geometry(), 0);
  v(0, 0, 0) = -100;
  v(1, 0, 0) = 40;
  v(2, 0, 0) = 200;
  Volume<float> w = window(v, Window{40, 80});
  CHECK(w(0, 0, 0) == 0.0f);
  CHECK(w(1, 0, 0) == doctest::Approx(0.5));
  CHECK(w(2, 0, 0) == 1.0f);
  Channels c = window_stack(v);
  CHECK(c.count == 3);
  CHECK(c.channel(1)[1] == doctest::Approx((40.0 - (80 - 100)) / 200.0));
  CHECK(c.volume(2)(2, 0, 0) == doctest::Approx((200.0 - (600 - 1400)) / 2800.0));
  CHECK_THROWS_AS(window(v, Window{40, 0}), InvalidArgument);
}

TEST_CASE("window: infinite, NaN and too-narrow ranges are refused, never mapped to one value or NaN") {
  Volume<float> v({3, 1, 1}, Geometry(), 0.0f);
  v(0, 0, 0) = -100;
  v(2, 0, 0) = 200;
  const double inf = std::numeric_limits<double>::infinity(), nan = std::nan("");
  for (const Window& w : {Window{40, inf}, Window{40, nan}, Window{inf, 80}, Window{nan, 80}, Window{40, -1},
                          Window{40, 1e-300},  // 40 +- 5e-301 is 40 in double: nothing to tell apart
                          Window{0, 1e-300}}) {  // a scale of 1e300 is infinite in float32
    CAPTURE(w.level);
    CAPTURE(w.width);
    CHECK_THROWS_AS(window(v, w), InvalidArgument);
    CHECK_THROWS_AS(window_stack(v, {Window{40, 80}, w}), InvalidArgument);
  }
  CHECK_THROWS_AS(window_stack(v, {Window{40, 80}}, 0, inf), InvalidArgument);
  CHECK_THROWS_AS(scale_intensity_range(v, 0, inf), InvalidArgument);
  CHECK_THROWS_AS(scale_intensity_range(v, -inf, 0), InvalidArgument);
  CHECK_THROWS_AS(scale_intensity_range(v, 0, 1, nan, 1), InvalidArgument);
  // wide but finite: the limit, every value at the middle of the output range
  const Volume<float> wide = window(v, Window{40, 1e300});
  for (std::size_t i = 0; i < 3; ++i) CHECK(wide(i, 0, 0) == 0.5f);
  // narrow but representable: a step at the level
  const Channels step = window_stack(v, {Window{0, 1e-30}});
  CHECK(step.channel(0)[0] == 0.0f);
  CHECK(step.channel(0)[2] == 1.0f);
}
