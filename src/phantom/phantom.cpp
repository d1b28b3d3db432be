/// \file phantom.cpp
/// Synthetic non-contrast head CT with a known hematoma.
///
/// Model (all lengths in mm, HU in Hounsfield units)
/// -------------------------------------------------
/// The anatomy is an analytic "template" head in its own RAS frame (head centre at the origin,
/// AC-PC plane near z = 0), placed in the world by a per-case pose (scale 0.97..1.03, a few
/// degrees of yaw/pitch/roll, a shift of a few mm). Every voxel is evaluated in world
/// coordinates through the scan's affine, so a tilted (sheared) grid samples the same anatomy.
///
///   * skin: an "egg" (semi-axes 75 x 92 mm, 72 mm up, 82 mm down) plus a neck cylinder;
///     scalp / soft tissue 5 mm, 32..45 HU; air -1000 HU.
///   * skull: 5..8 mm (thicker at the occiput), outer and inner cortical tables
///     1300..1650 HU around a diploe of 380..620 HU; a skull base with anterior fossa
///     (floor z = -20), bowl-shaped middle fossae (down to z = -44), sella (z = -28), and a
///     posterior fossa behind the petrous ridges, closed by the occipital bone. Below the base: face soft tissue,
///     orbits (globe 12 HU in fat -90 HU), maxillary / sphenoid sinuses and nasal cavity (air),
///     cervical canal, cord and vertebra in the neck.
///   * intracranial: subarachnoid CSF (1..3 mm, wider with age), grey-matter cortex 3 mm
///     (38..43 HU) folded by sulci (a band-limited random field whose zero set is the sulcal
///     fundus line; CSF 3..9 HU inside, grey matter lining), the interhemispheric and Sylvian
///     fissures, white matter (23..28 HU) with corpus callosum, deep grey nuclei (caudate,
///     putamen, pallidum, thalamus; GM - 2.5 HU), lateral ventricles (frontal horns, bodies,
///     atria, occipital and temporal horns as tapered capsules), 3rd and 4th ventricles,
///     suprasellar and perimesencephalic cisterns. Infratentorially (below a tentorium that
///     rises to the incisura): brainstem (midbrain, pons, medulla; WM + 1.5 HU) and cerebellum
///     (GM cortex with folia, WM cores). Ventricle size, sulcal and cisternal width grow with age
///     (atrophy).
///   * hematoma: a star-shaped body r(u) = R * e(u) * exp(h(u)) around a centre: e(u) a mild
///     ellipsoidal elongation, h(u) a sum of six zonal harmonics P_l(u . d_n), l = 2..4, of RMS
///     amplitude 0.15..0.30. R is set so the body's volume (integral of r^3/3 over the sphere,
///     256 x 512 midpoint quadrature) equals the target volume. The body is intersected with the
///     intracranial space (it never enters skull or scalp). Mean HU per case 58..72, a smooth
///     +-3 HU heterogeneity. Perihematomal edema: a rim of 3..8 mm (15..21 HU) replacing
///     parenchyma only. IVH: blood (55..70 HU) filling the dependent (posterior, the patient is
///     supine) part of one or both lateral ventricles behind a coronal fluid level.
///
/// Sampling: materials and HU are evaluated at voxel centres; a voxel whose material differs
/// from a 6-neighbour along an axis is supersampled along that axis (in-plane: `supersample`
/// points per axis; slice axis: ceil(supersample * spacing_k / spacing_in_plane) points, at
/// most 9; all counts rounded up to odd numbers so the >= 0.5 rule has no ties). HU is the
/// sub-sample mean (partial volume). The mask (parenchymal + intraventricular blood) is a
/// volume-preserving binarisation: every whole-blood voxel plus the round(sum of blood
/// fractions) boundary voxels with the largest blood fractions, so its voxel volume matches
/// the partial-volume estimate even on 5 mm slices; the label is the majority tissue (blood
/// labels exactly where the mask is set). Gaussian noise comes from a counter-based hash of
/// (seed, voxel index), so the image does not depend on the thread count.
///
/// Geometry: RAS, the grid centre at the world origin. Gantry tilt t (degrees) tilts the
/// image planes as on a real scanner: affine column 1 (j) = spacing_j * (0, cos t, sin t)
/// while slices are stacked along the table axis, column 2 (k) = (0, 0, spacing_k); the
/// affine is then non-orthogonal (as read from a tilted DICOM series).
#include "ichkit/phantom/phantom.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <system_error>

#include "ichkit/core/error.h"
#include "ichkit/core/geometry.h"
#include "ichkit/core/threading.h"
#include "ichkit/io/nifti.h"

