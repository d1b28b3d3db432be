#pragma once
/// \file components.h
/// 3D connected components, hole filling, Euclidean distance transform and binary morphology
/// with a ball in millimetres, on masks (header-only).
///
/// Every function takes a `Volume<T>` of any arithmetic voxel type; a voxel is foreground when
/// it is non-zero. Results are new volumes on the same grid (same shape and geometry).
///
/// Connectivity: 6, 18 or 26 in 3D (face, face+edge, face+edge+corner neighbours); 4 or 8
/// means 2D connectivity inside each k-slice (voxels of different slices are never connected).
///
/// Millimetres: the voxel size along i, j and k is the norm of the affine's columns
/// (`Geometry::spacing()`), and distances are sqrt((di*si)^2 + (dj*sj)^2 + (dk*sk)^2). Thick
/// slices (0.45 x 0.45 x 5 mm) are handled exactly; on a sheared (gantry-tilted) grid the
/// small cross term of the shear is ignored.
///
/// Algorithms: components are labelled on runs of foreground voxels along i with a union-find
/// (rows of a k-slab in parallel, slab seams merged afterwards); labels are numbered in raster
/// order of each component's first voxel, as scipy.ndimage.label numbers them. Ball
/// morphology takes the cheaper of two exact methods: on runs (each output row is the union of
/// the runs of the ball's rows, widened by the ball's reach along i - anatomy has a few runs
/// per row), or by thresholding a separable squared Euclidean distance (exact 1D distance along
/// i, then a min-plus pass with the window of the ball along j and k, vectorised across i -
/// better for noise); the full distance transform is Felzenszwalb & Huttenlocher's lower
/// envelope of parabolas. All kernels
/// run on ichkit::parallel_for and are safe to call from several threads at once.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "ichkit/core/error.h"
#include "ichkit/core/threading.h"
#include "ichkit/core/volume.h"

namespace ichkit::quant {

/// Labels of the connected components of a mask.
struct ComponentLabels {
  /// 0 on background, 1..count() on the components, numbered in raster order (i fastest)
  /// of each component's first voxel.
  Volume<std::int32_t> labels;
  /// sizes[c] = voxels of component c (c = 1..count()); sizes[0] = background voxels.
  std::vector<std::size_t> sizes;
  std::size_t count() const { return sizes.empty() ? 0 : sizes.size() - 1; }
};

namespace detail {

/// A run of voxels [i0, i1) in one row (j, k).
struct Run {
  std::int32_t i0, i1;
};

/// Runs of the voxels of a mask that are foreground (`want` = true) or background (false),
/// row by row; row r = j + nj * k holds runs[first[r] .. first[r + 1]).
struct RunSet {
  std::size_t ni = 0, nj = 0, nk = 0;
  std::vector<Run> runs;
  std::vector<std::size_t> first;  // nj * nk + 1 entries
  std::size_t rows() const { return nj * nk; }
};

/// The first index in [i, n) whose voxel is (set == `want`), or n. Byte masks skip 8 voxels
/// at a time through the long runs of anatomy.
template <class T>
inline std::size_t next_voxel(const T* row, std::size_t i, std::size_t n, bool want) {
  if constexpr (sizeof(T) == 1) {
    constexpr std::uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    for (; i + 8 <= n; i += 8) {
      std::uint64_t w;
      std::memcpy(&w, row + i, 8);
      // want set: stop at a word with a non-zero byte; want unset: at a word with a zero byte
      const bool stop = want ? w != 0 : ((w - ones) & ~w & highs) != 0;
      if (stop) break;
    }
  }
  while (i < n && (row[i] != T(0)) != want) ++i;
  return i;
}

template <class T>
RunSet extract_runs(const Volume<T>& mask, bool want) {
  RunSet rs;
  rs.ni = mask.ni();
  rs.nj = mask.nj();
  rs.nk = mask.nk();
  const std::size_t ni = rs.ni, rows = rs.rows();
  if (ni > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()))
    throw InvalidArgument("connected components: ni too large");
  const T* d = mask.data();
  // runs of each row, found once: per-chunk buffers, then one copy into place
  const int chunks = std::max(1, std::min<int>(num_threads(), static_cast<int>(rows / 64)));
  std::vector<std::vector<Run>> found(static_cast<std::size_t>(chunks));
  std::vector<std::size_t> count(rows + 1, 0);
  parallel_for(chunks, [&](std::int64_t cb, std::int64_t ce) {
    for (std::int64_t c = cb; c < ce; ++c) {
      std::vector<Run>& mine = found[static_cast<std::size_t>(c)];
      for (std::size_t r = rows * c / chunks; r < rows * (c + 1) / chunks; ++r) {
        const T* row = d + r * ni;
        const std::size_t before = mine.size();
        for (std::size_t i = next_voxel(row, 0, ni, want); i < ni;) {
          const std::size_t e = next_voxel(row, i, ni, !want);
          mine.push_back(Run{static_cast<std::int32_t>(i), static_cast<std::int32_t>(e)});
          i = next_voxel(row, e, ni, want);
        }
        count[r] = mine.size() - before;
      }
    }
  });
  rs.first.assign(rows + 1, 0);
  for (std::size_t r = 0; r < rows; ++r) rs.first[r + 1] = rs.first[r] + count[r];
  if (rs.first[rows] > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()))
    throw ResourceError("connected components: too many runs");
  rs.runs.resize(rs.first[rows]);
  parallel_for(chunks, [&](std::int64_t cb, std::int64_t ce) {
    for (std::int64_t c = cb; c < ce; ++c)
      std::copy(found[c].begin(), found[c].end(), rs.runs.begin() + static_cast<std::ptrdiff_t>(rs.first[rows * c / chunks]));
  });
  return rs;
}

