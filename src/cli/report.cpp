// HTML report pieces: inline SVG plots and embedded PNGs.
#include "report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace ichkit::cli::report {
namespace {

std::string num(double v, int decimals = 1) {
  char b[48];
  std::snprintf(b, sizeof b, "%.*f", decimals, v);
  return b;
}

/// About five round tick values covering [lo, hi].
std::vector<double> ticks(double lo, double hi) {
  const double span = hi - lo;
  if (!(span > 0)) return {lo};
  const double raw = span / 5;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step) * step; v <= hi + 1e-9 * span; v += step) t.push_back(std::abs(v) < 1e-12 * span ? 0.0 : v);
  return t;
}

}  // namespace

std::string escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&#39;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string svg_plot(const std::vector<Series>& series, const Axes& ax) {
  const double W = 420, H = 320, L = 58, R = 12, T = 30, B = 46;
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const Series& s : series)
    for (std::size_t i = 0; i < s.x.size() && i < s.y.size(); ++i)
      if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) {
        x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]);
        y0 = std::min(y0, s.y[i]), y1 = std::max(y1, s.y[i]);
      }
  for (double h : ax.h_lines) y0 = std::min(y0, h), y1 = std::max(y1, h);
  if (!std::isfinite(x0)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (ax.identity) x0 = y0 = std::min(x0, y0), x1 = y1 = std::max(x1, y1);
  if (ax.unit_square) x0 = y0 = 0, x1 = y1 = 1;
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y1 = y0 + 1;
  if (!ax.unit_square) {  // 4 % margins
    const double mx = 0.04 * (x1 - x0), my = 0.04 * (y1 - y0);
    x0 -= mx, x1 += mx, y0 -= my, y1 += my;
  }
  auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto py = [&](double y) { return H - B - (y - y0) / (y1 - y0) * (H - T - B); };
  std::string o = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(W, 0) + "\" height=\"" + num(H, 0) +
                  "\" viewBox=\"0 0 " + num(W, 0) + " " + num(H, 0) + "\" font-family=\"sans-serif\" font-size=\"11\">";
  o += "<text x=\"" + num(W / 2, 0) + "\" y=\"18\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">" + escape(ax.title) + "</text>";
  o += "<rect x=\"" + num(L) + "\" y=\"" + num(T) + "\" width=\"" + num(W - L - R) + "\" height=\"" + num(H - T - B) +
       "\" fill=\"none\" stroke=\"#444\"/>";
  for (double t : ticks(x0, x1))
    o += "<line x1=\"" + num(px(t)) + "\" x2=\"" + num(px(t)) + "\" y1=\"" + num(H - B) + "\" y2=\"" + num(H - B + 4) +
         "\" stroke=\"#444\"/><text x=\"" + num(px(t)) + "\" y=\"" + num(H - B + 16) + "\" text-anchor=\"middle\">" +
         num(t, std::abs(x1 - x0) < 5 ? 2 : 0) + "</text>";
  for (double t : ticks(y0, y1))
    o += "<line x1=\"" + num(L - 4) + "\" x2=\"" + num(L) + "\" y1=\"" + num(py(t)) + "\" y2=\"" + num(py(t)) +
         "\" stroke=\"#444\"/><text x=\"" + num(L - 6) + "\" y=\"" + num(py(t) + 4) + "\" text-anchor=\"end\">" +
         num(t, std::abs(y1 - y0) < 5 ? 2 : 0) + "</text>";
  o += "<text x=\"" + num(L + (W - L - R) / 2) + "\" y=\"" + num(H - 8) + "\" text-anchor=\"middle\">" + escape(ax.x_label) + "</text>";
  o += "<text transform=\"translate(14 " + num(T + (H - T - B) / 2) + ") rotate(-90)\" text-anchor=\"middle\">" + escape(ax.y_label) + "</text>";
  if (ax.identity || ax.unit_square) {
    const double a = std::max(x0, y0), b = std::min(x1, y1);
    o += "<line x1=\"" + num(px(a)) + "\" y1=\"" + num(py(a)) + "\" x2=\"" + num(px(b)) + "\" y2=\"" + num(py(b)) +
         "\" stroke=\"#999\" stroke-dasharray=\"4 3\"/>";
  }
  for (double h : ax.h_lines)
    o += "<line x1=\"" + num(L) + "\" x2=\"" + num(W - R) + "\" y1=\"" + num(py(h)) + "\" y2=\"" + num(py(h)) +
         "\" stroke=\"#999\" stroke-dasharray=\"4 3\"/><text x=\"" + num(W - R - 2) + "\" y=\"" + num(py(h) - 3) +
         "\" text-anchor=\"end\" fill=\"#666\">" + num(h, 2) + "</text>";
  int legend = 0;
  for (const Series& s : series) {
    if (s.line) {
      std::string pts;
      for (std::size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) pts += num(px(s.x[i]), 2) + "," + num(py(s.y[i]), 2) + " ";
      o += "<polyline fill=\"none\" stroke=\"" + escape(s.colour) + "\" stroke-width=\"2\" points=\"" + pts + "\"/>";
    } else {
      for (std::size_t i = 0; i < s.x.size() && i < s.y.size(); ++i)
        if (std::isfinite(s.x[i]) && std::isfinite(s.y[i]))
          o += "<circle cx=\"" + num(px(s.x[i]), 2) + "\" cy=\"" + num(py(s.y[i]), 2) + "\" r=\"2.6\" fill=\"" + escape(s.colour) +
               "\" fill-opacity=\"0.7\"/>";
    }
    if (!s.name.empty()) {
      const double ly = T + 14 + 15 * legend++;
      o += "<rect x=\"" + num(L + 8) + "\" y=\"" + num(ly - 8) + "\" width=\"10\" height=\"10\" fill=\"" + escape(s.colour) + "\"/>";
      o += "<text x=\"" + num(L + 22) + "\" y=\"" + num(ly + 1) + "\">" + escape(s.name) + "</text>";
    }
  }
  return o + "</svg>";
}

std::string img_png(const std::string& bytes, const std::string& alt, int max_width_px) {
  static const char* tab = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string b64;
  b64.reserve((bytes.size() + 2) / 3 * 4);
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    const unsigned a = static_cast<unsigned char>(bytes[i]);
    const unsigned b = i + 1 < bytes.size() ? static_cast<unsigned char>(bytes[i + 1]) : 0;
    const unsigned c = i + 2 < bytes.size() ? static_cast<unsigned char>(bytes[i + 2]) : 0;
    const unsigned v = (a << 16) | (b << 8) | c;
    b64 += tab[(v >> 18) & 63];
    b64 += tab[(v >> 12) & 63];
    b64 += i + 1 < bytes.size() ? tab[(v >> 6) & 63] : '=';
    b64 += i + 2 < bytes.size() ? tab[v & 63] : '=';
  }
  return "<img alt=\"" + escape(alt) + "\" src=\"data:image/png;base64," + b64 + "\"" +
         (max_width_px > 0 ? " style=\"max-width:" + std::to_string(max_width_px) + "px;width:100%\"" : std::string()) + "/>";
}

std::string page(const std::string& title, const std::string& body) {
  return "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + escape(title) +
         "</title><style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
         "th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}.plots{display:flex;flex-wrap:wrap;gap:12px}"
         ".note{background:#fff6e0;border-left:4px solid #e0a000;padding:8px 12px}figure{margin:1em 0}"
         "figcaption{color:#555;font-size:90%}</style></head><body>\n" +
         body + "\n</body></html>\n";
}

}  // namespace ichkit::cli::report