namespace ichkit::phantom {

namespace {

using V3 = Eigen::Vector3d;
using M3 = Eigen::Matrix3d;
constexpr double kPi = 3.14159265358979323846;

/// sin and cos to ~1e-11 absolute for |x| < 1e6: quadrant reduction and Taylor polynomials
/// on [-pi/4, pi/4]. Own code (not libm), so every platform gets the same bits, and faster.
inline void sin_cos(double x, double& s, double& c) {
  const double q = std::floor(x * 0.63661977236758134 + 0.5);  // x / (pi/2), rounded
  const double r = (x - q * 1.5707963267341256) - q * 6.0771005065061922e-11;
  const double r2 = r * r;
  const double sr = r * (1 + r2 * (-1.0 / 6 + r2 * (1.0 / 120 + r2 * (-1.0 / 5040 + r2 * (1.0 / 362880 + r2 * (-1.0 / 39916800))))));
  const double cr = 1 + r2 * (-0.5 + r2 * (1.0 / 24 + r2 * (-1.0 / 720 + r2 * (1.0 / 40320 + r2 * (-1.0 / 3628800 + r2 * (1.0 / 479001600))))));
  const long long k = static_cast<long long>(q) & 3;
  switch (k) {
    case 0: s = sr; c = cr; break;
    case 1: s = cr; c = -sr; break;
    case 2: s = -sr; c = -cr; break;
    default: s = -cr; c = sr; break;
  }
}
inline double sin_(double x) {
  double s, c;
  sin_cos(x, s, c);
  return s;
}
inline double cos_(double x) {
  double s, c;
  sin_cos(x, s, c);
  return c;
}

/// Natural logarithm of x > 0 (normal numbers), ~1e-13 relative: own code (not libm).
inline double log_(double x) {
  std::uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  int e = static_cast<int>((bits >> 52) & 0x7ff) - 1022;
  bits = (bits & 0x000fffffffffffffULL) | 0x3fe0000000000000ULL;
  double m;
  std::memcpy(&m, &bits, sizeof m);  // x = m 2^e, m in [0.5, 1)
  if (m < 0.70710678118654752) {
    m *= 2;
    --e;
  }
  const double t = (m - 1) / (m + 1), t2 = t * t;
  const double series =
      t * (2 + t2 * (2.0 / 3 + t2 * (2.0 / 5 + t2 * (2.0 / 7 + t2 * (2.0 / 9 + t2 * (2.0 / 11 + t2 * (2.0 / 13 + t2 * (2.0 / 15))))))));
  return e * 0.69314718055994531 + series;
}

// ------------------------------------------------------------------------------------------
// Deterministic random numbers (own distributions: std::normal_distribution differs across
// standard libraries).

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

class Rng {
public:
  explicit Rng(std::uint64_t seed) : eng_(seed) {}
  /// Uniform in [0, 1).
  double uniform() { return static_cast<double>(eng_() >> 11) * 0x1.0p-53; }
  double uniform(double a, double b) { return a + (b - a) * uniform(); }
  /// Standard normal (Box-Muller, one value per call).
  double normal() {
    const double u1 = (static_cast<double>(eng_() >> 11) + 0.5) * 0x1.0p-53;
    const double u2 = static_cast<double>(eng_() >> 11) * 0x1.0p-53;
    return std::sqrt(-2.0 * log_(u1)) * cos_(2.0 * kPi * u2);
  }
  double normal(double mean, double sd) { return mean + sd * normal(); }
  bool bernoulli(double p) { return uniform() < p; }
  int index(int n) { return std::min(n - 1, static_cast<int>(uniform() * n)); }
  V3 unit_vector() {
    for (;;) {
      V3 v(normal(), normal(), normal());
      const double n = v.norm();
      if (n > 1e-9) return v / n;
    }
  }

private:
  std::mt19937_64 eng_;
};

/// A pair of independent standard normals from a counter-based hash of (key, counter)
/// (Box-Muller on two 32-bit uniforms).
inline void hash_normal_pair(std::uint64_t key, std::uint64_t counter, double& z0, double& z1) {
  const std::uint64_t h = splitmix64(key ^ (counter * 0xd1b54a32d192ed03ULL));
  const double u1 = (static_cast<double>(h >> 32) + 0.5) * 0x1.0p-32;
  const double u2 = static_cast<double>(h & 0xffffffffULL) * 0x1.0p-32;
  const double r = std::sqrt(-2.0 * log_(u1));
  double s, c;
  sin_cos(2.0 * kPi * u2, s, c);
  z0 = r * c;
  z1 = r * s;
}

M3 axis_angle(const V3& axis, double angle) { return Eigen::AngleAxisd(angle, axis.normalized()).toRotationMatrix(); }

inline double sq(double v) { return v * v; }

inline double smoothstep(double e0, double e1, double x) {
  const double t = std::clamp((x - e0) / (e1 - e0), 0.0, 1.0);
  return t * t * (3 - 2 * t);
}
inline double lerp(double a, double b, double t) { return a + (b - a) * t; }

/// An axis-aligned ellipsoid (centre, reciprocal semi-axes).
struct Ell {
  double cx, cy, cz, ia, ib, ic;
  constexpr Ell(double x, double y, double z, double a, double b, double c)
      : cx(x), cy(y), cz(z), ia(1 / a), ib(1 / b), ic(1 / c) {}
  bool in(double x, double y, double z) const { return sq((x - cx) * ia) + sq((y - cy) * ib) + sq((z - cz) * ic) < 1.0; }
};

/// An egg-shaped ellipsoid centred at the origin (different z semi-axes up and down).
struct Egg {
  double ax, ay, az_up, az_down;
  double iax, iay, iaz_up, iaz_down, centre_depth;
  constexpr Egg(double a, double b, double up, double down)
      : ax(a), ay(b), az_up(up), az_down(down), iax(1 / a), iay(1 / b), iaz_up(1 / up), iaz_down(1 / down),
        centre_depth(a < b ? a : b) {}
  /// Approximate depth (mm, positive inside) below the surface: (1 - s) / |grad s|; any
  /// negative number outside.
  double depth(double x, double y, double z) const {
    const double iaz = z >= 0 ? iaz_up : iaz_down;
    const double X = x * iax, Y = y * iay, Z = z * iaz;
    const double s2 = X * X + Y * Y + Z * Z;
    if (s2 >= 1) return 1 - s2;
    const double s = std::sqrt(s2);
    const double g = std::sqrt(sq(X * iax) + sq(Y * iay) + sq(Z * iaz));
    if (g < 1e-12) return centre_depth;
    return (1 - s) * s / g;
  }
};

constexpr Egg kSkin(75, 92, 72, 82);
constexpr Ell kGlobe(32, 60, -36, 12, 12, 12), kOrbitFat(32, 54, -36, 16, 22, 14), kMaxillary(24, 35, -58, 11, 13, 14),
    kSphenoid(0, 22, -40, 12, 11, 8), kCerebWM(16, -50, -36, 10, 13, 8), kCaudate(14, 16, 8, 5, 9, 7),
    kThalamus(11, -13, 4, 8, 13, 8), kPutamen(25, 3, -1, 5.5, 14, 9), kPallidum(19, 0, -2, 3.5, 7, 5),
    kSuprasellar(0, 10, -17, 11, 9, 9);

/// Legendre polynomials P2..P4.
inline double legendre(int l, double t) {
  switch (l) {
    case 2: return 0.5 * (3 * t * t - 1);
    case 3: return 0.5 * t * (5 * t * t - 3);
    default: { const double t2 = t * t; return 0.125 * (35 * t2 * t2 - 30 * t2 + 3); }
  }
}

// ------------------------------------------------------------------------------------------
// Materials: finer than Tissue labels (partial volume is resolved between materials).

enum Mat : std::uint8_t {
  mAir, mScalp, mFat, mGlobe, mSinus, mOuterTable, mDiploe, mInnerTable, mVertebra, mCsf,
  mVentricle, mCortexGM, mDeepGM, mCerebGM, mWM, mBrainstem, mHematoma, mEdema, mIvh, kNumMat
};

constexpr std::array<std::uint8_t, kNumMat> kTissueOf = {
    kAir, kScalp, kScalp, kScalp, kAir, kSkull, kSkull, kSkull, kSkull, kCsf,
    kVentricle, kGreyMatter, kGreyMatter, kGreyMatter, kWhiteMatter, kWhiteMatter, kHematoma, kEdema, kIvh};

inline bool is_blood(std::uint8_t m) { return m == mHematoma || m == mIvh; }
inline bool is_parenchyma(std::uint8_t m) {
  return m == mCortexGM || m == mDeepGM || m == mCerebGM || m == mWM || m == mBrainstem;
}

/// A capsule with linearly tapering radius (a ventricle segment).
struct Capsule {
  V3 a, ab;
  double ra = 0, rb = 0, inv_len2 = 0;
  Capsule() = default;
  Capsule(const V3& p0, double r0, const V3& p1, double r1) : a(p0), ab(p1 - p0), ra(r0), rb(r1) {
    inv_len2 = 1.0 / ab.squaredNorm();
  }
  /// Approximate signed distance (negative inside).
  double sdf(const V3& p) const {
    const V3 ap = p - a;
    const double t = std::clamp(ap.dot(ab) * inv_len2, 0.0, 1.0);
    return (ap - t * ab).norm() - (ra + t * (rb - ra));
  }
};

/// A scalar field on the unit sphere and the norm of its tangential gradient, tabulated on a
/// cube map (bilinear interpolation).
class SphereMap {
public:
  static constexpr int N = 64;  ///< cells per face edge

  template <class Fn>
  void build(Fn&& fn) {  // fn(unit direction, value&, tangential gradient norm&)
    data_.assign(static_cast<std::size_t>(6 * (N + 1) * (N + 1) * 2), 0.0f);
    for (int f = 0; f < 6; ++f)
      for (int j = 0; j <= N; ++j)
        for (int i = 0; i <= N; ++i) {
          V3 d;
          const int a = f >> 1;
          d[a] = (f & 1) ? -1.0 : 1.0;
          d[(a + 1) % 3] = -1.0 + 2.0 * i / N;
          d[(a + 2) % 3] = -1.0 + 2.0 * j / N;
          double v, gt;
          fn(V3(d.normalized()), v, gt);
          float* cell = &data_[static_cast<std::size_t>(((f * (N + 1) + j) * (N + 1) + i) * 2)];
          cell[0] = static_cast<float>(v);
          cell[1] = static_cast<float>(gt);
        }
  }

  void sample(const V3& u, double& v, double& gt) const {
    const double ax = std::abs(u.x()), ay = std::abs(u.y()), az = std::abs(u.z());
    int a = 0;
    double m = ax;
    if (ay > m) { a = 1; m = ay; }
    if (az > m) { a = 2; m = az; }
    const int f = 2 * a + (u[a] < 0 ? 1 : 0);
    const double im = 1.0 / m;
    const double s = (u[(a + 1) % 3] * im + 1) * (0.5 * N), t = (u[(a + 2) % 3] * im + 1) * (0.5 * N);
    const int i = std::min(N - 1, std::max(0, static_cast<int>(s))), j = std::min(N - 1, std::max(0, static_cast<int>(t)));
    const double fs = s - i, ft = t - j;
    const float* c00 = &data_[static_cast<std::size_t>(((f * (N + 1) + j) * (N + 1) + i) * 2)];
    const float* c10 = c00 + 2;
    const float* c01 = c00 + 2 * (N + 1);
    const float* c11 = c01 + 2;
    const double w00 = (1 - fs) * (1 - ft), w10 = fs * (1 - ft), w01 = (1 - fs) * ft, w11 = fs * ft;
    v = w00 * c00[0] + w10 * c10[0] + w01 * c01[0] + w11 * c11[0];
    gt = w00 * c00[1] + w10 * c10[1] + w01 * c01[1] + w11 * c11[1];
  }

private:
  std::vector<float> data_;
};

// ------------------------------------------------------------------------------------------
// The hematoma body.

struct Body {
  V3 c{0, 0, 0};
  M3 to_local = M3::Identity();   ///< world -> body frame
  M3 to_world = M3::Identity();
  V3 inv_e2{1, 1, 1};            ///< 1 / elongation^2 per local axis
  std::array<V3, 6> dir{};
  std::array<int, 6> l{};
  std::array<double, 6> amp{};
  V3 rim_dir{0, 0, 1};
  double R = 0, rmin = 0, rmax = 0;  ///< scale and bounds of r(u)
  double rim = 4;                    ///< mean edema rim width (mm)

  /// f(u) = e(u) * exp(h(u)) for a unit direction in the body frame; r(u) = R f(u).
  double shape(const V3& u) const {
    const double e = 1.0 / std::sqrt(u.x() * u.x() * inv_e2.x() + u.y() * u.y() * inv_e2.y() + u.z() * u.z() * inv_e2.z());
    return e * std::exp(harmonics(u));
  }
  double harmonics(const V3& u) const {
    double h = 0;
    for (int n = 0; n < 6; ++n) h += amp[n] * legendre(l[n], dir[n].dot(u));
    return h;
  }
  double rim_width(const V3& u) const { return rim * (1.0 + 0.15 * legendre(2, rim_dir.dot(u))); }

