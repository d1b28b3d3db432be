#pragma once
/// \file cores.h
/// How many cores this process may use: the CPUs its affinity mask allows (`taskset`, Slurm's
/// and Docker's cpusets), at most its cgroup's CPU quota (`docker --cpus`, Kubernetes CPU
/// limits). `std::thread::hardware_concurrency()` counts the machine's CPUs instead, and a
/// thread pool sized by it on a 4-core allocation of a 64-core node runs 64 threads on 4 cores.
/// Header-only (part of ichkit::core); on systems other than Linux, hardware_concurrency().
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif

namespace ichkit {

/// The most threads ichkit runs (and the most cores it counts): 16384 OpenMP threads on 2 cores
/// took minutes to start.
constexpr int kMaxThreads = 1024;

namespace detail {

/// The whole of a small text file (a /proc or /sys entry, whose size stat() does not tell);
/// empty when it cannot be read. At most `limit` bytes.
inline std::string read_text_file(const std::string& path, std::size_t limit = 1 << 20) {
  std::string s;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return s;
  char buf[4096];
  for (std::size_t n; s.size() < limit && (n = std::fread(buf, 1, sizeof buf, f)) > 0;) s.append(buf, n);
  std::fclose(f);
  return s;
}

/// `text` split at any of `seps`, empty pieces dropped.
inline std::vector<std::string> split_fields(const std::string& text, const char* seps) {
  std::vector<std::string> out;
  std::size_t b = 0;
  while (b < text.size()) {
    const std::size_t e = std::min(text.find_first_of(seps, b), text.size());
    if (e > b) out.push_back(text.substr(b, e - b));
    b = e + 1;
  }
  return out;
}

/// A non-negative decimal integer that is the whole of `s`, or -1.
inline long long parse_count(const std::string& s) {
  if (s.empty() || s.size() > 18 || s.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::atoll(s.c_str());
}

/// A mount point as /proc/self/mountinfo writes it (space, tab, newline, backslash as \ooo).
inline std::string unescape_mount_path(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    auto octal = [&](std::size_t k) { return k < s.size() && s[k] >= '0' && s[k] <= '7'; };
    if (s[i] == '\\' && octal(i + 1) && octal(i + 2) && octal(i + 3)) {
      out.push_back(static_cast<char>(std::strtol(s.substr(i + 1, 3).c_str(), nullptr, 8)));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

/// The CPU limit of the tightest cgroup on this process's path, floor(quota / period) and at
/// least 1, or 0 when no cgroup limits it. cgroup v2 (`cpu.max`: "max 100000" or "200000
/// 100000") and v1 (`cpu.cfs_quota_us`, -1 for none, over `cpu.cfs_period_us`). `mountinfo`
/// and `cgroup` are the texts of /proc/self/mountinfo and /proc/self/cgroup; `root` goes in
/// front of every mount point (tests build a tree of their own). Unreadable or malformed
/// entries count as no limit: this picks a default, it never fails.
inline int cgroup_cpu_limit(const std::string& mountinfo, const std::string& cgroup, const std::string& root = "") {
  struct Mount {
    std::string point, hierarchy_root;
  };
  std::vector<Mount> v2, v1;  // the cgroup2 mounts; the cgroup v1 mounts with the cpu controller
  for (const std::string& line : split_fields(mountinfo, "\n")) {
    // id parent major:minor root mount-point options [optional...] - fstype source super-options
    const std::vector<std::string> f = split_fields(line, " ");
    const auto dash = std::find(f.begin(), f.end(), "-");
    if (f.size() < 5 || dash == f.end() || f.end() - dash < 4) continue;
    const std::string& fstype = *(dash + 1);
    Mount mt{unescape_mount_path(f[4]), unescape_mount_path(f[3])};
    if (fstype == "cgroup2") v2.push_back(mt);
    if (fstype == "cgroup") {
      const std::vector<std::string> opts = split_fields(*(dash + 3), ",");
      if (std::find(opts.begin(), opts.end(), "cpu") != opts.end()) v1.push_back(mt);
    }
  }
  // the quota of one cgroup directory, in CPUs (0: none)
  auto limit_in = [](const std::string& dir, bool is_v2) -> long long {
    long long quota = -1, period = -1;
    if (is_v2) {
      const std::vector<std::string> f = split_fields(read_text_file(dir + "/cpu.max", 4096), " \n");
      if (f.size() == 2) quota = parse_count(f[0]), period = parse_count(f[1]);
    } else {
      const std::vector<std::string> q = split_fields(read_text_file(dir + "/cpu.cfs_quota_us", 4096), " \n");
      const std::vector<std::string> p = split_fields(read_text_file(dir + "/cpu.cfs_period_us", 4096), " \n");
      if (q.size() == 1 && p.size() == 1) quota = parse_count(q[0]), period = parse_count(p[0]);
    }
    if (quota <= 0 || period <= 0) return 0;  // "max", -1, 0 or unreadable
    return std::max(1LL, quota / period);
  };
  long long best = 0;
  for (const std::string& line : split_fields(cgroup, "\n")) {
    // hierarchy-id:controllers:path (the path may itself hold ':')
    const std::size_t c1 = line.find(':'), c2 = c1 == std::string::npos ? c1 : line.find(':', c1 + 1);
    if (c2 == std::string::npos) continue;
    const std::string id = line.substr(0, c1), controllers = line.substr(c1 + 1, c2 - c1 - 1);
    std::string path = line.substr(c2 + 1);
    const bool is_v2 = id == "0" && controllers.empty();
    const std::vector<std::string> cs = split_fields(controllers, ",");
    if (!is_v2 && std::find(cs.begin(), cs.end(), "cpu") == cs.end()) continue;
    for (const Mount& mt : is_v2 ? v2 : v1) {
      // the cgroup's folder: its path below the mount's hierarchy root (a container that sees
      // its own cgroup as "/" has the mount's root at its cgroup)
      std::string rel = path;
      if (mt.hierarchy_root != "/" && rel.compare(0, mt.hierarchy_root.size(), mt.hierarchy_root) == 0)
        rel = rel.substr(mt.hierarchy_root.size());
      if (rel.find("/..") != std::string::npos) continue;  // never walk out of the mount
      const std::string base = root + mt.point;
      // from the process's cgroup up to the mount point: the tightest limit on the way
      for (std::string dir = rel;;) {
        while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
        const long long l = limit_in(base + (dir == "/" ? "" : dir), is_v2);
        if (l > 0) best = best == 0 ? l : std::min(best, l);
        if (dir.empty() || dir == "/") break;
        const std::size_t slash = dir.rfind('/');
        dir = slash == std::string::npos || slash == 0 ? "/" : dir.substr(0, slash);
      }
    }
  }
  return static_cast<int>(std::min<long long>(best, 1 << 20));
}

/// The CPUs in this process's affinity mask, or 0 when it cannot be read.
inline int affinity_cpus() {
#if defined(__linux__)
  for (int ncpu = 1024; ncpu <= (1 << 20); ncpu *= 4) {  // machines with more CPUs than cpu_set_t holds
    cpu_set_t* set = CPU_ALLOC(ncpu);
    if (!set) return 0;
    const std::size_t size = CPU_ALLOC_SIZE(ncpu);
    CPU_ZERO_S(size, set);
    const int rc = sched_getaffinity(0, size, set);
    const int n = rc == 0 ? CPU_COUNT_S(size, set) : 0;
    CPU_FREE(set);
    if (rc == 0) return n;
  }
#endif
  return 0;
}

}  // namespace detail

/// The cores this process may use (>= 1): its CPU affinity, at most its cgroup's CPU quota
/// (floor of quota / period). Read afresh on every call.
inline int available_cores() {
  int n = detail::affinity_cpus();
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
#if defined(__linux__)
  const int quota = detail::cgroup_cpu_limit(detail::read_text_file("/proc/self/mountinfo"),
                                             detail::read_text_file("/proc/self/cgroup"));
  if (quota > 0) n = std::min(n, quota);
#endif
  return std::clamp(n, 1, kMaxThreads);
}

/// The thread count ichkit starts with (and `set_num_threads(0)` returns to): the first number
/// of $OMP_NUM_THREADS where that is a positive integer (as Dask's workers and batch scripts
/// set it; at most kMaxThreads), otherwise available_cores().
inline int default_num_threads() {
  if (const char* env = std::getenv("OMP_NUM_THREADS")) {
    const std::vector<std::string> f = detail::split_fields(env, ", \t");
    const long long n = f.empty() ? -1 : detail::parse_count(f[0]);
    if (n >= 1) return static_cast<int>(std::min<long long>(n, kMaxThreads));
  }
  return available_cores();
}

}  // namespace ichkit