/// Union-find over run indices; the root of a set is always its smallest index.
struct UnionFind {
  std::vector<std::int32_t> parent;
  explicit UnionFind(std::size_t n) : parent(n) {
    for (std::size_t i = 0; i < n; ++i) parent[i] = static_cast<std::int32_t>(i);
  }
  std::int32_t find(std::int32_t x) {
    while (parent[x] != x) {
      parent[x] = parent[parent[x]];
      x = parent[x];
    }
    return x;
  }
  void unite(std::int32_t a, std::int32_t b) {
    a = find(a);
    b = find(b);
    if (a == b) return;
    if (a > b) std::swap(a, b);
    parent[b] = a;  // the larger root goes under the smaller one
  }
};

struct NeighbourRow {
  int dj, dk;
  int ext;  // 1: runs touching diagonally along i connect as well
};

inline std::vector<NeighbourRow> neighbour_rows(int connectivity) {
  switch (connectivity) {
    case 4: return {{-1, 0, 0}};
    case 8: return {{-1, 0, 1}};
    case 6: return {{-1, 0, 0}, {0, -1, 0}};
    case 18: return {{-1, 0, 1}, {0, -1, 1}, {-1, -1, 0}, {1, -1, 0}};
    case 26: return {{-1, 0, 1}, {0, -1, 1}, {-1, -1, 1}, {1, -1, 1}};
    default:
      throw InvalidArgument("connectivity must be 6, 18 or 26 (3D) or 4 or 8 (2D, per k-slice); got " +
                            std::to_string(connectivity));
  }
}

inline bool is_2d(int connectivity) { return connectivity == 4 || connectivity == 8; }

/// Unite overlapping runs of rows a and b.
inline void unite_rows(const RunSet& rs, UnionFind& uf, std::size_t ra, std::size_t rb, int ext) {
  std::size_t ia = rs.first[ra], ea = rs.first[ra + 1];
  std::size_t ib = rs.first[rb], eb = rs.first[rb + 1];
  const Run* R = rs.runs.data();
  while (ia < ea && ib < eb) {
    if (R[ia].i1 + ext <= R[ib].i0) {
      ++ia;
      continue;
    }
    if (R[ib].i1 + ext <= R[ia].i0) {
      ++ib;
      continue;
    }
    uf.unite(static_cast<std::int32_t>(ia), static_cast<std::int32_t>(ib));
    if (R[ia].i1 < R[ib].i1)
      ++ia;
    else
      ++ib;
  }
}

/// Label runs: returns the component label (1..n) of every run and n.
inline std::vector<std::int32_t> label_runs(const RunSet& rs, int connectivity, std::int32_t& n_out) {
  const std::vector<NeighbourRow> nb = neighbour_rows(connectivity);
  const std::size_t nj = rs.nj, nk = rs.nk;
  UnionFind uf(rs.runs.size());
  // 1) inside slabs of k, in parallel (a slab only touches its own runs)
  const int threads = std::max(1, std::min<int>(num_threads(), static_cast<int>(nk)));
  std::vector<std::size_t> slab(threads + 1);
  for (int t = 0; t <= threads; ++t) slab[t] = nk * t / threads;
  auto unite_row = [&](std::size_t j, std::size_t k, std::size_t kmin) {
    const std::size_t r = j + nj * k;
    for (const NeighbourRow& q : nb) {
      const std::int64_t jj = static_cast<std::int64_t>(j) + q.dj;
      const std::int64_t kk = static_cast<std::int64_t>(k) + q.dk;
      if (jj < 0 || jj >= static_cast<std::int64_t>(nj) || kk < static_cast<std::int64_t>(kmin)) continue;
      unite_rows(rs, uf, static_cast<std::size_t>(jj) + nj * static_cast<std::size_t>(kk), r, q.ext);
    }
  };
  parallel_for(threads, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t t = b; t < e; ++t)
      for (std::size_t k = slab[t]; k < slab[t + 1]; ++k)
        for (std::size_t j = 0; j < nj; ++j) unite_row(j, k, slab[t]);
  });
  // 2) the seams between slabs
  if (!is_2d(connectivity))
    for (int t = 1; t < threads; ++t) {
      const std::size_t k = slab[t];
      if (k == 0 || k >= nk) continue;
      for (std::size_t j = 0; j < nj; ++j) {
        const std::size_t r = j + nj * k;
        for (const NeighbourRow& q : nb) {
          if (q.dk == 0) continue;
          const std::int64_t jj = static_cast<std::int64_t>(j) + q.dj;
          if (jj < 0 || jj >= static_cast<std::int64_t>(nj)) continue;
          unite_rows(rs, uf, static_cast<std::size_t>(jj) + nj * (k - 1), r, q.ext);
        }
      }
    }
  // 3) number the roots in raster order (the root of a set is its first run)
  std::vector<std::int32_t> label(rs.runs.size());
  std::int32_t n = 0;
  for (std::size_t r = 0; r < rs.runs.size(); ++r) {
    const std::int32_t root = uf.find(static_cast<std::int32_t>(r));
    label[r] = root == static_cast<std::int32_t>(r) ? ++n : label[root];
  }
  n_out = n;
  return label;
}

