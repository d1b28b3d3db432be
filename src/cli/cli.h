#pragma once
// Shared pieces of the `ichkit` command: global flags, the terminal progress bar, output helpers.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ichkit/core/progress.h"
#include "ichkit/explain/gradcam.h"

namespace ichkit::cli {

struct Globals {
  int threads = 0;     // 0 = all cores
  bool quiet = false;  // no progress, no informational lines
  bool json = false;   // machine-readable output on stdout
};

/// A subcommand registers itself and returns the function that runs it.
using Runner = std::function<int()>;
Runner add_info(CLI::App& app, Globals& g);
Runner add_convert(CLI::App& app, Globals& g);
Runner add_phantom(CLI::App& app, Globals& g);
Runner add_train(CLI::App& app, Globals& g);
Runner add_evaluate(CLI::App& app, Globals& g);
Runner add_predict(CLI::App& app, Globals& g);
Runner add_explain(CLI::App& app, Globals& g);
Runner add_demo(CLI::App& app, Globals& g);

/// A one-line progress bar on stderr, drawn only when stderr is a terminal and not --quiet.
class TerminalProgress final : public ProgressReporter {
public:
  explicit TerminalProgress(bool enabled);
  void begin(const std::string& task, std::int64_t total) override;
  void advance(std::int64_t steps, const std::string& message) override;
  void end() override;
  /// Print a line on stderr (always, also when the bar is off) without breaking the bar.
  void note(const std::string& line);
  /// note() a scan that failed as "ichkit: error: PATH: why", the path once (a reader's
  /// message already names its file).
  void scan_failed(const std::string& path, const std::string& why);

private:
  void draw(bool force);
  bool enabled_;
  std::mutex m_;
  std::string task_, message_;
  std::int64_t total_ = 0, done_ = 0;
  std::chrono::steady_clock::time_point start_, last_;
};

/// The default model file: $ICHKIT_MODEL (an error when it is not a file), else
/// share/ichkit/models/default.ichkit beside the
/// installed command, else the source tree's python/ichkit/models/default.ichkit; InvalidArgument
/// naming the places looked at when there is none.
std::string default_model_path();

/// A scan path's name without extensions ("dir/case.nii.gz" -> "case", "dicom_folder/" -> "dicom_folder").
std::string stem_of(const std::string& path);
/// Write a map's normalised heatmap as <base>_heatmap.nii.gz and, with `png`, the
/// <base>_montage.png and <base>_ortho.png overlays (lesion outline when not empty); returns the paths.
std::vector<std::string> write_heatmap(const std::string& base, const Volume<float>& scan, const explain::Heatmap& h,
                                       const Volume<std::uint8_t>& lesion, bool png);

/// Format a number with fixed decimals.
std::string fixed(double v, int decimals);

}  // namespace ichkit::cli
