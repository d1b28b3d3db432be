#include "ichkit/core/threading.h"

#include <sched.h>

#include <atomic>
#include <filesystem>
#include <fstream>
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

TEST_CASE("threading: more than kMaxThreads threads is refused, not started") {
  set_num_threads(2);
  CHECK_THROWS_AS(set_num_threads(kMaxThreads + 1), InvalidArgument);
  CHECK_THROWS_AS(set_num_threads(100000), InvalidArgument);
  CHECK(num_threads() == 2);  // unchanged
  set_num_threads(kMaxThreads);
  CHECK(num_threads() == kMaxThreads);
  set_num_threads(0);
  CHECK(num_threads() == default_num_threads());
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
void write_text(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path) << text;
}
}  // namespace

TEST_CASE("cores: a cgroup's CPU quota, v2 and v1, the tightest on the process's path") {
  test::TempDir t;
  const std::string root = t.path().string();
  // cgroup v2 (a systemd host: the process in a slice below the mount's root)
  const std::string mi2 = "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw\n"
                          "30 23 0:27 / /proc rw - proc proc rw\n";
  const std::string cg2 = "0::/user.slice/job.scope\n";
  CHECK(detail::cgroup_cpu_limit(mi2, cg2, root) == 0);  // no cpu.max anywhere: no limit
  write_text(root + "/sys/fs/cgroup/user.slice/job.scope/cpu.max", "max 100000\n");
  CHECK(detail::cgroup_cpu_limit(mi2, cg2, root) == 0);  // "max": no limit
  write_text(root + "/sys/fs/cgroup/user.slice/cpu.max", "400000 100000\n");
  CHECK(detail::cgroup_cpu_limit(mi2, cg2, root) == 4);  // a parent's limit holds for its children
  write_text(root + "/sys/fs/cgroup/user.slice/job.scope/cpu.max", "250000 100000\n");
  CHECK(detail::cgroup_cpu_limit(mi2, cg2, root) == 2);  // the tightest; 2.5 CPUs round down
  write_text(root + "/sys/fs/cgroup/user.slice/job.scope/cpu.max", "50000 100000\n");
  CHECK(detail::cgroup_cpu_limit(mi2, cg2, root) == 1);  // half a CPU: still one thread
  write_text(root + "/sys/fs/cgroup/user.slice/job.scope/cpu.max", "garbage\n");
  CHECK(detail::cgroup_cpu_limit(mi2, cg2, root) == 4);  // unreadable: as if absent
  // a container in its own cgroup namespace: its cgroup is "/", the mount's root
  write_text(root + "/sys/fs/cgroup/cpu.max", "300000 100000\n");
  CHECK(detail::cgroup_cpu_limit(mi2, "0::/\n", root) == 3);

  // cgroup v1: cpu and cpuacct mounted together, a mount point with a space (\040), and a
  // Docker container whose mount root is its own cgroup
  const std::string v1 = root + "/v1/cpu ctl";
  const std::string mi1 = "35 25 0:30 /docker/abc /v1/cpu\\040ctl rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct\n"
                          "36 25 0:31 / /v1/memory rw - cgroup cgroup rw,memory\n";
  const std::string cg1 = "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n";
  write_text(v1 + "/cpu.cfs_quota_us", "-1\n");
  write_text(v1 + "/cpu.cfs_period_us", "100000\n");
  CHECK(detail::cgroup_cpu_limit(mi1, cg1, root) == 0);  // -1: no quota
  write_text(v1 + "/cpu.cfs_quota_us", "600000\n");
  CHECK(detail::cgroup_cpu_limit(mi1, cg1, root) == 6);
  // a memory limit is not a CPU limit; a cgroup line for another controller is not read
  CHECK(detail::cgroup_cpu_limit(mi1, "4:memory:/docker/abc\n", root) == 0);

  // malformed texts: no limit, no crash
  for (const std::string& junk : {std::string(), std::string("\n\n- - -\n"), std::string("1 2 3 4 5 - cgroup2\n"),
                                  std::string(":::::\n0::/../../etc\n")})
    CHECK(detail::cgroup_cpu_limit(junk, junk, root) == 0);
  write_text(root + "/sys/cpu.max", "100000 100000\n");  // outside the mount: never read
  CHECK(detail::cgroup_cpu_limit(mi2, "0::/../..\n", root) == 0);
}

TEST_CASE("cores: available_cores counts this process's CPU affinity, not the machine's CPUs") {
  cpu_set_t set;
  CPU_ZERO(&set);
  REQUIRE(sched_getaffinity(0, sizeof set, &set) == 0);
  const int allowed = CPU_COUNT(&set);
  const int quota = detail::cgroup_cpu_limit(detail::read_text_file("/proc/self/mountinfo"),
                                             detail::read_text_file("/proc/self/cgroup"));
  CHECK(available_cores() == (quota > 0 ? std::min(allowed, quota) : allowed));
  // a thread pinned to one CPU sees one core (affinity is per thread on Linux)
  int seen = 0;
  std::thread([&] {
    cpu_set_t one;
    CPU_ZERO(&one);
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) {
        CPU_SET(c, &one);
        break;
      }
    REQUIRE(sched_setaffinity(0, sizeof one, &one) == 0);
    seen = available_cores();
  }).join();
  CHECK(seen == 1);
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