inline std::vector<std::size_t> run_label_sizes(const RunSet& rs, const std::vector<std::int32_t>& label,
                                                std::int32_t n) {
  std::vector<std::size_t> sizes(static_cast<std::size_t>(n) + 1, 0);
  for (std::size_t r = 0; r < rs.runs.size(); ++r)
    sizes[label[r]] += static_cast<std::size_t>(rs.runs[r].i1 - rs.runs[r].i0);
  return sizes;
}

/// Write `value_of(label)` (uint8) into every run's voxels of a zero-initialised mask.
template <class Fn>
void paint_runs(const RunSet& rs, const std::vector<std::int32_t>& label, std::uint8_t* out, Fn&& value_of) {
  const std::size_t ni = rs.ni;
  parallel_for(static_cast<std::int64_t>(rs.rows()), [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t r = b; r < e; ++r) {
      std::uint8_t* row = out + static_cast<std::size_t>(r) * ni;
      for (std::size_t q = rs.first[r]; q < rs.first[r + 1]; ++q) {
        const std::uint8_t v = value_of(label[q]);
        if (v) std::fill(row + rs.runs[q].i0, row + rs.runs[q].i1, v);
      }
    }
  }, 64);
}

template <class T>
void require_nonempty(const Volume<T>& v, const char* what) {
  if (v.empty()) throw InvalidArgument(std::string(what) + ": empty volume");
}

}  // namespace detail

/// Connected components of the foreground (non-zero voxels) with 6/18/26 (3D) or 4/8
/// (per k-slice) connectivity: labels and sizes.
template <class T>
ComponentLabels connected_components(const Volume<T>& mask, int connectivity = 26) {
  detail::require_nonempty(mask, "connected_components");
  const detail::RunSet rs = detail::extract_runs(mask, true);
  std::int32_t n = 0;
  const std::vector<std::int32_t> label = detail::label_runs(rs, connectivity, n);
  ComponentLabels out;
  out.sizes = detail::run_label_sizes(rs, label, n);
  std::size_t fg = 0;
  for (std::size_t c = 1; c < out.sizes.size(); ++c) fg += out.sizes[c];
  out.sizes[0] = mask.size() - fg;
  out.labels = Volume<std::int32_t>(mask.shape(), mask.geometry(), 0);
  std::int32_t* L = out.labels.data();
  const std::size_t ni = rs.ni;
  parallel_for(static_cast<std::int64_t>(rs.rows()), [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t r = b; r < e; ++r) {
      std::int32_t* row = L + static_cast<std::size_t>(r) * ni;
      for (std::size_t q = rs.first[r]; q < rs.first[r + 1]; ++q)
        std::fill(row + rs.runs[q].i0, row + rs.runs[q].i1, label[q]);
    }
  }, 64);
  return out;
}

/// Voxel counts of the components (index c - 1 for label c), without building a label volume.
template <class T>
std::vector<std::size_t> component_sizes(const Volume<T>& mask, int connectivity = 26) {
  detail::require_nonempty(mask, "component_sizes");
  const detail::RunSet rs = detail::extract_runs(mask, true);
  std::int32_t n = 0;
  const std::vector<std::int32_t> label = detail::label_runs(rs, connectivity, n);
  std::vector<std::size_t> s = detail::run_label_sizes(rs, label, n);
  return std::vector<std::size_t>(s.begin() + 1, s.end());
}

/// The largest connected component (ties: the one whose first voxel comes first in raster
/// order) as a 0/1 mask; all zeros when the mask is empty.
template <class T>
Volume<std::uint8_t> largest_component(const Volume<T>& mask, int connectivity = 26) {
  detail::require_nonempty(mask, "largest_component");
  const detail::RunSet rs = detail::extract_runs(mask, true);
  std::int32_t n = 0;
  const std::vector<std::int32_t> label = detail::label_runs(rs, connectivity, n);
  const std::vector<std::size_t> sizes = detail::run_label_sizes(rs, label, n);
  std::int32_t best = 0;
  for (std::int32_t c = 1; c <= n; ++c)
    if (best == 0 || sizes[c] > sizes[best]) best = c;
  Volume<std::uint8_t> out(mask.shape(), mask.geometry(), 0);
  if (best > 0) detail::paint_runs(rs, label, out.data(), [best](std::int32_t c) { return std::uint8_t(c == best); });
  return out;
}

