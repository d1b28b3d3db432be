// The `ichkit` command. Exit codes: 0 success, 1 failure (one clear line on stderr),
// 2 usage error.
#include <filesystem>
#include <unistd.h>

#include <cmath>
#include <iostream>

#include "cli.h"
#include "ichkit/core/error.h"
#include "ichkit/core/runtime.h"
#include "ichkit/core/threading.h"
#include "ichkit/core/version.h"

namespace ichkit::cli {

TerminalProgress::TerminalProgress(bool enabled) : enabled_(enabled && ::isatty(STDERR_FILENO)) {}

void TerminalProgress::begin(const std::string& task, std::int64_t total) {
  std::lock_guard<std::mutex> lock(m_);
  task_ = task;
  total_ = total;
  done_ = 0;
  message_.clear();
  start_ = last_ = std::chrono::steady_clock::now();
  draw(true);
}

void TerminalProgress::advance(std::int64_t steps, const std::string& message) {
  std::lock_guard<std::mutex> lock(m_);
  done_ += steps;
  if (!message.empty()) message_ = message;
  draw(false);
}

void TerminalProgress::end() {
  std::lock_guard<std::mutex> lock(m_);
  draw(true);
  if (enabled_) std::fputs("\n", stderr);
  task_.clear();
}

void TerminalProgress::note(const std::string& line) {
  std::lock_guard<std::mutex> lock(m_);
  std::fputs(((enabled_ ? "\r\033[K" : "") + line + "\n").c_str(), stderr);
  if (enabled_ && !task_.empty()) draw(true);
  std::fflush(stderr);
}

void TerminalProgress::scan_failed(const std::string& path, const std::string& why) {
  note("ichkit: error: " + (why.find(path) == std::string::npos ? path + ": " : "") + why);
}

void TerminalProgress::draw(bool force) {
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  if (!force && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  std::string line = "\r" + task_ + " ";
  if (total_ > 0) {
    const int width = 30;
    const double frac = std::min(1.0, double(done_) / double(total_));
    const int filled = static_cast<int>(frac * width);
    line += "[" + std::string(filled, '#') + std::string(width - filled, '.') + "] " + std::to_string(done_) + "/" +
            std::to_string(total_);
    if (done_ > 0 && done_ < total_) line += " ETA " + fixed(elapsed / done_ * (total_ - done_), 0) + " s";
  } else {
    line += std::to_string(done_);
  }
  line += "  " + fixed(elapsed, 1) + " s";
  if (!message_.empty()) line += "  " + message_;
  line += "\033[K";
  std::fputs(line.c_str(), stderr);
  std::fflush(stderr);
}

std::string default_model_path() {
  namespace fs = std::filesystem;
  std::vector<fs::path> tried;
  if (const char* env = std::getenv("ICHKIT_MODEL"); env && *env) {
    if (fs::is_regular_file(env)) return env;
    throw InvalidArgument(std::string("$ICHKIT_MODEL names '") + env + "', which is not a file");
  }
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) tried.push_back(exe.parent_path().parent_path() / "share" / "ichkit" / "models" / "default.ichkit");
#ifdef ICHKIT_SOURCE_DIR
  tried.push_back(fs::path(ICHKIT_SOURCE_DIR) / "python" / "ichkit" / "models" / "default.ichkit");
#endif
  std::string where;
  for (const fs::path& p : tried) {
    if (fs::is_regular_file(p)) return p.string();
    where += (where.empty() ? "" : ", ") + p.string();
  }
  throw InvalidArgument("no --model given and no default model found (looked at " + where + ")");
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

}  // namespace ichkit::cli

int main(int argc, char** argv) {
  using namespace ichkit::cli;
  CLI::App app{"ichkit: hematoma volume, prognosis and Grad-CAM for head CT with intracerebral hemorrhage.\n"
               "Synthetic-data models are not for clinical use.",
               "ichkit"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("ichkit ") + ichkit::version());
  Globals g;
  app.add_option("--threads", g.threads, "Threads to use (default: $OMP_NUM_THREADS, else the cores this process may use)")->check(CLI::Range(0, ichkit::kMaxThreads));
  app.add_flag("-q,--quiet", g.quiet, "No progress bars or informational output");
  app.footer("Run 'ichkit SUBCOMMAND --help' for the options and examples of each subcommand.");

  std::vector<std::pair<std::string, Runner>> commands;
  commands.push_back({"info", add_info(app, g)});
  commands.push_back({"convert", add_convert(app, g)});
  commands.push_back({"phantom", add_phantom(app, g)});
  commands.push_back({"train", add_train(app, g)});
  commands.push_back({"evaluate", add_evaluate(app, g)});
  commands.push_back({"predict", add_predict(app, g)});
  commands.push_back({"explain", add_explain(app, g)});
  commands.push_back({"demo", add_demo(app, g)});

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  try {
    ichkit::init_runtime();
    ichkit::set_num_threads(g.threads);
    for (auto& [name, run] : commands)
      if (app.got_subcommand(name)) return run();
    return 2;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    for (char& c : msg)
      if (c == '\n') c = ' ';
    std::cerr << "ichkit: error: " << msg << "\n";
    return 1;
  }
}
