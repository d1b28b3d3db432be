/// \file overlay.cpp
/// Heatmap overlays as PNG (libpng). See ichkit/explain/overlay.h.
#include "ichkit/explain/overlay.h"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <functional>

#include "colormap.h"
#include "ichkit/core/error.h"
#include "ichkit/io/atomic_file.h"
#include "ichkit/preprocess/reorient.h"

namespace ichkit::explain {
namespace {

/// Trilinear sample at a continuous voxel index, clamped to the grid.
float sample(const Volume<float>& v, double i, double j, double k) {
  const auto& s = v.shape();
  auto split = [](double x, std::size_t n, std::size_t& a, double& f) {
    x = std::clamp(x, 0.0, double(n - 1));
    a = std::min<std::size_t>(static_cast<std::size_t>(x), n > 1 ? n - 2 : 0);
    f = n > 1 ? x - double(a) : 0.0;
  };
  std::size_t i0, j0, k0;
  double fi, fj, fk;
  split(i, s[0], i0, fi);
  split(j, s[1], j0, fj);
  split(k, s[2], k0, fk);
  const std::size_t di = s[0] > 1 ? 1 : 0, dj = s[1] > 1 ? s[0] : 0, dk = s[2] > 1 ? s[0] * s[1] : 0;
  const float* p = v.data() + i0 + s[0] * (j0 + s[1] * k0);
  const double c00 = p[0] * (1 - fi) + p[di] * fi, c10 = p[dj] * (1 - fi) + p[dj + di] * fi;
  const double c01 = p[dk] * (1 - fi) + p[dk + di] * fi, c11 = p[dk + dj] * (1 - fi) + p[dk + dj + di] * fi;
  return static_cast<float>((c00 * (1 - fj) + c10 * fj) * (1 - fk) + (c01 * (1 - fj) + c11 * fj) * fk);
}

bool label_at(const Volume<std::uint8_t>& v, double i, double j, double k) {
  const auto& s = v.shape();
  const long a = std::lround(i), b = std::lround(j), c = std::lround(k);
  if (a < 0 || b < 0 || c < 0 || a >= long(s[0]) || b >= long(s[1]) || c >= long(s[2])) return false;
  return v.data()[std::size_t(a) + s[0] * (std::size_t(b) + s[1] * std::size_t(c))] != 0;
}

/// The three volumes on one RAS grid.
struct Scene {
  Volume<float> scan, heat;
  Volume<std::uint8_t> outline;
  Eigen::Vector3d spacing;
  double pixel = 1;
  OverlayOptions o;
};

Scene make_scene(const Volume<float>& scan, const Volume<float>& heatmap, const Volume<std::uint8_t>& outline,
                 const OverlayOptions& o) {
  if (scan.size() == 0) throw InvalidArgument("overlay: empty scan");
  if (heatmap.size() && !heatmap.same_grid(scan, 1e-4))
    throw GeometryError("overlay: the heatmap is not on the scan's grid (use Heatmap::normalized, which is)");
  if (outline.size() && !outline.same_grid(scan, 1e-4)) throw GeometryError("overlay: the outline is not on the scan's grid");
  if (!(o.width > 0) || !std::isfinite(o.width) || !std::isfinite(o.level))
    throw InvalidArgument("overlay: the window needs a finite level and a finite width > 0");
  if (o.slices < 1 || o.columns < 1) throw InvalidArgument("overlay: slices and columns must be >= 1");
  if (!(o.pixel_mm >= 0) || !std::isfinite(o.pixel_mm)) throw InvalidArgument("overlay: pixel_mm must be finite and >= 0");
  if (!(o.alpha >= 0 && o.alpha <= 1)) throw InvalidArgument("overlay: alpha must be within [0, 1]");
  if (!(o.threshold >= 0 && o.threshold <= 1)) throw InvalidArgument("overlay: threshold must be within [0, 1]");
  Scene s;
  s.o = o;
  s.scan = preprocess::reorient(scan, "RAS");
  if (heatmap.size()) s.heat = preprocess::reorient(heatmap, "RAS");
  if (outline.size()) s.outline = preprocess::reorient(outline, "RAS");
  s.spacing = s.scan.spacing();
  s.pixel = o.pixel_mm > 0 ? o.pixel_mm : std::min(s.spacing[0], s.spacing[1]);
  // keep images a sane size whatever the spacing
  const double extent = std::max({s.spacing[0] * s.scan.ni(), s.spacing[1] * s.scan.nj(), s.spacing[2] * s.scan.nk()});
  if (extent / s.pixel > 1024) s.pixel = extent / 1024;
  return s;
}

/// One panel: pixel (c, r) -> continuous RAS voxel index.
struct Panel {
  int w = 0, h = 0;
  std::function<Eigen::Vector3d(double, double)> at;
};

void draw(const Scene& s, const Panel& p, Image& img, int x0, int y0) {
  const double lo = s.o.level - s.o.width / 2;
  std::vector<std::uint8_t> lab;
  if (s.outline.size()) lab.resize(std::size_t(p.w) * std::size_t(p.h));
  for (int r = 0; r < p.h; ++r)
    for (int c = 0; c < p.w; ++c) {
      const Eigen::Vector3d q = p.at(c + 0.5, r + 0.5);
      const double hu = sample(s.scan, q[0], q[1], q[2]);
      const double g = std::isnan(hu) ? 0.0 : std::clamp((hu - lo) / s.o.width, 0.0, 1.0) * 255.0;  // NaN: black
      double rgb[3] = {g, g, g};
      if (s.heat.size()) {
        const float hv = sample(s.heat, q[0], q[1], q[2]);
        const float h = std::isnan(hv) ? 0.0f : std::clamp(hv, 0.0f, 1.0f);  // NaN: not drawn
        if (h >= s.o.threshold && h > 0) {
          const std::uint8_t* col = detail::kInferno[std::min(255, int(h * 255.0f + 0.5f))];
          const double a = s.o.alpha * h;
          for (int ch = 0; ch < 3; ++ch) rgb[ch] = (1 - a) * rgb[ch] + a * col[ch];
        }
      }
      if (!lab.empty()) lab[std::size_t(r) * p.w + c] = label_at(s.outline, q[0], q[1], q[2]);
      std::uint8_t* px = &img.rgb[(std::size_t(y0 + r) * img.width + std::size_t(x0 + c)) * 3];
      for (int ch = 0; ch < 3; ++ch) px[ch] = static_cast<std::uint8_t>(std::lround(rgb[ch]));
    }
  if (lab.empty()) return;
  for (int r = 0; r < p.h; ++r)
    for (int c = 0; c < p.w; ++c) {
      if (!lab[std::size_t(r) * p.w + c]) continue;
      const bool edge = c == 0 || r == 0 || c == p.w - 1 || r == p.h - 1 || !lab[std::size_t(r) * p.w + c - 1] ||
                        !lab[std::size_t(r) * p.w + c + 1] || !lab[std::size_t(r - 1) * p.w + c] || !lab[std::size_t(r + 1) * p.w + c];
      if (!edge) continue;
      std::uint8_t* px = &img.rgb[(std::size_t(y0 + r) * img.width + std::size_t(x0 + c)) * 3];
      px[0] = 0, px[1] = 255, px[2] = 255;
    }
}

int pixels(double n, double spacing, double pixel) { return std::max(1, int(std::lround(n * spacing / pixel))); }

// radiological display of a RAS grid: the image's x runs from the patient's right (high i) to
// left, its y from anterior (high j) or superior (high k) down
double from_high(double px, std::size_t n, double spacing, double pixel) { return (double(n) * spacing - px * pixel) / spacing - 0.5; }

Panel axial(const Scene& s, double k) {
  const auto& v = s.scan;
  Panel p{pixels(double(v.ni()), s.spacing[0], s.pixel), pixels(double(v.nj()), s.spacing[1], s.pixel), {}};
  p.at = [&s, k](double c, double r) {
    return Eigen::Vector3d(from_high(c, s.scan.ni(), s.spacing[0], s.pixel), from_high(r, s.scan.nj(), s.spacing[1], s.pixel), k);
  };
  return p;
}
Panel coronal(const Scene& s, double j) {
  const auto& v = s.scan;
  Panel p{pixels(double(v.ni()), s.spacing[0], s.pixel), pixels(double(v.nk()), s.spacing[2], s.pixel), {}};
  p.at = [&s, j](double c, double r) {
    return Eigen::Vector3d(from_high(c, s.scan.ni(), s.spacing[0], s.pixel), j, from_high(r, s.scan.nk(), s.spacing[2], s.pixel));
  };
  return p;
}
Panel sagittal(const Scene& s, double i) {
  const auto& v = s.scan;
  Panel p{pixels(double(v.nj()), s.spacing[1], s.pixel), pixels(double(v.nk()), s.spacing[2], s.pixel), {}};
  p.at = [&s, i](double c, double r) {
    return Eigen::Vector3d(i, from_high(c, s.scan.nj(), s.spacing[1], s.pixel), from_high(r, s.scan.nk(), s.spacing[2], s.pixel));
  };
  return p;
}

Image blank(int w, int h) {
  Image img;
  img.width = w;
  img.height = h;
  img.rgb.assign(std::size_t(w) * std::size_t(h) * 3, 0);
  return img;
}

/// Maps a voxel index of the caller's grid onto the RAS grid of the scene.
Eigen::Vector3d to_ras_index(const Volume<float>& original, const Scene& s, const Shape3& ijk) {
  const Eigen::Vector3d w = original.geometry().index_to_world(Eigen::Vector3d(double(ijk[0]), double(ijk[1]), double(ijk[2])));
  return s.scan.geometry().world_to_index(w);
}

}  // namespace

Image render_montage(const Volume<float>& scan, const Volume<float>& heatmap, const Volume<std::uint8_t>& outline,
                     const OverlayOptions& options) {
  const Scene s = make_scene(scan, heatmap, outline, options);
  const std::size_t nk = s.scan.nk();
  // the head's axial extent: slices with voxels above -300 HU
  std::size_t k_lo = nk, k_hi = 0;
  const std::size_t plane = s.scan.ni() * s.scan.nj();
  for (std::size_t k = 0; k < nk; ++k) {
    const float* p = s.scan.data() + k * plane;
    if (std::any_of(p, p + plane, [](float v) { return v > -300; })) k_lo = std::min(k_lo, k), k_hi = k;
  }
  if (k_lo > k_hi) k_lo = 0, k_hi = nk - 1;
  const int n = std::min<int>(options.slices, int(k_hi - k_lo + 1));
  const int cols = std::min(options.columns, n), rows = (n + cols - 1) / cols;
  const Panel first = axial(s, 0);
  Image img = blank(first.w * cols, first.h * rows);
  for (int q = 0; q < n; ++q) {
    const double k = n == 1 ? double(k_lo + k_hi) / 2 : double(k_lo) + double(k_hi - k_lo) * q / (n - 1);
    const int slice = int(std::lround(k));
    // slices are shown inferior to superior, left to right, top to bottom
    draw(s, axial(s, slice), img, (q % cols) * first.w, (q / cols) * first.h);
  }
  return img;
}

Image render_orthogonal(const Volume<float>& scan, const Volume<float>& heatmap, const Volume<std::uint8_t>& outline,
                        const OverlayOptions& options, std::optional<Shape3> through) {
  const Scene s = make_scene(scan, heatmap, outline, options);
  Shape3 at{scan.ni() / 2, scan.nj() / 2, scan.nk() / 2};
  if (through) {
    at = *through;
    if (at[0] >= scan.ni() || at[1] >= scan.nj() || at[2] >= scan.nk()) throw InvalidArgument("overlay: the point lies outside the scan");
  } else if (heatmap.size()) {
    const std::size_t x = std::size_t(std::max_element(heatmap.data(), heatmap.data() + heatmap.size()) - heatmap.data());
    at = {x % scan.ni(), (x / scan.ni()) % scan.nj(), x / (scan.ni() * scan.nj())};
  }
  const Eigen::Vector3d q = to_ras_index(scan, s, at);
  const Eigen::Vector3d r(std::round(q[0]), std::round(q[1]), std::round(q[2]));
  const Panel a = axial(s, r[2]), c = coronal(s, r[1]), g = sagittal(s, r[0]);
  const int gap = 4;
  Image img = blank(a.w + c.w + g.w + 2 * gap, std::max({a.h, c.h, g.h}));
  draw(s, a, img, 0, 0);
  draw(s, c, img, a.w + gap, 0);
  draw(s, g, img, a.w + c.w + 2 * gap, 0);
  return img;
}

std::string encode_png(const Image& image) {
  if (image.width <= 0 || image.height <= 0 || image.rgb.size() != std::size_t(image.width) * std::size_t(image.height) * 3)
    throw InvalidArgument("encode_png: the image's size does not match its pixels");
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  if (!png) throw ResourceError("encode_png: libpng could not start");
  png_infop info = png_create_info_struct(png);
  std::string out;
  if (!info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, info ? &info : nullptr);
    throw IoError("encode_png: libpng failed");
  }
  png_set_write_fn(
      png, &out, [](png_structp p, png_bytep data, png_size_t n) { static_cast<std::string*>(png_get_io_ptr(p))->append(reinterpret_cast<const char*>(data), n); },
      nullptr);
  png_set_IHDR(png, info, png_uint_32(image.width), png_uint_32(image.height), 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_set_compression_level(png, 6);
  png_write_info(png, info);
  for (int r = 0; r < image.height; ++r)
    png_write_row(png, const_cast<png_bytep>(image.rgb.data() + std::size_t(r) * std::size_t(image.width) * 3));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

void write_png(const std::string& path, const Image& image) { io::write_file_atomic(path, encode_png(image)); }

}  // namespace ichkit::explain
