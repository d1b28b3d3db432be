#pragma once
/// \file progress.h
/// Progress reporting interface. Long operations (cohort generation, training, cohort
/// inference) report through it; the CLI draws a progress bar on a terminal and Python
/// adapts it to tqdm. Implementations must be thread-safe for `advance`.
#include <cstdint>
#include <memory>
#include <string>

namespace ichkit {

class ProgressReporter {
public:
  virtual ~ProgressReporter() = default;
  /// A task with `total` steps (0 if unknown) starts.
  virtual void begin(const std::string& task, std::int64_t total) = 0;
  /// `steps` more steps are done; `message` is an optional short status (e.g. "loss 0.31").
  virtual void advance(std::int64_t steps = 1, const std::string& message = {}) = 0;
  /// The task ended (normally or not).
  virtual void end() = 0;
};

/// A reporter that ignores everything: the default.
class NullProgress final : public ProgressReporter {
public:
  void begin(const std::string&, std::int64_t) override {}
  void advance(std::int64_t, const std::string&) override {}
  void end() override {}
};

/// Calls begin() on construction and end() on destruction, so a task that throws still ends.
class ProgressScope {
public:
  ProgressScope(ProgressReporter* p, const std::string& task, std::int64_t total) : p_(p) {
    if (p_) p_->begin(task, total);
  }
  ~ProgressScope() {
    if (p_) p_->end();
  }
  void advance(std::int64_t steps = 1, const std::string& message = {}) {
    if (p_) p_->advance(steps, message);
  }
  ProgressScope(const ProgressScope&) = delete;
  ProgressScope& operator=(const ProgressScope&) = delete;

private:
  ProgressReporter* p_;
};

}  // namespace ichkit