/// Components with fewer than `min_voxels` voxels removed (0/1 mask).
template <class T>
Volume<std::uint8_t> remove_small_components(const Volume<T>& mask, std::size_t min_voxels, int connectivity = 26) {
  detail::require_nonempty(mask, "remove_small_components");
  const detail::RunSet rs = detail::extract_runs(mask, true);
  std::int32_t n = 0;
  const std::vector<std::int32_t> label = detail::label_runs(rs, connectivity, n);
  const std::vector<std::size_t> sizes = detail::run_label_sizes(rs, label, n);
  Volume<std::uint8_t> out(mask.shape(), mask.geometry(), 0);
  detail::paint_runs(rs, label, out.data(), [&](std::int32_t c) { return std::uint8_t(sizes[c] >= min_voxels); });
  return out;
}

namespace detail {
/// Background components that do not touch the border become foreground. `connectivity` is
/// that of the background; 4/8 work slice by slice (the k-faces are then not a border).
template <class T>
Volume<std::uint8_t> fill_holes_impl(const Volume<T>& mask, int connectivity) {
  const RunSet rs = extract_runs(mask, false);
  std::int32_t n = 0;
  const std::vector<std::int32_t> label = label_runs(rs, connectivity, n);
  std::vector<std::uint8_t> open(static_cast<std::size_t>(n) + 1, 0);
  const bool k_border = !is_2d(connectivity);
  for (std::size_t r = 0; r < rs.rows(); ++r) {
    const std::size_t j = r % rs.nj, k = r / rs.nj;
    const bool row_border = j == 0 || j + 1 == rs.nj || (k_border && (k == 0 || k + 1 == rs.nk));
    for (std::size_t q = rs.first[r]; q < rs.first[r + 1]; ++q)
      if (row_border || rs.runs[q].i0 == 0 || static_cast<std::size_t>(rs.runs[q].i1) == rs.ni) open[label[q]] = 1;
  }
  Volume<std::uint8_t> out = Volume<std::uint8_t>::uninitialized(mask.shape(), mask.geometry());
  const T* s = mask.data();
  std::uint8_t* d = out.data();
  parallel_for(static_cast<std::int64_t>(mask.size()), [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t x = b; x < e; ++x) d[x] = s[x] != T(0);
  }, 1 << 16);
  paint_runs(rs, label, d, [&](std::int32_t c) { return std::uint8_t(!open[c]); });
  return out;
}
}  // namespace detail

/// 3D hole filling: background voxels not connected to the border of the volume (through
/// background with `connectivity` 6, 18 or 26; 6 as scipy's binary_fill_holes) become
/// foreground. Returns a 0/1 mask.
template <class T>
Volume<std::uint8_t> fill_holes(const Volume<T>& mask, int connectivity = 6) {
  detail::require_nonempty(mask, "fill_holes");
  if (detail::is_2d(connectivity))
    throw InvalidArgument("fill_holes: connectivity must be 6, 18 or 26; use fill_holes_2d for slices");
  return detail::fill_holes_impl(mask, connectivity);
}

/// Slice-wise hole filling: in each k-slice, background not connected (4 or 8) to the
/// slice's edge becomes foreground.
template <class T>
Volume<std::uint8_t> fill_holes_2d(const Volume<T>& mask, int connectivity = 4) {
  detail::require_nonempty(mask, "fill_holes_2d");
  if (!detail::is_2d(connectivity)) throw InvalidArgument("fill_holes_2d: connectivity must be 4 or 8");
  return detail::fill_holes_impl(mask, connectivity);
}

// ---------------------------------------------------------------------------------------
// Distances and morphology
// ---------------------------------------------------------------------------------------

