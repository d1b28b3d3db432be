#pragma once
/// \file fault.h
/// Crash-test fault points (internal). The crash-safety tests need to kill a process at an
/// exact place, such as in the middle of writing a checkpoint, which a timer cannot hit reliably.
/// With $ICHKIT_FAULT set to "NAME" or "NAME@K", the K-th time (default: the first) the process
/// reaches fault point NAME, fault_due(NAME) returns true and the caller then kills itself
/// with SIGKILL at that point (after doing the partial work that the test wants
/// interrupted). Without the variable, a fault point costs one load and a compare.
///
/// Points: "train.step" (after an optimiser step), "atomic.write" (halfway through the bytes
/// of an AtomicFile, before it is renamed).
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <string>

namespace ichkit::detail {

inline bool fault_due(const char* name) {
  struct Spec {
    std::string name;
    long at = 1;
    std::atomic<long> seen{0};
    Spec() {
      const char* e = std::getenv("ICHKIT_FAULT");
      if (!e || !*e) return;
      name = e;
      const auto a = name.find('@');
      if (a != std::string::npos) {
        at = std::strtol(name.c_str() + a + 1, nullptr, 10);
        name.resize(a);
      }
    }
  };
  static Spec spec;
  if (spec.name.empty() || spec.name != name) return false;
  return spec.seen.fetch_add(1) + 1 == spec.at;
}

/// The process ends here, as `kill -9` would end it: no destructors, no flushing.
[[noreturn]] inline void fault_kill() {
  std::raise(SIGKILL);
  std::abort();
}

}  // namespace ichkit::detail
