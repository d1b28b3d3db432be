#pragma once
// A self-contained HTML report (no scripts, no external files): tables, inline SVG plots
// (scatter with identity line, Bland-Altman, ROC) and PNG images embedded as data URIs.
#include <string>
#include <vector>

namespace ichkit::cli::report {

/// One series of points, drawn in `colour` (CSS) and named in the legend.
struct Series {
  std::string name, colour;
  std::vector<double> x, y;
  bool line = false;  ///< connect the points (ROC curves) instead of dots
};

struct Axes {
  std::string title, x_label, y_label;
  bool identity = false;          ///< draw y = x (predicted vs true)
  std::vector<double> h_lines;    ///< horizontal reference lines (Bland-Altman bias and limits)
  bool unit_square = false;       ///< both axes [0, 1] (ROC), with the chance diagonal
};

/// An SVG plot (about 420 x 320 px).
std::string svg_plot(const std::vector<Series>& series, const Axes& axes);

/// "&", "<", ">", quotes escaped.
std::string escape(const std::string& text);
/// A PNG's bytes as an <img> with a base64 data URI.
std::string img_png(const std::string& png_bytes, const std::string& alt, int max_width_px = 0);

/// A page: title, CSS, body.
std::string page(const std::string& title, const std::string& body);

}  // namespace ichkit::cli::report
