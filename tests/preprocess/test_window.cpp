#include "ichkit/preprocess/window.h"

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