  /// 0: outside body and rim; 1: in the edema rim; 2: in the body.
  int classify(const V3& p) const {
    const V3 v = to_local * (p - c);
    const double r2 = v.squaredNorm();
    const double outer = rmax + 1.2 * rim;
    if (r2 > outer * outer) return 0;
    if (r2 < rmin * rmin) return 2;
    const double rho = std::sqrt(r2);
    const V3 u = v / rho;
    const double rb = R * shape(u);
    if (rho <= rb) return 2;
    return rho <= rb + rim_width(u) ? 1 : 0;
  }
};

/// Quadrature over the unit sphere (midpoint rule in theta and phi): fn(direction, weight).
template <class Fn>
void sphere_quadrature(int nt, int np, Fn&& fn) {
  const double dt = kPi / nt, dp = 2 * kPi / np;
  std::vector<double> cp(static_cast<std::size_t>(np)), sp(static_cast<std::size_t>(np));
  for (int b = 0; b < np; ++b) {
    cp[static_cast<std::size_t>(b)] = std::cos((b + 0.5) * dp);
    sp[static_cast<std::size_t>(b)] = std::sin((b + 0.5) * dp);
  }
  for (int a = 0; a < nt; ++a) {
    const double th = (a + 0.5) * dt, st = std::sin(th), ct = std::cos(th);
    const double w = st * dt * dp;
    for (int b = 0; b < np; ++b)
      fn(V3(st * cp[static_cast<std::size_t>(b)], st * sp[static_cast<std::size_t>(b)], ct), w);
  }
}

// ------------------------------------------------------------------------------------------
// The head model.

class Model {
public:
  // pose
  M3 pose_R = M3::Identity();
  V3 pose_t{0, 0, 0};
  double pose_s = 1;
  M3 to_template_M = M3::Identity();  ///< R^T / s

  // anatomy
  double atrophy = 0.5;
  double gap = 1.5, w_sulcus = 1.5, w_fissure = 2, w_sylvian = 2, t_gm = 3, d_sulcus = 14;
  double w_folia = 1, t_skull = 6.3, skull_cos = 1, skull_sin = 0, t_scalp = 5, cistern = 3, sv = 1;
  SphereMap sulci;  ///< sulcal field on the sphere of directions (radius 65 mm)
  double sulcal_warp = 4;
  std::array<double, 3> warp_p{};
  double folia_p1 = 0, folia_p2 = 0;
  std::array<Capsule, 6> vent{};
  V3 vent_lo{0, 0, 0}, vent_hi{0, 0, 0};  ///< bounding box of the lateral ventricles (x > 0 side)
  Ell vent3{0, -3, 6, 2.5, 12, 7}, vent4{0, -35, -34, 6, 4, 8};
  std::array<float, kNumMat> hu{};

  // hematoma
  bool has_body = false;
  Body body;
  V3 hem_k{0, 0, 0};
  double hem_phase = 0;
  bool ivh_side[2] = {false, false};  // [0]: right (x > 0), [1]: left
  double ivh_level = -40;

  V3 to_template(const V3& p) const { return to_template_M * (p - pose_t); }
  V3 to_world(const V3& q) const { return pose_R * (pose_s * q) + pose_t; }

  // ---- geometry helpers in the template frame ----

  static double y_pf(double ax) { return 2.0 - 0.7 * std::max(0.0, ax - 10.0); }
  static double z_tent(double x, double y) { return 2.0 + 0.25 * std::min(0.0, y + 15.0) - 0.02 * x * x; }
  /// Skull base in front of the petrous ridges: sella (-28) medially, bowl-shaped middle
  /// cranial fossae (down to -44) laterally, anterior cranial fossa (-20) in front.
  static double z_base(double ax, double y) {
    const double bowl = -44.0 + 0.03 * sq(y - 8.0) + 0.012 * sq(std::max(0.0, ax - 38.0));
    const double zm = lerp(-28.0, std::min(bowl, -20.0), smoothstep(8, 22, ax));
    return lerp(zm, -20.0, smoothstep(24, 34, y));
  }

  struct Depths {
    double dskin, d0, T, dic;
  };

  /// Depth below the skin, below the egg's skin, skull thickness and depth inside the
  /// intracranial space (positive inside).
  static double skin_depth(double x, double y, double z, double d0) {
    if (z >= -45) return d0;
    return std::max(d0, (1 - std::sqrt(sq(x * (1.0 / 50)) + sq((y + 15) * (1.0 / 58)))) * 50);
  }

  Depths depths(const V3& q) const {
    const double d0 = kSkin.depth(q.x(), q.y(), q.z());
    return depths(q, d0, skin_depth(q.x(), q.y(), q.z(), d0));
  }

  Depths depths(const V3& q, double d0, double dskin) const {
    const double x = q.x(), y = q.y(), z = q.z(), ax = std::abs(x);
    Depths d;
    d.d0 = d0;
    d.dskin = dskin;
    // thickness: thicker at the occiput, a smooth sin(2 phi + phase) variation around z
    const double r = std::max(1e-9, q.norm());
    const double rxy2 = std::max(1e-9, x * x + y * y);
    const double sin2 = 2 * x * y / rxy2, cos2 = (x * x - y * y) / rxy2;
    d.T = t_skull * (1 + 0.08 * (-y / r) + 0.06 * (sin2 * skull_cos + cos2 * skull_sin));
    const double d_inner = d.d0 - t_scalp - d.T;
    const double ypf = y_pf(ax);
    const double wall = (ypf - y) / (ax > 10 ? 1.2206556 : 1.0);  // normalised by |grad|
    const double b = std::max(z - z_base(ax, y), wall);
    d.dic = std::min(d_inner, b);
    return d;
  }

  double intracranial_depth_world(const V3& p) const { return depths(to_template(p)).dic; }

  /// Material and noiseless HU at world point p.
  void eval(const V3& p, std::uint8_t& m, float& h) const {
    const V3 q = to_template(p);
    const double x = q.x(), y = q.y(), z = q.z();
    // quick reject outside the head's bounding box
    if (std::abs(x) > 76 || std::abs(y + 2) > 96 || z > 73) {
      m = mAir;
      h = hu[mAir];
      return;
    }
    const double d0 = kSkin.depth(x, y, z);
    const double dskin = skin_depth(x, y, z, d0);
    if (dskin <= 0) {
      m = mAir;
      h = hu[mAir];
      return;
    }
    const Depths d = depths(q, d0, dskin);
    if (d.dic > 0) {
      intracranial(p, q, d.dic, m, h);
      return;
    }
    extracranial(q, d, m);
    h = hu[m];
  }

  void extracranial(const V3& q, const Depths& d, std::uint8_t& m) const {
    const double x = q.x(), y = q.y(), z = q.z(), ax = std::abs(x);
    const double rc = std::hypot(x, y + 26);
    if (z < -50 && rc < 12) {
      m = std::hypot(x, y + 27) < 7 ? mBrainstem : mCsf;  // spinal canal: cord in CSF
      return;
    }
    if (d.dskin < t_scalp) {
      m = mScalp;
      return;
    }
    if (d.d0 >= t_scalp && d.dic > -d.T) {
      const double f = -d.dic / d.T;  // 0 at the inner table, 1 at the outer surface
      m = f < 0.25 ? mInnerTable : (f > 0.7 ? mOuterTable : mDiploe);
      return;
    }
    if (z < -50 && rc < 20) {
      m = rc > 18 ? mOuterTable : mVertebra;
      return;
    }
    // face
    if (kGlobe.in(ax, y, z)) { m = mGlobe; return; }
    if (kOrbitFat.in(ax, y, z)) { m = mFat; return; }
    if (kMaxillary.in(ax, y, z) || kSphenoid.in(ax, y, z)) { m = mSinus; return; }
    if (ax < 7 && y > 22 && y < 58 && z > -80 && z < -42) { m = mSinus; return; }
    m = mScalp;
  }

  void intracranial(const V3& p, const V3& q, double dic, std::uint8_t& m, float& h) const {
    int hem = 0;
    if (has_body) {
      hem = body.classify(p);
      if (hem == 2) {
        m = mHematoma;
        h = static_cast<float>(hu[mHematoma] + 3.0 * sin_(hem_k.dot(p) + hem_phase));
        return;
      }
    }
    const double x = q.x(), y = q.y(), z = q.z(), ax = std::abs(x);
    const double ypf = y_pf(ax);
    const double zt = z_tent(x, y);
    const double gt = std::sqrt(1 + sq(0.04 * x) + (y < -15 ? 0.0625 : 0.0));
    const double dwall = (y - ypf) / (ax > 10 ? 1.2206556 : 1.0);
    const double dtent = (z - zt) / gt;
    if (dwall < 0 && dtent < 0) {
      infratentorial(q, std::min(dic, std::min(-dwall, -dtent)), m);
    } else {
      // the tentorial incisura (around the midbrain) has no tentorium: no cortex there
      const bool incisura = ax < 14 && y > -42;
      const double dpf = dwall > 0 && dtent > 0 ? std::sqrt(dwall * dwall + dtent * dtent) : std::max(dwall, dtent);
      supratentorial(q, incisura ? dic : std::min(dic, dpf), m);
    }
    if (hem == 1 && is_parenchyma(m)) m = mEdema;
    h = hu[m];
  }

