#include "ichkit/core/volume.h"

#include "ichkit/core/any_volume.h"
#include "test_common.h"

using namespace ichkit;

TEST_CASE("volume: i is fastest in memory and xtensor views share the buffer") {
  Volume<float> v({4, 3, 2});
  for (std::size_t k = 0; k < 2; ++k)
    for (std::size_t j = 0; j < 3; ++j)
      for (std::size_t i = 0; i < 4; ++i) v(i, j, k) = float(100 * k + 10 * j + i);
  CHECK(v.data()[1] == 1.0f);    // (1,0,0)
  CHECK(v.data()[4] == 10.0f);   // (0,1,0)
  CHECK(v.data()[12] == 100.0f); // (0,0,1)
  auto x = v.xt();
  CHECK(x.shape()[0] == 4);
  CHECK(x(3, 2, 1) == 123.0f);
  x(2, 1, 0) = -5;
  CHECK(v(2, 1, 0) == -5.0f);
}

TEST_CASE("volume: copies share the buffer, deep_copy does not") {
  Volume<std::int16_t> a({5, 5, 5}, Geometry(), 7);
  a.metadata().set("description", "head");
  Volume<std::int16_t> b = a;
  CHECK(b.shares_buffer_with(a));
  b(1, 1, 1) = 42;
  CHECK(a(1, 1, 1) == 42);
  Volume<std::int16_t> c = a.deep_copy();
  CHECK_FALSE(c.shares_buffer_with(a));
  c(1, 1, 1) = 0;
  CHECK(a(1, 1, 1) == 42);
  CHECK(c.metadata().at("description") == "head");
}

TEST_CASE("volume: missing metadata key and bad access throw") {
  Volume<float> v({2, 2, 2});
  CHECK_THROWS_AS(v.metadata().at("nope"), InvalidArgument);
  CHECK_THROWS_AS(v.at(2, 0, 0), InvalidArgument);
  CHECK_THROWS_AS(Volume<float>({0, 2, 2}), InvalidArgument);
  CHECK_THROWS_AS(Volume<float>::adopt(nullptr, {1, 1, 1}), InvalidArgument);
}

TEST_CASE("volume: overflowing dimensions are refused before allocation") {
  const std::size_t huge = std::size_t(1) << 40;
  CHECK_THROWS_AS(Volume<float>::uninitialized({huge, huge, 2}), ResourceError);
}

TEST_CASE("volume: the memory budget refuses a large buffer before allocation, and can be raised") {
  const std::uint64_t before = memory_budget();
  CHECK(before > (std::uint64_t(256) << 20));
  set_memory_budget(std::uint64_t(1) << 20);  // 1 MiB: 262,144 floats
  CHECK_NOTHROW(Volume<float>({64, 64, 64}));
  CHECK_THROWS_WITH_AS(Volume<float>({64, 64, 65}), doctest::Contains("over the memory budget of 1 MiB"), ResourceError);
  CHECK_NOTHROW(Volume<std::uint8_t>({64, 64, 256}));
  CHECK_THROWS_AS(set_memory_budget(0), InvalidArgument);
  set_memory_budget(before);
  CHECK_NOTHROW(Volume<float>({64, 64, 65}));
}

TEST_CASE("volume: cast keeps the grid; AnyVolume converts") {
  Geometry g = Geometry::from_spacing({0.5, 0.5, 5});
  Volume<std::int16_t> v({3, 3, 3}, g, -1000);
  Volume<float> f = v.cast<float>();
  CHECK(f.same_grid(v));
  CHECK(f(2, 2, 2) == -1000.0f);
  AnyVolume any = v;
  CHECK(datatype(any) == DataType::Int16);
  CHECK(as<std::int16_t>(any).shares_buffer_with(v));
  CHECK(as<double>(any)(0, 0, 0) == -1000.0);
  CHECK(datatype_from_string("float32") == DataType::Float32);
  CHECK_THROWS_AS(datatype_from_string("complex64"), InvalidArgument);
}

TEST_CASE("volume: large freed buffers are reused, within the cache limit") {
  using ichkit::detail::BufferCache;
  ichkit::set_buffer_cache_limit(std::size_t(64) << 20);
  const ichkit::Shape3 shape{256, 256, 32};  // 8 MiB of float
  const float* first = nullptr;
  {
    auto a = ichkit::Volume<float>::uninitialized(shape, ichkit::Geometry{});
    first = a.data();
  }
  CHECK(BufferCache::instance().held() == (std::size_t(8) << 20));
  {
    auto b = ichkit::Volume<float>::uninitialized(shape, ichkit::Geometry{});
    CHECK(b.data() == first);  // the same block came back
    CHECK(BufferCache::instance().held() == 0);
    auto c = ichkit::Volume<float>(shape, ichkit::Geometry{}, 7.0f);  // a second live buffer: a fresh one, filled
    CHECK(c.data() != first);
    CHECK(c.data()[c.size() - 1] == 7.0f);
  }
  CHECK(BufferCache::instance().held() == (std::size_t(16) << 20));
  // a request far smaller than a cached block does not take it (3/4 rule)
  {
    auto d = ichkit::Volume<float>::uninitialized({256, 256, 16}, ichkit::Geometry{});
    CHECK(BufferCache::instance().held() == (std::size_t(16) << 20));
  }
  ichkit::set_buffer_cache_limit(0);  // frees what it holds
  CHECK(BufferCache::instance().held() == 0);
  ichkit::set_buffer_cache_limit(std::size_t(256) << 20);
}