namespace detail {

constexpr float kFarF = std::numeric_limits<float>::infinity();

/// Felzenszwalb-Huttenlocher 1D squared distance transform on a line of n samples at
/// spacing s: d[p] = min_q f[q] + (s (p - q))^2. f may hold +inf. v, z: scratch of n and n+1.
inline void fh_line(const float* f, float* d, std::size_t n, double s, std::vector<std::int32_t>& v,
                    std::vector<double>& z) {
  v.resize(n);
  z.resize(n + 1);
  const double s2 = s * s;
  std::int64_t kk = -1;
  for (std::size_t q = 0; q < n; ++q) {
    if (!(f[q] < kFarF)) continue;
    const double fq = f[q] + s2 * double(q) * double(q);
    if (kk < 0) {
      kk = 0;
      v[0] = static_cast<std::int32_t>(q);
      z[0] = -std::numeric_limits<double>::infinity();
      z[1] = std::numeric_limits<double>::infinity();
      continue;
    }
    double x;
    for (;;) {  // z[0] = -inf stops this at kk = 0
      const std::int32_t p = v[kk];
      const double fp = f[p] + s2 * double(p) * double(p);
      x = (fq - fp) / (2 * s2 * (double(q) - double(p)));
      if (x > z[kk]) break;
      --kk;
    }
    ++kk;
    v[kk] = static_cast<std::int32_t>(q);
    z[kk] = x;
    z[kk + 1] = std::numeric_limits<double>::infinity();
  }
  if (kk < 0) {
    std::fill(d, d + n, kFarF);
    return;
  }
  std::int64_t k = 0;
  for (std::size_t p = 0; p < n; ++p) {
    while (z[k + 1] < double(p)) ++k;
    const double dp = double(p) - double(v[k]);
    d[p] = static_cast<float>(s2 * dp * dp + f[v[k]]);
  }
}

/// Along i: squared distance (mm^2) from each voxel of a row to the nearest feature voxel of
/// the row; voxels outside the row are features when `outside_feature`. Distances of more
/// than `cap` voxels are +inf.
template <class T>
void row_distance(const T* row, float* out, std::size_t ni, bool feature_is_fg, bool outside_feature, double s,
                  std::size_t cap) {
  const std::size_t far = std::numeric_limits<std::size_t>::max() / 4;
  std::size_t dist = outside_feature ? 0 : far;  // the virtual feature at i = -1
  for (std::size_t i = 0; i < ni; ++i) {
    const bool feat = (row[i] != T(0)) == feature_is_fg;
    dist = feat ? 0 : (dist >= far ? far : dist + 1);
    out[i] = dist <= cap ? static_cast<float>(s * s * double(dist) * double(dist)) : kFarF;
  }
  dist = outside_feature ? 0 : far;  // the virtual feature at i = ni
  for (std::size_t i = ni; i-- > 0;) {
    dist = out[i] == 0.0f ? 0 : (dist >= far ? far : dist + 1);
    if (dist <= cap) {
      const float v = static_cast<float>(s * s * double(dist) * double(dist));
      if (v < out[i]) out[i] = v;
    }
  }
}

/// out[x] = min(out[x], in[x] + c) over a contiguous span (vectorised min-plus).
inline void min_plus(float* __restrict out, const float* __restrict in, float c, std::size_t n) {
  for (std::size_t x = 0; x < n; ++x) {
    const float v = in[x] + c;
    out[x] = v < out[x] ? v : out[x];
  }
}

/// out[x] = min(out[x], c).
inline void min_const(float* out, float c, std::size_t n) {
  for (std::size_t x = 0; x < n; ++x) out[x] = c < out[x] ? c : out[x];
}

/// Squared distance transform of the feature voxels (foreground when `feature_is_fg`, else
/// background), exact where <= r2 (values above may be any number > r2, or inf); voxels
/// outside the grid are features when `outside_feature`. r2 = inf gives the full EDT.
/// Calls `emit(k, slice_ptr)` with each finished k-slice of squared distances (ni*nj floats),
/// possibly from several threads at once.
template <class T, class Emit>
void squared_distance_slices(const Volume<T>& mask, bool feature_is_fg, bool outside_feature, double r2, Emit&& emit) {
  const std::size_t ni = mask.ni(), nj = mask.nj(), nk = mask.nk(), nij = ni * nj;
  const Eigen::Vector3d sp = mask.spacing();
  const bool full = !(r2 < std::numeric_limits<double>::infinity());
  auto window = [&](double s, std::size_t n) -> std::size_t {
    if (full) return n;
    const double w = std::floor(std::sqrt(r2) / s);
    return w >= double(n) ? n : static_cast<std::size_t>(w);
  };
  const std::size_t wi = window(sp[0], ni), wj = window(sp[1], nj), wk = window(sp[2], nk);
  // Window passes cost 2w+1 vectorised steps per voxel; beyond that, lower envelopes.
  constexpr std::size_t kMaxWindow = 24;
  const bool env_j = wj > kMaxWindow, env_k = wk > kMaxWindow;
  const T* src = mask.data();
  std::vector<float> cj(wj + 1), ck(wk + 1);
  for (std::size_t q = 0; q <= wj && !env_j; ++q) cj[q] = static_cast<float>(sp[1] * sp[1] * double(q) * double(q));
  for (std::size_t q = 0; q <= wk && !env_k; ++q) ck[q] = static_cast<float>(sp[2] * sp[2] * double(q) * double(q));

  // i and j passes for slice k into `out` (nij floats), using `g` (nij floats) as scratch.
  auto plane = [&](std::size_t k, float* g, float* out, std::vector<float>& line, std::vector<float>& line2,
                   std::vector<std::int32_t>& v, std::vector<double>& z) {
    const T* s = src + k * nij;
    for (std::size_t j = 0; j < nj; ++j)
      row_distance(s + j * ni, g + j * ni, ni, feature_is_fg, outside_feature, sp[0], wi);
    if (env_j) {
      line.resize(nj + 2);
      line2.resize(nj + 2);
      const std::size_t pad = outside_feature ? 1 : 0;
      for (std::size_t i = 0; i < ni; ++i) {
        if (pad) line[0] = line[nj + 1] = 0.0f;
        for (std::size_t j = 0; j < nj; ++j) line[j + pad] = g[i + j * ni];
        fh_line(line.data(), line2.data(), nj + 2 * pad, sp[1], v, z);
        for (std::size_t j = 0; j < nj; ++j) out[i + j * ni] = line2[j + pad];
      }
      return;
    }
    for (std::size_t j = 0; j < nj; ++j) {
      float* o = out + j * ni;
      std::copy(g + j * ni, g + (j + 1) * ni, o);
      for (std::size_t q = 1; q <= wj; ++q) {
        if (j >= q) min_plus(o, g + (j - q) * ni, cj[q], ni);
        if (j + q < nj) min_plus(o, g + (j + q) * ni, cj[q], ni);
      }
      if (outside_feature) {  // the nearest outside voxels: rows j = -1 and j = nj
        if (j + 1 <= wj) min_const(o, cj[j + 1], ni);
        if (nj - j <= wj) min_const(o, cj[nj - j], ni);
      }
    }
  };

  if (env_k) {
    // full volume of i/j-pass distances, then lower envelopes along k, written back in place
    Volume<float> h = Volume<float>::uninitialized(mask.shape());
    float* H = h.data();
    parallel_for(static_cast<std::int64_t>(nk), [&](std::int64_t b, std::int64_t e) {
      std::vector<float> g(nij), line, line2;
      std::vector<std::int32_t> v;
      std::vector<double> z;
      for (std::int64_t k = b; k < e; ++k) plane(static_cast<std::size_t>(k), g.data(), H + k * nij, line, line2, v, z);
    });
    parallel_for(static_cast<std::int64_t>(nj), [&](std::int64_t b, std::int64_t e) {
      const std::size_t pad = outside_feature ? 1 : 0;
      std::vector<float> line(nk + 2), line2(nk + 2);
      std::vector<std::int32_t> v;
      std::vector<double> z;
      for (std::int64_t j = b; j < e; ++j)
        for (std::size_t i = 0; i < ni; ++i) {
          const std::size_t base = i + static_cast<std::size_t>(j) * ni;
          if (pad) line[0] = line[nk + 1] = 0.0f;
          for (std::size_t k = 0; k < nk; ++k) line[k + pad] = H[base + k * nij];
          fh_line(line.data(), line2.data(), nk + 2 * pad, sp[2], v, z);
          for (std::size_t k = 0; k < nk; ++k) H[base + k * nij] = line2[k + pad];
        }
    });
    parallel_for(static_cast<std::int64_t>(nk), [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t k = b; k < e; ++k) emit(static_cast<std::size_t>(k), H + k * nij);
    });
    return;
  }
  // windowed k pass: each thread keeps the 2 wk + 1 i/j-pass planes around its current slice
  // in a ring (the planes next to its range are computed twice, no full-volume buffer)
  parallel_for(static_cast<std::int64_t>(nk), [&](std::int64_t b, std::int64_t e) {
    const std::size_t R = 2 * wk + 1;
    std::vector<float> ring(R * nij), g(nij), out(nij), line, line2;
    std::vector<std::int32_t> v;
    std::vector<double> z;
    auto slot = [&](std::size_t p) { return ring.data() + (p % R) * nij; };
    std::size_t next = static_cast<std::size_t>(b) >= wk ? static_cast<std::size_t>(b) - wk : 0;  // next plane to compute
    for (std::size_t k = static_cast<std::size_t>(b); k < static_cast<std::size_t>(e); ++k) {
      for (; next <= std::min(k + wk, nk - 1); ++next) plane(next, g.data(), slot(next), line, line2, v, z);
      const float* c = slot(k);
      std::copy(c, c + nij, out.data());
      for (std::size_t q = 1; q <= wk; ++q) {
        if (k >= q) min_plus(out.data(), slot(k - q), ck[q], nij);
        if (k + q < nk) min_plus(out.data(), slot(k + q), ck[q], nij);
      }
      if (outside_feature) {  // the nearest outside voxels: slices k = -1 and k = nk
        if (k + 1 <= wk) min_const(out.data(), ck[k + 1], nij);
        if (nk - k <= wk) min_const(out.data(), ck[nk - k], nij);
      }
      emit(k, out.data());
    }
  });
}