  void infratentorial(const V3& q, double dpf, std::uint8_t& m) const {
    const double x = q.x(), y = q.y(), z = q.z(), ax = std::abs(x);
    if (vent4.in(x, y, z)) { m = mVentricle; return; }
    if (z < 4) {
      static const double zs[] = {2, -10, -16, -28, -40, -48, -72};
      static const double yc[] = {-16, -18, -19, -20, -23, -26, -28};
      static const double rx[] = {12, 12, 15, 16, 13, 10, 8};
      static const double ry[] = {10, 10, 12, 13, 11, 9, 7};
      int i = 1;
      while (i < 6 && z < zs[i]) ++i;
      const double t = std::clamp((zs[i - 1] - z) / (zs[i - 1] - zs[i]), 0.0, 1.0);
      const double c = lerp(yc[i - 1], yc[i], t), a = lerp(rx[i - 1], rx[i], t), b = lerp(ry[i - 1], ry[i], t);
      const double qq = std::sqrt(sq(x / a) + sq((y - c) / b));
      if (z <= 2 && qq < 1) { m = mBrainstem; return; }
      if ((qq - 1) * std::min(a, b) < cistern) { m = mCsf; return; }
    }
    const double dc = std::min(dpf, -6.0 - y + 0.8 * std::max(0.0, ax - 16)) - gap;
    if (dc < 0) { m = mCsf; return; }
    if (dc < 10) {
      // folia: a field whose zero set runs roughly horizontally
      double s1, c1, s2, c2, sa, ca;
      sin_cos(y / 11.0 + folia_p1, s1, c1);
      sin_cos(x / 9.0 + folia_p2, s2, c2);
      sin_cos((z + 3 * s1 + 2.5 * s2) * (2 * kPi / 8.0), sa, ca);
      const double g = sa * (8.0 / (2 * kPi));
      const double gy = 3.0 / 11.0 * c1, gx = 2.5 / 9.0 * c2;
      const double gn = std::abs(g) / (std::max(0.3, std::abs(ca)) * std::sqrt(1 + gx * gx + gy * gy));
      if (gn < 0.5 * w_folia) { m = mCsf; return; }
    }
    if (kCerebWM.in(ax, y, z)) { m = mWM; return; }
    m = mCerebGM;
  }

