#include "ichkit/core/threading.h"

#include <atomic>
#include <numeric>
#include <thread>
#include <vector>

#include "ichkit/core/progress.h"
#include "test_common.h"

using namespace ichkit;

TEST_CASE("threading: parallel_for covers every index exactly once") {
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    CHECK(num_threads() == threads);
    std::vector<int> hits(1000, 0);
    parallel_for(1000, [&](std::int64_t b, std::int64_t e) {
      for (auto i = b; i < e; ++i) hits[i] += 1;
    });
    CHECK(std::accumulate(hits.begin(), hits.end(), 0) == 1000);
    CHECK(*std::min_element(hits.begin(), hits.end()) == 1);
  }
  set_num_threads(0);
  CHECK(num_threads() >= 1);
}

TEST_CASE("threading: exceptions in workers reach the caller") {
  set_num_threads(2);
  CHECK_THROWS_AS(parallel_for(100, [](std::int64_t b, std::int64_t) {
                    if (b >= 0) throw InvalidArgument("boom");
                  }),
                  InvalidArgument);
  set_num_threads(0);
}

TEST_CASE("threading: hooks see thread-count changes") {
  static std::atomic<int> seen{-1};  // static: the hook outlives this test
  on_num_threads_changed([&](int n) { seen = n; });
  set_num_threads(3);
  CHECK(seen == 3);
  set_num_threads(0);
}

TEST_CASE("threading: a ThreadCap caps this thread's kernels only, nests, and ends with its scope") {
  set_num_threads(3);
  auto chunks = [] {  // parallel_for runs one chunk per thread
    std::atomic<int> n{0};
    parallel_for(1000, [&](std::int64_t, std::int64_t) { ++n; });
    return n.load();
  };
  CHECK(chunks() == 3);
  {
    ThreadCap one(1);
    CHECK(num_threads() == 1);
    CHECK(chunks() == 1);
    {
      ThreadCap two(2);
      CHECK(num_threads() == 2);
      CHECK(chunks() == 2);
      ThreadCap none(0);  // no cap: back to set_num_threads's number
      CHECK(num_threads() == 3);
    }
    CHECK(num_threads() == 1);
    int other = 0;  // another thread is not capped
    std::thread([&] { other = num_threads(); }).join();
    CHECK(other == 3);
    ThreadCap more(8);  // a cap above the thread count changes nothing
    CHECK(num_threads() == 3);
  }
  CHECK(num_threads() == 3);
  CHECK(chunks() == 3);
  set_num_threads(0);
}

namespace {
struct Counting : ProgressReporter {
  int begins = 0, ends = 0;
  std::int64_t steps = 0, total = 0;
  void begin(const std::string&, std::int64_t t) override { ++begins; total = t; }
  void advance(std::int64_t s, const std::string&) override { steps += s; }
  void end() override { ++ends; }
};
}  // namespace

TEST_CASE("progress: a scope ends its task even when the task throws") {
  Counting c;
  try {
    ProgressScope p(&c, "work", 10);
    p.advance(3);
    throw Error("stop");
  } catch (const Error&) {
  }
  CHECK(c.begins == 1);
  CHECK(c.ends == 1);
  CHECK(c.steps == 3);
  CHECK(c.total == 10);
}