/// The ball's squared radius with a relative tolerance of 1e-5 (so that offsets exactly on
/// the sphere are inside despite float rounding).
inline double ball_r2(double radius_mm) { return radius_mm * radius_mm * (1.0 + 1e-5); }

inline void check_radius(double radius_mm, const char* what) {
  if (!(radius_mm >= 0) || !std::isfinite(radius_mm))
    throw InvalidArgument(std::string(what) + ": radius must be finite and >= 0 mm, got " + std::to_string(radius_mm));
}

/// 0/1 mask of { d2 <= r2 } (`inside` = true) or { d2 > r2 } (false).
template <class T>
Volume<std::uint8_t> threshold_distance(const Volume<T>& mask, bool feature_is_fg, bool outside_feature, double r2,
                                        bool inside) {
  Volume<std::uint8_t> out = Volume<std::uint8_t>::uninitialized(mask.shape(), mask.geometry());
  std::uint8_t* d = out.data();
  const std::size_t nij = mask.ni() * mask.nj();
  const float t = static_cast<float>(r2);
  squared_distance_slices(mask, feature_is_fg, outside_feature, r2, [&](std::size_t k, const float* s) {
    std::uint8_t* o = d + k * nij;
    if (inside)
      for (std::size_t x = 0; x < nij; ++x) o[x] = s[x] <= t;
    else
      for (std::size_t x = 0; x < nij; ++x) o[x] = s[x] > t;
  });
  return out;
}