  void supratentorial(const V3& q, double dsup, std::uint8_t& m) const {
    const double x = q.x(), y = q.y(), z = q.z(), ax = std::abs(x);
    const double db = dsup - gap;
    if (db < 0) { m = mCsf; return; }
    if (ax < 40 && y > -62 && y < 42 && z > -32 && z < 30) {
      if (vent3.in(x, y, z)) { m = mVentricle; return; }
      if (ax > 1.0 && ax < vent_hi.x() && y > vent_lo.y() && y < vent_hi.y() && z > vent_lo.z() && z < vent_hi.z()) {
        const V3 qa(ax, y, z);
        double dv = 1e9;
        for (const Capsule& c : vent) dv = std::min(dv, c.sdf(qa));
        if (dv < 0) {
          m = (ivh_side[x > 0 ? 0 : 1] && y < ivh_level) ? mIvh : mVentricle;
          return;
        }
      }
      if (ax > 3 && ax < 30.5 && y > -26 && y < 25 && z > -11 && z < 15 &&
          (kCaudate.in(ax, y, z) || kThalamus.in(ax, y, z) || kPutamen.in(ax, y, z) || kPallidum.in(ax, y, z))) {
        m = mDeepGM;
        return;
      }
      if (kSuprasellar.in(x, y, z)) { m = mCsf; return; }
    }
    // fissures (distance-like, negative inside the CSF slab)
    double dfis = 1e9;
    if (ax < 0.5 * w_fissure + t_gm + 1) {
      const double yy = std::abs(y + 4.0);
      const double zcc = 30.0 - 0.1 * sq(std::max(0.0, yy - 20.0));  // corpus callosum arch
      dfis = std::max(ax - 0.5 * w_fissure, zcc - z);
    }
    if (ax > 30 && y > -30 && y < 34) {
      const double zs = -6 + 0.25 * y;
      dfis = std::min(dfis, std::max({std::abs(z - zs) - 0.5 * w_sylvian, 36.0 - ax, std::abs(y - 2.0) - 27.0}));
    }
    if (dfis < 0) { m = mCsf; return; }
    if (db < d_sulcus + t_gm) {
      // sulci: walls along the zero set of a band-limited field on the sphere of directions
      // from the brain centre (radial), made wavy by a smooth displacement
      const V3 v = q - V3(0, -10, 10) +
                   sulcal_warp * V3(sin_(q.y() * (1 / 9.0) + warp_p[0]), sin_(q.z() * (1 / 8.0) + warp_p[1]),
                                    sin_(q.x() * (1 / 10.0) + warp_p[2]));
      const double rho = std::max(1.0, v.norm());
      double g, gt;
      sulci.sample(v / rho, g, gt);
      const double a = std::abs(g) / std::max(0.3, gt) * (rho / 65.0);
      if (db < d_sulcus && a < 0.5 * w_sulcus) { m = mCsf; return; }
      if (db < t_gm || a < 0.5 * w_sulcus + t_gm) { m = mCortexGM; return; }
    }
    if (dfis < t_gm) { m = mCortexGM; return; }
    m = mWM;
  }
};

// ------------------------------------------------------------------------------------------

void validate(const CaseOptions& o) {
  for (int a = 0; a < 3; ++a) {
    if (o.shape[a] == 0) throw InvalidArgument("phantom: shape must be positive along every axis, got 0 along axis " + std::to_string(a));
    if (!(o.spacing[a] > 0) || !std::isfinite(o.spacing[a]))
      throw InvalidArgument("phantom: spacing must be positive and finite, got " + std::to_string(o.spacing[a]) +
                            " mm along axis " + std::to_string(a));
  }
  if (double(o.shape[0]) * double(o.shape[1]) * double(o.shape[2]) > double(1ULL << 30))
    throw ResourceError("phantom: a grid of " + std::to_string(o.shape[0]) + " x " + std::to_string(o.shape[1]) + " x " +
                        std::to_string(o.shape[2]) + " voxels is larger than the supported 2^30 voxels");
  if (!std::isfinite(o.tilt_deg) || std::abs(o.tilt_deg) > 45)
    throw InvalidArgument("phantom: tilt_deg must be within [-45, 45] degrees, got " + std::to_string(o.tilt_deg));
  // a scanner's noise is a few to some tens of HU; 1e300 made voxels of +-inf
  if (!(o.noise_sd >= 0) || !(o.noise_sd <= 1000))
    throw InvalidArgument("phantom: noise_sd must be within [0, 1000] HU, got " + ichkit::detail::number_text(o.noise_sd));
  if (o.supersample < 1 || o.supersample > 15)
    throw InvalidArgument("phantom: supersample must be within [1, 15], got " + std::to_string(o.supersample));
  if (o.target_volume_ml && (!(*o.target_volume_ml > 0) || !(*o.target_volume_ml <= 300)))
    throw InvalidArgument("phantom: target_volume_ml must be in (0, 300] mL, got " + std::to_string(*o.target_volume_ml));
}

Geometry make_geometry(const CaseOptions& o) {
  const double t = o.tilt_deg * kPi / 180.0;
  M3 m = M3::Zero();
  m.col(0) = V3(o.spacing[0], 0, 0);
  m.col(1) = o.spacing[1] * V3(0, std::cos(t), std::sin(t));
  m.col(2) = V3(0, 0, o.spacing[2]);
  const V3 centre(0.5 * (double(o.shape[0]) - 1), 0.5 * (double(o.shape[1]) - 1), 0.5 * (double(o.shape[2]) - 1));
  Eigen::Matrix4d a = Eigen::Matrix4d::Identity();
  a.topLeftCorner<3, 3>() = m;
  a.topRightCorner<3, 1>() = -(m * centre);
  return Geometry(a);
}

double location_max_volume(Location loc) {
  switch (loc) {
    case Location::BasalGanglia: return 120;
    case Location::Thalamus: return 40;
    case Location::Lobar: return 120;
    case Location::Cerebellum: return 45;
    case Location::Brainstem: return 15;
  }
  return 120;
}

/// Build the anatomy of one case (uses its own random stream).
void build_anatomy(Model& md, std::uint64_t seed, int age) {
  Rng rng(splitmix64(seed ^ 0x616e61746f6d79ULL));
  md.atrophy = std::clamp((age - 30) / 65.0 + rng.normal(0, 0.08), 0.0, 1.2);
  md.pose_s = rng.uniform(0.97, 1.03);
  const double yaw = rng.normal(0, 2.5) * kPi / 180, pitch = rng.normal(0, 3.0) * kPi / 180,
               roll = rng.normal(0, 2.0) * kPi / 180;
  md.pose_R = axis_angle(V3::UnitZ(), yaw) * axis_angle(V3::UnitX(), pitch) * axis_angle(V3::UnitY(), roll);
  md.pose_t = V3(rng.uniform(-2, 2), rng.uniform(-3, 3), rng.uniform(-3, 3));
  md.to_template_M = md.pose_R.transpose() / md.pose_s;

  const double a = md.atrophy;
  md.gap = 1.0 + 1.8 * a;
  md.w_sulcus = 0.8 + 1.8 * a;
  md.w_fissure = 1.2 + 2.0 * a;
  md.w_sylvian = 1.5 + 2.5 * a;
  md.w_folia = 0.7 + 0.8 * a;
  md.cistern = 2.5 + 2.0 * a;
  md.sv = 0.85 + 0.4 * a;
  md.t_gm = rng.uniform(2.7, 3.3);
  md.d_sulcus = rng.uniform(12, 16);
  md.t_skull = rng.uniform(6.0, 6.6);
  const double skull_phase = rng.uniform(0, 2 * kPi);
  md.skull_cos = std::cos(skull_phase);
  md.skull_sin = std::sin(skull_phase);
  md.t_scalp = rng.uniform(4.5, 5.5);
  // sulcal field: four plane waves of 26..36 mm wavelength evaluated on a sphere of radius
  // 65 mm, so that its zero set gives radial walls (sulci) of a gyral pattern
  std::array<V3, 4> wave_k;
  std::array<double, 4> wave_a, wave_p;
  for (int n = 0; n < 4; ++n) {
    const double lambda = rng.uniform(26, 36);
    const double k = 2 * kPi / lambda;
    wave_k[n] = k * rng.unit_vector();
    wave_a[n] = 1.0 / k;
    wave_p[n] = rng.uniform(0, 2 * kPi);
  }
  md.sulci.build([&](const V3& u, double& g, double& gt) {
    g = 0;
    V3 grad(0, 0, 0);
    for (int n = 0; n < 4; ++n) {
      double sn, cs;
      sin_cos(wave_k[n].dot(65.0 * u) + wave_p[n], sn, cs);
      g += wave_a[n] * sn;
      grad += (wave_a[n] * cs) * wave_k[n];
    }
    gt = (grad - grad.dot(u) * u).norm();
  });
  md.sulcal_warp = rng.uniform(3, 5);
  for (double& w : md.warp_p) w = rng.uniform(0, 2 * kPi);
  md.folia_p1 = rng.uniform(0, 2 * kPi);
  md.folia_p2 = rng.uniform(0, 2 * kPi);

  const double s = md.sv;
  const V3 F(9, 30, 6), B1(8, 12, 13), B2(10, -14, 16), A(20, -32, 8), O(17, -52, 4), T1(29, -18, -2), T2(31, 2, -20);
  md.vent = {Capsule(F, 4.5 * s, B1, 5.5 * s), Capsule(B1, 5.5 * s, B2, 5.5 * s), Capsule(B2, 5.5 * s, A, 8 * s),
             Capsule(A, 8 * s, O, 4 * s),     Capsule(A, 8 * s, T1, 5 * s),     Capsule(T1, 5 * s, T2, 3 * s)};
  md.vent_lo = V3(1e9, 1e9, 1e9);
  md.vent_hi = V3(-1e9, -1e9, -1e9);
  for (const Capsule& c : md.vent)
    for (int e = 0; e < 2; ++e) {
      const V3 pnt = e == 0 ? c.a : V3(c.a + c.ab);
      const double r = (e == 0 ? c.ra : c.rb) + 0.5;
      md.vent_lo = md.vent_lo.cwiseMin(pnt - V3(r, r, r));
      md.vent_hi = md.vent_hi.cwiseMax(pnt + V3(r, r, r));
    }
  md.vent3 = Ell(0, -3, 6, 2.5 * s * s, 12, 7 * s);
  md.vent4 = Ell(0, -35, -34, 6 * s, 4 * s, 8 * s);

  auto& h = md.hu;
  h[mAir] = -1000;
  h[mSinus] = -1000;
  h[mScalp] = float(rng.uniform(32, 45));
  h[mFat] = float(rng.uniform(-100, -80));
  h[mGlobe] = float(rng.uniform(8, 16));
  const double cortical = rng.uniform(1300, 1650);
  h[mOuterTable] = float(cortical);
  h[mInnerTable] = float(cortical - rng.uniform(0, 100));
  h[mDiploe] = float(rng.uniform(380, 620));
  h[mVertebra] = float(rng.uniform(350, 500));
  h[mCsf] = float(rng.uniform(3, 9));
  h[mVentricle] = h[mCsf] - 1.0f;
  h[mCortexGM] = float(rng.uniform(38, 43));
  h[mDeepGM] = h[mCortexGM] - 2.5f;
  h[mCerebGM] = h[mCortexGM] - 1.0f;
  h[mWM] = float(rng.uniform(23, 28));
  h[mBrainstem] = h[mWM] + 1.5f;
  h[mHematoma] = float(rng.uniform(58, 72));
  h[mEdema] = float(rng.uniform(15, 21));
  h[mIvh] = float(rng.uniform(55, 70));
}

/// Volume (mm^3) of the body intersected with the intracranial space, and whether it was cut.
/// `radii` holds r(u) / R on the 256 x 512 quadrature (as computed when sizing the body).
double body_volume(const Model& md, const Body& b, const std::vector<double>& radii, bool* clipped) {
  // all of the body well inside the intracranial space (a depth-like function, with margin)
  if (md.intracranial_depth_world(b.c) > 1.3 * b.rmax / md.pose_s + 1.0) {
    double v = 0;
    std::size_t n = 0;
    sphere_quadrature(256, 512, [&](const V3&, double w) {
      const double f = radii[n++];
      v += f * f * f / 3.0 * w;
    });
    if (clipped) *clipped = false;
    return v * b.R * b.R * b.R;
  }
  double v = 0;
  bool cut = false;
  std::size_t n = 0;
  sphere_quadrature(256, 512, [&](const V3& u, double w) {
    double r = b.R * radii[n++];
    const V3 dirw = b.to_world * u;
    if (md.intracranial_depth_world(b.c + r * dirw) <= 0) {
      cut = true;
      double lo = 0, hi = r;
      for (int it = 0; it < 40; ++it) {
        const double mid = 0.5 * (lo + hi);
        (md.intracranial_depth_world(b.c + mid * dirw) > 0 ? lo : hi) = mid;
      }
      r = lo;
    }
    v += r * r * r / 3.0 * w;
  });
  if (clipped) *clipped = cut;
  return v;
}

/// Volume (mm^3) of IVH not inside the parenchymal body, by a fine grid in the template frame
/// (blocks of 4^3 points are skipped where the ventricle's distance rules out any IVH).
double ivh_volume(const Model& md) {
  const double h = 0.4;
  const int B = 4;
  const double skip = 0.5 * B * h * std::sqrt(3.0) * 1.3 + 0.2;
  // bounding box of the ventricle segments reaching behind the level (template frame, x > 0)
  V3 lo(1e9, 1e9, 1e9), hi(-1e9, -1e9, -1e9);
  for (const Capsule& c : md.vent) {
    const V3 b = c.a + c.ab;
    const double r = std::max(c.ra, c.rb) + 0.5;
    const V3 clo = c.a.cwiseMin(b) - V3(r, r, r), chi = c.a.cwiseMax(b) + V3(r, r, r);
    if (clo.y() > md.ivh_level) continue;
    lo = lo.cwiseMin(clo);
    hi = hi.cwiseMax(chi);
  }
  hi.y() = std::min(hi.y(), md.ivh_level + h);
  lo.x() = std::max(lo.x(), 0.0);  // one side at a time
  if (!(hi.x() > lo.x() && hi.y() > lo.y() && hi.z() > lo.z())) return 0;
  const double bs = B * h;
  const int nbx = int(std::ceil((hi.x() - lo.x()) / bs)), nby = int(std::ceil((hi.y() - lo.y()) / bs)),
            nbz = int(std::ceil((hi.z() - lo.z()) / bs));
  double total = 0;
  for (int side = 0; side < 2; ++side) {
    if (!md.ivh_side[side]) continue;
    const double sx = side == 0 ? 1.0 : -1.0;
    std::vector<std::int64_t> counts(static_cast<std::size_t>(nbz), 0);
    parallel_for(nbz, [&](std::int64_t b0, std::int64_t b1) {
      for (std::int64_t bz = b0; bz < b1; ++bz) {
        std::int64_t cnt = 0;
        for (int by = 0; by < nby; ++by)
          for (int bx = 0; bx < nbx; ++bx) {
            const V3 corner(lo.x() + bx * bs, lo.y() + by * bs, lo.z() + double(bz) * bs);
            const V3 centre = corner + V3(0.5 * bs, 0.5 * bs, 0.5 * bs);
            double dv = 1e9;
            for (const Capsule& c : md.vent) dv = std::min(dv, c.sdf(centre));
            if (dv > skip) continue;  // IVH only fills the ventricle
            for (int z = 0; z < B; ++z)
              for (int y = 0; y < B; ++y)
                for (int x = 0; x < B; ++x) {
                  const V3 q(sx * (corner.x() + (x + 0.5) * h), corner.y() + (y + 0.5) * h, corner.z() + (z + 0.5) * h);
                  std::uint8_t m;
                  float hu;
                  md.eval(md.to_world(q), m, hu);
                  cnt += (m == mIvh);
                }
          }
        counts[static_cast<std::size_t>(bz)] = cnt;
      }
    });
    std::int64_t c = 0;
    for (auto v : counts) c += v;
    total += double(c) * h * h * h * md.pose_s * md.pose_s * md.pose_s;
  }
  return total;
}

/// Template-frame anchor of a location (x > 0 side; mirrored for the left).
V3 location_anchor(Location loc, Rng& rng) {
  switch (loc) {
    case Location::BasalGanglia: return V3(24 + rng.uniform(-3, 3), rng.uniform(-4, 10), rng.uniform(-4, 6));
    case Location::Thalamus: return V3(11 + rng.uniform(-2, 2), -12 + rng.uniform(-4, 4), 5 + rng.uniform(-3, 3));
    case Location::Cerebellum: return V3(22 + rng.uniform(-4, 4), -52 + rng.uniform(-5, 5), -33 + rng.uniform(-4, 4));
    case Location::Brainstem: return V3(rng.uniform(-2, 2), -20 + rng.uniform(-2, 2), -28 + rng.uniform(-5, 5));
    case Location::Lobar: break;
  }
  static const V3 lobes[] = {V3(30, 45, 25), V3(35, -35, 40), V3(50, -5, -15), V3(25, -65, 10), V3(40, 10, 35)};
  return lobes[rng.index(5)] + V3(rng.uniform(-6, 6), rng.uniform(-8, 8), rng.uniform(-6, 6));
}

/// Place and size the hematoma body (world frame).
void build_hematoma(Model& md, Location loc, double target_ml, bool ivh, std::uint64_t seed, std::vector<double>& radii) {
  Rng rng(splitmix64(seed ^ 0x68656d61746f6d61ULL));
  Body& b = md.body;
  const double side = rng.bernoulli(0.5) ? 1.0 : -1.0;

  // shape: elongation and harmonics
  const double e1 = rng.uniform(1.0, 1.35), e2 = rng.uniform(0.9, 1.1);
  const double e3 = 1.0 / (e1 * e2);
  b.inv_e2 = V3(1 / (e1 * e1), 1 / (e2 * e2), 1 / (e3 * e3));
  for (int n = 0; n < 6; ++n) {
    b.dir[n] = rng.unit_vector();
    b.l[n] = 2 + rng.index(3);
    b.amp[n] = rng.normal() * std::sqrt((2.0 * b.l[n] + 1) / 6.0);
  }
  const double target_rms = rng.uniform(0.15, 0.30);
  double ms = 0, area = 0;
  sphere_quadrature(64, 128, [&](const V3& u, double w) {
    ms += sq(b.harmonics(u)) * w;
    area += w;
  });
  const double rms = std::sqrt(ms / area);
  if (rms > 1e-9)
    for (int n = 0; n < 6; ++n) b.amp[n] *= target_rms / rms;
  b.rim_dir = rng.unit_vector();

  // orientation: the long (local x) axis along y for deep bleeds, along z in the brainstem
  M3 base = M3::Identity();
  if (loc == Location::BasalGanglia || loc == Location::Thalamus) {
    base.col(0) = V3(0, 1, 0);
    base.col(1) = V3(-1, 0, 0);
    base.col(2) = V3(0, 0, 1);
  } else if (loc == Location::Brainstem) {
    base.col(0) = V3(0, 0, 1);
    base.col(1) = V3(1, 0, 0);
    base.col(2) = V3(0, 1, 0);
  } else {
    const V3 ax = rng.unit_vector();
    base = axis_angle(rng.unit_vector(), rng.uniform(0, kPi)) * axis_angle(ax, rng.uniform(0, 2 * kPi));
  }
  const M3 jitter = axis_angle(rng.unit_vector(), rng.normal(0, 12) * kPi / 180);
  b.to_world = md.pose_R * jitter * base;
  b.to_local = b.to_world.transpose();

  // size: R from the quadrature volume of f^3/3
  double vf = 0, fmin = 1e9, fmax = 0;
  radii.clear();
  radii.reserve(256 * 512);
  sphere_quadrature(256, 512, [&](const V3& u, double w) {
    const double f = b.shape(u);
    radii.push_back(f);
    vf += f * f * f / 3.0 * w;
    fmin = std::min(fmin, f);
    fmax = std::max(fmax, f);
  });
  b.R = std::cbrt(target_ml * 1000.0 / vf);
  b.rmin = 0.95 * fmin * b.R;
  b.rmax = 1.05 * fmax * b.R;
  b.rim = std::clamp(3.5 + 0.04 * target_ml + rng.uniform(-1, 1), 3.3, 6.9);  // width 0.925..1.15 x rim

  // placement (template frame)
  V3 anchor = location_anchor(loc, rng);
  anchor.x() *= side;
  V3 centre = anchor;
  if (loc == Location::Lobar) {
    // from a deep point, walk out to the brain surface, then step back in by the extent
    const V3 p0(0, -5, 15);
    V3 n = anchor - p0;
    n.normalize();
    double lo = 0, hi = 120;
    for (int it = 0; it < 50; ++it) {
      const double mid = 0.5 * (lo + hi);
      (md.depths(p0 + mid * n).dic > md.gap ? lo : hi) = mid;
    }
    const V3 surface = p0 + lo * n;
    const V3 nw = md.pose_R * n;  // world direction
    double ext = 0;
    sphere_quadrature(32, 64, [&](const V3& u, double) { ext = std::max(ext, b.R * b.shape(u) * (b.to_world * u).dot(nw)); });
    const double margin = rng.uniform(-3.0, 4.0);  // subcortical; sometimes cut by the inner table
    centre = surface - n * ((ext + margin) / md.pose_s);
    if ((centre - p0).dot(n) < 0) centre = p0;
  } else {
    // deep locations: move up to 10 mm towards the compartment's centre to stay inside the
    // intracranial space where possible (what still sticks out is cut off)
    const V3 pull = loc == Location::Cerebellum ? V3(side * 14, -45, -28)
                    : loc == Location::Brainstem ? V3(0, -20, -28)
                                                 : V3(side * 8, -5, 10);
    for (int it = 0; it < 5; ++it) {
      b.c = md.to_world(centre);
      bool cut = false;
      sphere_quadrature(24, 48, [&](const V3& u, double) {
        if (!cut && md.intracranial_depth_world(b.c + b.R * b.shape(u) * (b.to_world * u)) <= 0) cut = true;
      });
      if (!cut) break;
      const V3 step = pull - centre;
      if (step.norm() < 2.5) break;
      centre += 2.5 * step.normalized();
    }
  }
  b.c = md.to_world(centre);
  md.has_body = true;
  md.hem_k = rng.unit_vector() * (2 * kPi / rng.uniform(12, 25));
  md.hem_phase = rng.uniform(0, 2 * kPi);

  // intraventricular extension: dependent (posterior) part of the lateral ventricle(s)
  md.ivh_level = rng.uniform(-44, -28);
  const bool both = rng.bernoulli(0.4);
  if (ivh) {
    const int s = side > 0 ? 0 : 1;
    md.ivh_side[s] = true;
    if (both) md.ivh_side[1 - s] = true;
  }
}

/// A stride coprime with n near 0.45 n, so that s -> s * stride mod n spreads consecutive
/// sub-samples over the in-plane positions.
int rooks_stride(int n) {
  for (int d = 0; d < n; ++d) {
    for (int c : {int(0.45 * n) + d, int(0.45 * n) - d}) {
      if (c < 1 || c >= n) continue;
      int a = c, b = n;
      while (b) {
        const int r = a % b;
        a = b;
        b = r;
      }
      if (a == 1) return c;
    }
  }
  return 1;
}

/// A stride coprime with n near n / golden ratio (a scrambling permutation t -> t * s mod n).
std::int64_t scramble_stride(std::int64_t n) {
  if (n <= 2) return 1;
  for (std::int64_t c = static_cast<std::int64_t>(0.6180339887 * double(n)); c > 1; --c) {
    std::int64_t a = c, b = n;
    while (b) {
      const std::int64_t r = a % b;
      a = b;
      b = r;
    }
    if (a == 1) return c;
  }
  return 1;
}

}  // namespace

// ------------------------------------------------------------------------------------------

std::string to_string(Location loc) {
  switch (loc) {
    case Location::BasalGanglia: return "basal_ganglia";
    case Location::Thalamus: return "thalamus";
    case Location::Lobar: return "lobar";
    case Location::Cerebellum: return "cerebellum";
    case Location::Brainstem: return "brainstem";
  }
  throw InvalidArgument("phantom: unknown Location value " + std::to_string(static_cast<int>(loc)));
}

Location location_from_string(const std::string& s) {
  std::string t;
  for (char ch : s) t += ch == '-' || ch == ' ' ? '_' : static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  for (Location l : {Location::BasalGanglia, Location::Thalamus, Location::Lobar, Location::Cerebellum, Location::Brainstem})
    if (t == to_string(l)) return l;
  throw InvalidArgument("phantom: unknown location '" + s +
                        "' (expected basal_ganglia, thalamus, lobar, cerebellum or brainstem)");
}

bool is_infratentorial(Location loc) { return loc == Location::Cerebellum || loc == Location::Brainstem; }

double outcome_logit(double volume_ml, bool ivh, Location location, int age, int gcs) {
  double z = -2.2;
  if (volume_ml >= 30) z += 1.6;
  if (ivh) z += 1.0;
  if (is_infratentorial(location)) z += 0.9;
  if (age >= 80) z += 0.9;
  z += 0.035 * std::min(volume_ml, 80.0);
  if (gcs >= 3 && gcs <= 4) z += 1.5;
  else if (gcs >= 5 && gcs <= 12) z += 0.8;
  return z;
}

Case make_case(const CaseOptions& options) {
  validate(options);
  const Geometry geo = make_geometry(options);
  const std::uint64_t seed = options.seed;

  Case out;
  out.seed = seed;

  // clinical stream: age first (the anatomy's atrophy depends on it), then the hematoma's
  // random choices (always drawn, so overriding one option leaves the others unchanged)
  Rng clin(splitmix64(seed ^ 0x636c696e6963ULL));
  out.age = static_cast<int>(std::lround(std::clamp(clin.normal(68, 12), 30.0, 95.0)));
  static const Location kLocs[] = {Location::BasalGanglia, Location::Lobar, Location::Thalamus, Location::Cerebellum,
                                   Location::Brainstem};
  static const double kLocP[] = {0.40, 0.30, 0.15, 0.10, 0.05};
  double u = clin.uniform(), acc = 0;
  Location loc = Location::Brainstem;
  for (int i = 0; i < 5; ++i) {
    acc += kLocP[i];
    if (u < acc) {
      loc = kLocs[i];
      break;
    }
  }
  if (options.location) loc = *options.location;
  const double lv = clin.normal();
  const double max_ml = location_max_volume(loc);
  double target = loc == Location::Brainstem ? std::exp(std::log(4.0) + 0.7 * lv) : std::exp(std::log(14.0) + 0.85 * lv);
  target = std::clamp(target, 2.0, max_ml);
  if (options.target_volume_ml) target = *options.target_volume_ml;
  const double ivh_p = std::min(0.9, (loc == Location::Thalamus ? 0.55 : loc == Location::Lobar ? 0.15 : 0.3) +
                                         (target > 30 ? 0.25 : 0.0));
  bool ivh = clin.bernoulli(ivh_p);
  if (options.ivh) ivh = *options.ivh;
  if (!options.hematoma) ivh = false;

  Model md;
  build_anatomy(md, seed, out.age);
  std::vector<double> radii;  // r(u) / R on the volume quadrature
  if (options.hematoma) build_hematoma(md, loc, target, ivh, seed, radii);

  // ---- pass 1: material and HU at voxel centres ----
  const std::size_t ni = options.shape[0], nj = options.shape[1], nk = options.shape[2];
  const std::size_t n = ni * nj * nk;
  const M3 A = geo.affine().topLeftCorner<3, 3>();
  const V3 O = geo.origin();
  std::unique_ptr<std::uint8_t[]> mat(new std::uint8_t[n]);  // every element is written below
  std::unique_ptr<float[]> hu0(new float[n]);
  const std::int64_t rows = static_cast<std::int64_t>(nj * nk);
  // rows are visited in a scrambled order so that every thread's share covers the whole head
  const std::int64_t row_stride = scramble_stride(rows);
  parallel_for(rows, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t t = b; t < e; ++t) {
      const std::int64_t r = (t * row_stride) % rows;
      const std::size_t j = static_cast<std::size_t>(r) % nj, k = static_cast<std::size_t>(r) / nj;
      const V3 p0 = O + A.col(1) * double(j) + A.col(2) * double(k);
      const std::size_t base = static_cast<std::size_t>(r) * ni;
      for (std::size_t i = 0; i < ni; ++i) md.eval(p0 + A.col(0) * double(i), mat[base + i], hu0[base + i]);
    }
  }, 4);

  // ---- pass 2: partial volume at boundaries, labels, mask, noise ----
  auto odd = [](int v) { return v % 2 ? v : v + 1; };
  const int ss = odd(options.supersample);
  const double inplane = std::min(options.spacing[0], options.spacing[1]);
  const int sz = odd(std::min(std::max(static_cast<int>(std::ceil(options.supersample * options.spacing[2] / inplane - 1e-9)),
                                        options.supersample),
                               std::max(9, options.supersample)));
  out.image = Volume<float>::uninitialized(options.shape, geo);
  out.mask = Volume<std::uint8_t>::uninitialized(options.shape, geo);
  out.labels = Volume<std::uint8_t>::uninitialized(options.shape, geo);
  out.brain = Volume<std::uint8_t>::uninitialized(options.shape, geo);
  float* img = out.image.data();
  std::uint8_t* msk = out.mask.data();
  std::uint8_t* lab = out.labels.data();
  std::uint8_t* brn = out.brain.data();
  const std::uint64_t noise_key = splitmix64(seed ^ 0x6e6f697365ULL);
  const double noise_sd = options.noise_sd;
  const std::size_t sj = ni, sk = ni * nj;

  // Boundary voxels that hold some but not all blood: candidates of the volume-preserving
  // binarisation below.
  struct Partial {
    std::size_t idx;
    float fraction;
    std::uint8_t blood_label, tissue_label;
  };
  std::vector<Partial> partial;
  std::mutex partial_mutex;
  parallel_for(rows, [&](std::int64_t b, std::int64_t e) {
    std::vector<Partial> local;
    std::array<int, kNumMat> counts{};
    std::size_t noise_pair = std::size_t(-1);
    double noise_z[2] = {0, 0};
    for (std::int64_t t = b; t < e; ++t) {
      const std::int64_t r = (t * row_stride) % rows;
      const std::size_t j = static_cast<std::size_t>(r) % nj, k = static_cast<std::size_t>(r) / nj;
      const std::size_t base = static_cast<std::size_t>(r) * ni;
      for (std::size_t i = 0; i < ni; ++i) {
        const std::size_t idx = base + i;
        const std::uint8_t m0 = mat[idx];
        const bool bi = (i > 0 && mat[idx - 1] != m0) || (i + 1 < ni && mat[idx + 1] != m0);
        const bool bj = (j > 0 && mat[idx - sj] != m0) || (j + 1 < nj && mat[idx + sj] != m0);
        const bool bk = (k > 0 && mat[idx - sk] != m0) || (k + 1 < nk && mat[idx + sk] != m0);
        double value;
        std::uint8_t label, in_mask;
        if (!(bi || bj || bk)) {
          value = hu0[idx];
          label = kTissueOf[m0];
          in_mask = is_blood(m0) ? 1 : 0;
        } else {
          // N-rooks sub-samples: N = max(nx * ny, nz) points, spread over the nz slice-axis
          // positions and the nx * ny in-plane positions (a Latin pattern), the middle one at
          // the voxel centre
          const int nx = bi ? ss : 1, ny = bj ? ss : 1, nz = bk ? sz : 1;
          const int nxy = nx * ny, total = std::max(nxy, nz);
          const int stride = nxy <= 1 ? 0 : rooks_stride(nxy);
          const int offset = nxy <= 1 ? 0 : ((nxy - 1) / 2 - (stride * ((total - 1) / 2)) % nxy + nxy) % nxy;
          counts.fill(0);
          double sum = 0;
          const V3 pc = O + A * V3(double(i), double(j), double(k));
          for (int s = 0; s < total; ++s) {
            std::uint8_t m;
            float h;
            if (2 * s + 1 == total) {
              m = m0;
              h = hu0[idx];
            } else {
              const int cz = s * nz / total;
              const int t = nxy <= 1 ? 0 : (s * stride + offset) % nxy;
              const double dx = (t % nx + 0.5) / nx - 0.5, dy = (t / nx + 0.5) / ny - 0.5, dz = (cz + 0.5) / nz - 0.5;
              md.eval(pc + A.col(0) * dx + A.col(1) * dy + A.col(2) * dz, m, h);
            }
            ++counts[m];
            sum += h;
          }
          value = sum / total;
          const int blood = counts[mHematoma] + counts[mIvh];
          const std::uint8_t blood_label = counts[mHematoma] >= counts[mIvh] ? kHematoma : kIvh;
          std::uint8_t tissue_label = kTissueOf[m0];
          if (blood < total) {
            std::array<int, 10> tc{};
            for (int mm = 0; mm < kNumMat; ++mm)
              if (!is_blood(static_cast<std::uint8_t>(mm))) tc[kTissueOf[mm]] += counts[mm];
            int best = is_blood(m0) ? -1 : kTissueOf[m0];
            int best_count = best >= 0 ? tc[best] : -1;
            for (int t = 0; t < 10; ++t)
              if (tc[t] > best_count) {
                best = t;
                best_count = tc[t];
              }
            tissue_label = static_cast<std::uint8_t>(best);
          }
          if (blood > 0 && blood < total) local.push_back({idx, float(blood) / float(total), blood_label, tissue_label});
          if (2 * blood >= total) {
            in_mask = 1;
            label = blood_label;
          } else {
            in_mask = 0;
            label = tissue_label;
          }
        }
        if (noise_sd > 0) {
          // voxels 2m and 2m+1 share one Box-Muller pair (deterministic per voxel index)
          if ((idx >> 1) != noise_pair) {
            noise_pair = idx >> 1;
            hash_normal_pair(noise_key, noise_pair, noise_z[0], noise_z[1]);
          }
          value += noise_sd * noise_z[idx & 1];
        }
        img[idx] = static_cast<float>(value);
        msk[idx] = in_mask;
        lab[idx] = label;
        brn[idx] = (label == kAir || label == kScalp || label == kSkull) ? 0 : 1;
      }
    }
    std::lock_guard<std::mutex> lock(partial_mutex);
    partial.insert(partial.end(), local.begin(), local.end());
  }, 4);

  // ---- volume-preserving binarisation of the hematoma ----
  // The ">= half of the sub-samples" rule quantises a thick-slice mask: on 5 mm slices a small
  // bleed's mask can be off by several per cent. The partial-volume sum (whole blood voxels +
  // the blood fraction of every boundary voxel) estimates the true volume far better, so the
  // mask takes exactly round(that sum) voxels: all whole-blood voxels plus the boundary voxels
  // with the largest blood fractions (ties broken by voxel index, so the result is the same for
  // any thread count). This is the mask at scan resolution whose volume is closest to the
  // hematoma's.
  if (!partial.empty()) {
    std::sort(partial.begin(), partial.end(), [](const Partial& a, const Partial& b) {
      return a.fraction != b.fraction ? a.fraction > b.fraction : a.idx < b.idx;
    });
    double fractions = 0;
    for (const Partial& q : partial) fractions += q.fraction;
    const std::size_t take = std::min(partial.size(), static_cast<std::size_t>(std::llround(fractions)));
    for (std::size_t q = 0; q < partial.size(); ++q) {
      const Partial& v = partial[q];
      const bool in = q < take;
      msk[v.idx] = in ? 1 : 0;
      lab[v.idx] = in ? v.blood_label : v.tissue_label;
      brn[v.idx] = (lab[v.idx] == kAir || lab[v.idx] == kScalp || lab[v.idx] == kSkull) ? 0 : 1;
    }
  }

  // ---- volume, centroid, covariates ----
  std::size_t count = 0;
  V3 sum_idx(0, 0, 0);
  for (std::size_t k = 0; k < nk; ++k)
    for (std::size_t j = 0; j < nj; ++j) {
      const std::uint8_t* row = msk + (k * nj + j) * ni;
      std::size_t rc = 0;
      double si = 0;
      for (std::size_t i = 0; i < ni; ++i)
        if (row[i]) {
          ++rc;
          si += double(i);
        }
      if (rc) {
        count += rc;
        sum_idx += V3(si, double(rc) * double(j), double(rc) * double(k));
      }
    }
  const double voxel_mm3 = std::abs(A.determinant());
  out.volume_ml = double(count) * voxel_mm3 / 1000.0;
  if (count) out.centroid_mm = geo.index_to_world(sum_idx / double(count));
  out.ivh = ivh;
  out.location = options.hematoma ? loc : options.location.value_or(Location::BasalGanglia);
  if (options.hematoma) {
    bool clipped = false;
    const double vb = body_volume(md, md.body, radii, &clipped);
    out.analytic_volume_ml = (vb + ivh_volume(md)) / 1000.0;
  }

  // GCS: worse with volume, IVH and an infratentorial (above all brainstem) location
  const double true_ml = out.analytic_volume_ml;
  double severity = 0.04 * std::min(true_ml, 100.0) + (ivh ? 1.3 : 0.0) + 0.015 * (out.age - 68) + clin.normal(0, 0.9);
  if (options.hematoma && loc == Location::Brainstem) severity += 2.0;
  if (options.hematoma && loc == Location::Cerebellum) severity += 0.6;
  out.gcs = options.hematoma ? static_cast<int>(std::clamp(std::lround(15.3 - 2.3 * std::max(0.0, severity)), 3L, 15L)) : 15;
  const double logit = outcome_logit(true_ml, ivh, options.hematoma ? loc : Location::Lobar, out.age, out.gcs);
  out.outcome_probability = 1.0 / (1.0 + std::exp(-logit));
  out.outcome = clin.uniform() < out.outcome_probability ? 1 : 0;

  out.image.metadata().set("description", "ichkit phantom seed " + std::to_string(seed));
  out.image.metadata().set("modality", "CT");
  return out;
}