/// One row offset of a ball: the rows (j + dj, k + dk) reach `w` voxels either way along i.
struct BallRow {
  std::int64_t dj, dk, w;
};

/// The ball { (di si)^2 + (dj sj)^2 + (dk sk)^2 <= r2, |d.| <= floor(sqrt(r2) / s.) } as
/// its rows: for each (dj, dk) in it, the largest |di| (the same test as a brute-force ball).
/// On a grid of `extent` voxels an offset of n along an axis of n voxels already leaves it
/// from every voxel, so a ball wider than the grid is cut to |d.| <= n there: the same
/// morphology, but (2 nj + 1) (2 nk + 1) rows at most, not one per offset of a radius of 1e6 mm.
inline std::vector<BallRow> ball_rows(const Eigen::Vector3d& sp, double r2,
                                      const Shape3& extent = {std::size_t(1) << 40, std::size_t(1) << 40,
                                                              std::size_t(1) << 40}) {
  auto window = [&](double s, std::size_t n) {
    return static_cast<std::int64_t>(std::min(std::floor(std::sqrt(r2) / s), static_cast<double>(n)));
  };
  const std::int64_t wi = window(sp[0], extent[0]), wj = window(sp[1], extent[1]), wk = window(sp[2], extent[2]);
  std::vector<BallRow> rows;
  for (std::int64_t c = -wk; c <= wk; ++c)
    for (std::int64_t b = -wj; b <= wj; ++b) {
      const double rest = double(b) * double(b) * sp[1] * sp[1] + double(c) * double(c) * sp[2] * sp[2];
      if (!(rest <= r2)) continue;
      std::int64_t w = 0;
      while (w < wi && double(w + 1) * double(w + 1) * sp[0] * sp[0] + rest <= r2) ++w;
      rows.push_back({b, c, w});
    }
  return rows;
}

/// Ball dilation on runs: out = 1 where a voxel within the ball is a seed - a voxel whose
/// (value != 0) == `seed_is_fg`, or a voxel outside the grid when `outside_seed` - and 0
/// elsewhere; `invert` flips the result (erosion is the complement of the background's
/// dilation). Each output row is the union of the seed runs of the ball's rows, widened by
/// their reach: the work is (runs x ball rows) + voxels, independent of the radius along i.
template <class T>
Volume<std::uint8_t> ball_dilate_runs(const Volume<T>& mask, const RunSet& rs, const std::vector<BallRow>& ball,
                                      bool outside_seed, bool invert) {
  const std::int64_t ni = static_cast<std::int64_t>(rs.ni), nj = static_cast<std::int64_t>(rs.nj),
                     nk = static_cast<std::int64_t>(rs.nk);
  std::int64_t w_max = 0;
  for (const BallRow& b : ball) w_max = std::max(w_max, b.w);
  Volume<std::uint8_t> out = Volume<std::uint8_t>::uninitialized(mask.shape(), mask.geometry());
  std::uint8_t* O = out.data();
  const std::uint8_t on = invert ? 0 : 1, off = invert ? 1 : 0;
  parallel_for(nj * nk, [&](std::int64_t b, std::int64_t e) {
    std::vector<std::int32_t> reach(static_cast<std::size_t>(ni));  // reach[a]: the furthest end of an interval from a
    for (std::int64_t r = b; r < e; ++r) {
      const std::int64_t j = r % nj, k = r / nj;
      std::uint8_t* row = O + r * ni;
      std::fill(reach.begin(), reach.end(), 0);
      bool any = false, full = false;
      auto cover = [&](std::int64_t a, std::int64_t z) {  // [a, z) clipped to the row
        a = std::max<std::int64_t>(a, 0);
        z = std::min(z, ni);
        if (a >= z) return;
        std::int32_t& at = reach[static_cast<std::size_t>(a)];
        at = std::max(at, static_cast<std::int32_t>(z));
        any = true;
      };
      if (outside_seed) {  // the voxels just before i = 0 and after i = ni - 1
        cover(0, w_max);
        cover(ni - w_max, ni);
      }
      for (const BallRow& q : ball) {
        const std::int64_t jj = j + q.dj, kk = k + q.dk;
        if (jj < 0 || jj >= nj || kk < 0 || kk >= nk) {
          full = outside_seed;  // a whole row outside the grid within reach: a seed, or nothing
          if (full) break;
          continue;
        }
        const std::size_t src = static_cast<std::size_t>(jj + nj * kk);
        for (std::size_t p = rs.first[src]; p < rs.first[src + 1]; ++p) cover(rs.runs[p].i0 - q.w, rs.runs[p].i1 + q.w);
      }
      if (full || !any) {
        std::fill(row, row + ni, full ? on : off);
        continue;
      }
      std::int32_t end = 0;
      for (std::int32_t i = 0; i < static_cast<std::int32_t>(ni); ++i) {
        end = std::max(end, reach[static_cast<std::size_t>(i)]);
        row[i] = i < end ? on : off;
      }
    }
  }, 16);
  return out;
}