std::vector<ManifestRow> make_cohort(const std::string& out_dir, const CohortOptions& options, ProgressReporter* progress) {
  if (options.n <= 0) throw InvalidArgument("phantom: cohort size n must be positive, got " + std::to_string(options.n));
  validate(options.case_options);
  namespace fs = std::filesystem;
  const fs::path root(out_dir);
  std::error_code ec;
  for (const char* sub : {"images", "masks"}) {
    fs::create_directories(root / sub, ec);
    if (ec) throw IoError("phantom: cannot create folder '" + (root / sub).string() + "': " + ec.message());
  }
  const std::string ext = options.compress ? ".nii.gz" : ".nii";
  std::vector<ManifestRow> rows;
  rows.reserve(static_cast<std::size_t>(options.n));
  ProgressScope scope(progress, "phantom cohort", options.n);
  // case c + 1 is generated (on all threads) while case c is compressed and written
  std::future<void> writing;
  std::string writing_id;
  auto finish_write = [&]() {
    if (!writing.valid()) return;
    writing.get();  // rethrows a write error
    scope.advance(1, writing_id);
  };
  for (int c = 0; c < options.n; ++c) {
    CaseOptions co = options.case_options;
    co.seed = options.seed * 1000003ULL + static_cast<std::uint64_t>(c);
    Case cs = make_case(co);
    char id[32];
    std::snprintf(id, sizeof id, "case_%04d", c);
    ManifestRow row;
    row.id = id;
    row.image = "images/" + row.id + ext;
    row.mask = "masks/" + row.id + ext;
    row.volume_ml = cs.volume_ml;
    row.location = to_string(cs.location);
    row.ivh = cs.ivh;
    row.age = cs.age;
    row.gcs = cs.gcs;
    row.outcome = cs.outcome;
    row.outcome_probability = cs.outcome_probability;
    rows.push_back(row);
    finish_write();
    writing_id = row.id;
    writing = std::async(std::launch::async, [image = cs.image, mask = cs.mask, image_path = (root / row.image).string(),
                                              mask_path = (root / row.mask).string()]() {
      io::write_nifti<float>(image, image_path);
      io::write_nifti<std::uint8_t>(mask, mask_path);
    });
  }
  finish_write();
  const fs::path manifest = root / "manifest.csv";
  const fs::path tmp = root / "manifest.csv.tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw IoError("phantom: cannot write '" + tmp.string() + "'");
    f << "id,image,mask,volume_ml,location,ivh,age,gcs,outcome,outcome_probability\n";
    char buf[512];
    for (const ManifestRow& r : rows) {
      std::snprintf(buf, sizeof buf, "%s,%s,%s,%.6f,%s,%d,%d,%d,%d,%.6f\n", r.id.c_str(), r.image.c_str(), r.mask.c_str(),
                    r.volume_ml, r.location.c_str(), r.ivh ? 1 : 0, r.age, r.gcs, r.outcome, r.outcome_probability);
      f << buf;
    }
    f.flush();
    if (!f) {
      f.close();
      fs::remove(tmp, ec);
      throw IoError("phantom: failed writing '" + tmp.string() + "'");
    }
  }
  fs::rename(tmp, manifest, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw IoError("phantom: cannot rename '" + tmp.string() + "' to '" + manifest.string() + "'");
  }
  return rows;
}

}  // namespace ichkit::phantom