/// Ball morphology by whichever exact method costs less for this mask: runs (few runs per
/// row, as in anatomy) or the thresholded distance transform (many short runs, as in noise).
template <class T>
Volume<std::uint8_t> ball_morph(const Volume<T>& mask, bool seed_is_fg, bool outside_seed, double r2, bool invert) {
  const std::vector<BallRow> ball = ball_rows(mask.spacing(), r2, mask.shape());
  const RunSet rs = extract_runs(mask, seed_is_fg);
  const Eigen::Vector3d sp = mask.spacing();
  auto passes = [&](double s, std::size_t n) {  // vector steps per voxel of a window / envelope pass
    const double w = std::min(std::floor(std::sqrt(r2) / s), double(n));
    return std::min(2 * w + 1, 24.0);
  };
  const double voxels = static_cast<double>(mask.size());
  const double by_runs = static_cast<double>(rs.runs.size()) * static_cast<double>(ball.size()) + 2 * voxels;
  const double by_distance = voxels * (4 + (passes(sp[1], mask.nj()) + passes(sp[2], mask.nk())) / 4);
  if (by_runs <= by_distance) return ball_dilate_runs(mask, rs, ball, outside_seed, invert);
  return threshold_distance(mask, seed_is_fg, outside_seed, r2, !invert);
}

}  // namespace detail

/// Exact Euclidean distance transform in mm (anisotropic spacing): for every voxel, the
/// distance to the nearest background (zero) voxel, 0 on background - scipy's
/// distance_transform_edt(mask, sampling=spacing). Voxels outside the grid do not count as
/// background unless `outside_is_background`; with no background at all every voxel is +inf.
template <class T>
Volume<float> distance_transform(const Volume<T>& mask, bool outside_is_background = false) {
  detail::require_nonempty(mask, "distance_transform");
  Volume<float> out = Volume<float>::uninitialized(mask.shape(), mask.geometry());
  const std::size_t nij = mask.ni() * mask.nj();
  float* d = out.data();
  detail::squared_distance_slices(mask, false, outside_is_background, std::numeric_limits<double>::infinity(),
                                  [&](std::size_t k, const float* s) {
                                    float* o = d + k * nij;
                                    for (std::size_t x = 0; x < nij; ++x) o[x] = std::sqrt(s[x]);
                                  });
  return out;
}

/// Binary dilation with a ball of `radius_mm`: a voxel is set when some foreground voxel lies
/// within radius_mm (offsets with (di*si)^2 + (dj*sj)^2 + (dk*sk)^2 <= r^2).
template <class T>
Volume<std::uint8_t> binary_dilate(const Volume<T>& mask, double radius_mm) {
  detail::require_nonempty(mask, "binary_dilate");
  detail::check_radius(radius_mm, "binary_dilate");
  return detail::ball_morph(mask, true, false, detail::ball_r2(radius_mm), false);
}

/// Binary erosion with a ball of `radius_mm`: a voxel stays set when every voxel within
/// radius_mm is foreground. Voxels outside the grid count as background (scipy's
/// border_value=0) unless `outside_is_foreground`.
template <class T>
Volume<std::uint8_t> binary_erode(const Volume<T>& mask, double radius_mm, bool outside_is_foreground = false) {
  detail::require_nonempty(mask, "binary_erode");
  detail::check_radius(radius_mm, "binary_erode");
  return detail::ball_morph(mask, false, !outside_is_foreground, detail::ball_r2(radius_mm), true);
}

/// Opening (erosion, then dilation) with a ball: removes structures and bridges thinner than
/// the ball. Outside the grid is background for the erosion unless `outside_is_foreground`.
template <class T>
Volume<std::uint8_t> binary_open(const Volume<T>& mask, double radius_mm, bool outside_is_foreground = false) {
  return binary_dilate(binary_erode(mask, radius_mm, outside_is_foreground), radius_mm);
}

/// Closing (dilation, then erosion) with a ball: fills gaps and dents narrower than the ball.
/// The erosion treats outside the grid as foreground, so the result always contains the mask.
template <class T>
Volume<std::uint8_t> binary_close(const Volume<T>& mask, double radius_mm) {
  return binary_erode(binary_dilate(mask, radius_mm), radius_mm, true);
}

}  // namespace ichkit::quant
