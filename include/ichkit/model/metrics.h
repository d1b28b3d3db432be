#pragma once
/// \file metrics.h
/// Evaluation metrics for the three answers of ichkit (header-only, plain C++17, no LibTorch):
/// hematoma volume (regression: MAE, RMSE, R², Pearson r, ICC, Bland-Altman), prognosis
/// (binary classification on probabilities: ROC AUC with a bootstrap CI, ROC curve, threshold
/// metrics, Brier score, calibration bins; multi-class accuracy, confusion matrix and macro F1),
/// segmentation (Dice) and the clinical volume baseline ABC/2 (Kothari et al., 1996).
///
/// Conventions
/// - Inputs are `std::vector<double>` (values, scores) and `std::vector<int>` (class labels).
///   Binary labels are 0 or 1; a score is the probability (or any monotone score, where said)
///   of class 1. At a threshold t a case is predicted positive when `score >= t`, as for the
///   thresholds of sklearn.metrics.roc_curve.
/// - Every function checks its input and throws ichkit::InvalidArgument (Python: ValueError)
///   on empty input, length mismatch, NaN or infinite values, labels other than 0/1, scores
///   outside [0, 1] where probabilities are required, and a single class where two are
///   needed. A metric that is undefined for the data is an error, never a silent NaN - except
///   in the two report structs, which document where they put NaN.
/// - Results equal scikit-learn 1.2 / scipy to rounding (tests/python/test_metrics.py compares
///   them); where ichkit differs on purpose it says so.
///
/// Everything here is a pure function of its arguments and safe to call from several threads.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "ichkit/core/error.h"

namespace ichkit::metrics {

// ---------------------------------------------------------------------------------------
// Input checks
// ---------------------------------------------------------------------------------------

namespace detail {

inline std::string fmt(double v) {
  std::ostringstream s;
  s.precision(17);
  s << v;
  return s.str();
}

inline void require_nonempty(std::size_t n, const char* fn) {
  if (n == 0) throw InvalidArgument(std::string(fn) + ": empty input");
}

inline void require_min_size(std::size_t n, std::size_t min_n, const char* fn) {
  require_nonempty(n, fn);
  if (n < min_n)
    throw InvalidArgument(std::string(fn) + ": needs at least " + std::to_string(min_n) + " values, got " +
                          std::to_string(n));
}

inline void require_same_size(std::size_t a, std::size_t b, const char* fn, const char* name_a, const char* name_b) {
  if (a != b)
    throw InvalidArgument(std::string(fn) + ": " + name_a + " and " + name_b + " differ in length (" +
                          std::to_string(a) + " vs " + std::to_string(b) + ")");
}

inline void require_finite(const std::vector<double>& v, const char* fn, const char* name) {
  for (std::size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i]))
      throw InvalidArgument(std::string(fn) + ": " + name + "[" + std::to_string(i) + "] is " + fmt(v[i]) +
                            " (values must be finite)");
}

/// Two finite value vectors of the same length >= min_n.
inline void check_values(const std::vector<double>& truth, const std::vector<double>& pred, const char* fn,
                         std::size_t min_n = 1) {
  require_nonempty(truth.size(), fn);
  require_same_size(truth.size(), pred.size(), fn, "truth", "pred");
  require_min_size(truth.size(), min_n, fn);
  require_finite(truth, fn, "truth");
  require_finite(pred, fn, "pred");
}

inline void require_binary(const std::vector<int>& labels, const char* fn) {
  for (std::size_t i = 0; i < labels.size(); ++i)
    if (labels[i] != 0 && labels[i] != 1)
      throw InvalidArgument(std::string(fn) + ": binary labels must be 0 or 1; labels[" + std::to_string(i) +
                            "] = " + std::to_string(labels[i]));
}

inline void require_probabilities(const std::vector<double>& scores, const char* fn) {
  for (std::size_t i = 0; i < scores.size(); ++i)
    if (!(scores[i] >= 0.0 && scores[i] <= 1.0))
      throw InvalidArgument(std::string(fn) + ": scores must be probabilities in [0, 1]; scores[" + std::to_string(i) +
                            "] = " + fmt(scores[i]));
}

inline void require_threshold(double threshold, const char* fn) {
  if (std::isnan(threshold)) throw InvalidArgument(std::string(fn) + ": threshold is NaN");
}

/// Binary labels and finite scores of the same non-zero length.
inline void check_binary(const std::vector<int>& labels, const std::vector<double>& scores, const char* fn) {
  require_nonempty(labels.size(), fn);
  require_same_size(labels.size(), scores.size(), fn, "labels", "scores");
  require_binary(labels, fn);
  require_finite(scores, fn, "scores");
}

inline std::size_t count_positive(const std::vector<int>& labels) {
  return static_cast<std::size_t>(std::count(labels.begin(), labels.end(), 1));
}

inline void require_both_classes(std::size_t n_pos, std::size_t n_neg, const char* fn) {
  if (n_pos == 0 || n_neg == 0)
    throw InvalidArgument(std::string(fn) + ": needs both classes in labels, got " + std::to_string(n_pos) +
                          " positive and " + std::to_string(n_neg) + " negative cases");
}

inline double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

}  // namespace detail

// ---------------------------------------------------------------------------------------
// Regression (hematoma volume)
// ---------------------------------------------------------------------------------------

/// Mean absolute error, mean |truth - pred| (sklearn.metrics.mean_absolute_error).
inline double mae(const std::vector<double>& truth, const std::vector<double>& pred) {
  detail::check_values(truth, pred, "mae");
  double s = 0;
  for (std::size_t i = 0; i < truth.size(); ++i) s += std::abs(truth[i] - pred[i]);
  return s / static_cast<double>(truth.size());
}

/// Root mean squared error, sqrt(mean (truth - pred)^2)
/// (sklearn.metrics.mean_squared_error(..., squared=False)).
inline double rmse(const std::vector<double>& truth, const std::vector<double>& pred) {
  detail::check_values(truth, pred, "rmse");
  double s = 0;
  for (std::size_t i = 0; i < truth.size(); ++i) s += (truth[i] - pred[i]) * (truth[i] - pred[i]);
  return std::sqrt(s / static_cast<double>(truth.size()));
}

/// Coefficient of determination R² = 1 - SS_res / SS_tot, SS_res = sum (truth - pred)^2,
/// SS_tot = sum (truth - mean(truth))^2 (sklearn.metrics.r2_score). Can be negative. Needs
/// n >= 2. When truth is constant (SS_tot = 0) it follows sklearn's force_finite convention:
/// 1 for a perfect prediction, 0 otherwise.
inline double r2(const std::vector<double>& truth, const std::vector<double>& pred) {
  detail::check_values(truth, pred, "r2", 2);
  const double m = detail::mean(truth);
  double ss_res = 0, ss_tot = 0;
  for (std::size_t i = 0; i < truth.size(); ++i) {
    ss_res += (truth[i] - pred[i]) * (truth[i] - pred[i]);
    ss_tot += (truth[i] - m) * (truth[i] - m);
  }
  if (ss_tot == 0) return ss_res == 0 ? 1.0 : 0.0;
  return 1.0 - ss_res / ss_tot;
}

/// Pearson correlation coefficient r = sum (x - mx)(y - my) / sqrt(sum (x - mx)^2 sum (y - my)^2)
/// (scipy.stats.pearsonr's statistic), clipped to [-1, 1]. Needs n >= 2 and neither input
/// constant (r is undefined then; scipy returns NaN, ichkit throws).
inline double pearson_r(const std::vector<double>& x, const std::vector<double>& y) {
  detail::check_values(x, y, "pearson_r", 2);
  auto constant = [](const std::vector<double>& v) {
    return std::all_of(v.begin(), v.end(), [&](double a) { return a == v[0]; });
  };
  if (constant(x) || constant(y))
    throw InvalidArgument(std::string("pearson_r: ") + (constant(x) ? "truth" : "pred") +
                          " is constant; the correlation is undefined");
  const double mx = detail::mean(x), my = detail::mean(y);
  double sxx = 0, syy = 0, sxy = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double a = x[i] - mx, b = y[i] - my;
    sxx += a * a;
    syy += b * b;
    sxy += a * b;
  }
  const double r = sxy / (std::sqrt(sxx) * std::sqrt(syy));
  return std::max(-1.0, std::min(1.0, r));
}

/// The forms of the intraclass correlation coefficient for single ratings (Shrout & Fleiss
/// 1979, "Intraclass correlations: uses in assessing rater reliability", Psychol. Bull.
/// 86:420; McGraw & Wong 1996, Psychol. Methods 1:30). Names as in pingouin's ICC table.
enum class IccType {
  Icc1,  ///< ICC(1,1): one-way random effects, absolute agreement, single rater
  Icc2,  ///< ICC(2,1): two-way random effects, absolute agreement, single rater (McGraw & Wong's ICC(A,1))
  Icc3,  ///< ICC(3,1): two-way mixed effects, consistency, single rater (McGraw & Wong's ICC(C,1))
};

/// "ICC1", "ICC2", "ICC3" or "ICC(1,1)", "ICC(2,1)", "ICC(3,1)" (case and spaces ignored).
inline IccType icc_type_from_string(const std::string& s) {
  std::string t;
  for (char c : s)
    if (!std::isspace(static_cast<unsigned char>(c))) t += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (t == "ICC1" || t == "ICC(1,1)") return IccType::Icc1;
  if (t == "ICC2" || t == "ICC(2,1)") return IccType::Icc2;
  if (t == "ICC3" || t == "ICC(3,1)") return IccType::Icc3;
  throw InvalidArgument("unknown ICC type '" + s + "' (use ICC(1,1), ICC(2,1) or ICC(3,1))");
}

inline const char* to_string(IccType t) {
  return t == IccType::Icc1 ? "ICC(1,1)" : t == IccType::Icc2 ? "ICC(2,1)" : "ICC(3,1)";
}

/// Mean squares of the two-way ANOVA of n targets (rows) rated by k raters (columns), one
/// rating per cell, in Shrout & Fleiss's notation.
struct TwoWayAnova {
  std::size_t n = 0;       ///< targets (subjects, cases)
  std::size_t k = 0;       ///< raters (e.g. 2: truth and prediction)
  double grand_mean = 0;   ///< mean of all n k ratings
  double ms_rows = 0;      ///< BMS, between targets: k sum_i (mean_i. - m)^2 / (n - 1)
  double ms_cols = 0;      ///< JMS, between raters: n sum_j (mean_.j - m)^2 / (k - 1)
  double ms_error = 0;     ///< EMS, residual: sum_ij (x_ij - mean_i. - mean_.j + m)^2 / ((n - 1)(k - 1))
  double ms_within = 0;    ///< WMS, within targets: sum_ij (x_ij - mean_i.)^2 / (n (k - 1))

  /// The ICC of this table:
  ///   ICC(1,1) = (BMS - WMS) / (BMS + (k - 1) WMS)
  ///   ICC(2,1) = (BMS - EMS) / (BMS + (k - 1) EMS + k (JMS - EMS) / n)
  ///   ICC(3,1) = (BMS - EMS) / (BMS + (k - 1) EMS)
  /// Throws when the denominator is zero (e.g. every rating equal).
  double icc(IccType type) const {
    const double kk = static_cast<double>(k), nn = static_cast<double>(n);
    double num = 0, den = 0;
    switch (type) {
      case IccType::Icc1:
        num = ms_rows - ms_within;
        den = ms_rows + (kk - 1) * ms_within;
        break;
      case IccType::Icc2:
        num = ms_rows - ms_error;
        den = ms_rows + (kk - 1) * ms_error + kk * (ms_cols - ms_error) / nn;
        break;
      case IccType::Icc3:
        num = ms_rows - ms_error;
        den = ms_rows + (kk - 1) * ms_error;
        break;
    }
    if (!(den > 0) || !std::isfinite(den))
      throw InvalidArgument(std::string("icc: ") + to_string(type) +
                            " is undefined for these ratings (zero variance in its denominator)");
    return num / den;
  }
};

/// Two-way ANOVA of ratings given per rater: `raters[j][i]` is rater j's rating of target i
/// (k = raters.size() >= 2 raters, n >= 2 targets, all finite).
inline TwoWayAnova two_way_anova(const std::vector<std::vector<double>>& raters) {
  const char* fn = "icc";
  if (raters.size() < 2)
    throw InvalidArgument("icc: needs at least 2 raters (columns), got " + std::to_string(raters.size()));
  const std::size_t n = raters[0].size(), k = raters.size();
  for (std::size_t j = 0; j < k; ++j) {
    if (raters[j].size() != n)
      throw InvalidArgument("icc: rater " + std::to_string(j) + " has " + std::to_string(raters[j].size()) +
                            " ratings, rater 0 has " + std::to_string(n));
    detail::require_finite(raters[j], fn, ("rater " + std::to_string(j) + " ratings").c_str());
  }
  detail::require_min_size(n, 2, fn);
  TwoWayAnova a;
  a.n = n;
  a.k = k;
  std::vector<double> row(n, 0.0), col(k, 0.0);
  double total = 0;
  for (std::size_t j = 0; j < k; ++j)
    for (std::size_t i = 0; i < n; ++i) {
      row[i] += raters[j][i];
      col[j] += raters[j][i];
      total += raters[j][i];
    }
  const double nn = static_cast<double>(n), kk = static_cast<double>(k);
  for (double& r : row) r /= kk;
  for (double& c : col) c /= nn;
  const double m = total / (nn * kk);
  double ss_rows = 0, ss_cols = 0, ss_error = 0, ss_within = 0;
  for (std::size_t i = 0; i < n; ++i) ss_rows += (row[i] - m) * (row[i] - m);
  for (std::size_t j = 0; j < k; ++j) ss_cols += (col[j] - m) * (col[j] - m);
  for (std::size_t j = 0; j < k; ++j)
    for (std::size_t i = 0; i < n; ++i) {
      const double e = raters[j][i] - row[i] - col[j] + m, w = raters[j][i] - row[i];
      ss_error += e * e;
      ss_within += w * w;
    }
  a.grand_mean = m;
  a.ms_rows = kk * ss_rows / (nn - 1);
  a.ms_cols = nn * ss_cols / (kk - 1);
  a.ms_error = ss_error / ((nn - 1) * (kk - 1));
  a.ms_within = ss_within / (nn * (kk - 1));
  return a;
}

/// Intraclass correlation of n targets rated by k raters (`raters[j][i]`: rater j, target i),
/// from the two-way ANOVA mean squares (see TwoWayAnova::icc).
inline double icc(const std::vector<std::vector<double>>& raters, IccType type = IccType::Icc2) {
  return two_way_anova(raters).icc(type);
}

/// Intraclass correlation between truth and prediction as two raters of the same n cases.
/// ICC(2,1) (absolute agreement, the default) penalises a systematic bias of the prediction;
/// ICC(3,1) (consistency) does not.
inline double icc(const std::vector<double>& truth, const std::vector<double>& pred, IccType type = IccType::Icc2) {
  detail::check_values(truth, pred, "icc", 2);
  return two_way_anova({truth, pred}).icc(type);
}

/// Bland-Altman agreement of a measurement (pred) with a reference (truth).
struct BlandAltman {
  double bias = 0;   ///< mean of d = pred - truth
  double sd = 0;     ///< standard deviation of d, ddof = 1
  double lower = 0;  ///< lower limit of agreement, bias - z sd
  double upper = 0;  ///< upper limit of agreement, bias + z sd
};

/// Bland & Altman (Lancet 1986;327:307): bias and 95 % limits of agreement (z = 1.96) of the
/// differences d = pred - truth. Needs n >= 2.
inline BlandAltman bland_altman(const std::vector<double>& truth, const std::vector<double>& pred, double z = 1.96) {
  detail::check_values(truth, pred, "bland_altman", 2);
  if (!(z > 0) || !std::isfinite(z)) throw InvalidArgument("bland_altman: z must be finite and > 0, got " + detail::fmt(z));
  const std::size_t n = truth.size();
  double s = 0;
  for (std::size_t i = 0; i < n; ++i) s += pred[i] - truth[i];
  BlandAltman b;
  b.bias = s / static_cast<double>(n);
  double ss = 0;
  for (std::size_t i = 0; i < n; ++i) ss += (pred[i] - truth[i] - b.bias) * (pred[i] - truth[i] - b.bias);
  b.sd = std::sqrt(ss / static_cast<double>(n - 1));
  b.lower = b.bias - z * b.sd;
  b.upper = b.bias + z * b.sd;
  return b;
}

/// Every regression metric of a prediction against the truth.
struct RegressionReport {
  std::size_t n = 0;
  double mae = 0, rmse = 0, r2 = 0;
  /// NaN when truth or pred is constant (e.g. an untrained model), where r is undefined.
  double pearson_r = 0;
  /// NaN where undefined (zero variance in the denominator).
  double icc2_1 = 0, icc3_1 = 0;
  BlandAltman bland_altman;
};

/// All of mae, rmse, r2, pearson_r, ICC(2,1), ICC(3,1) and bland_altman in one call (n >= 2).
/// Unlike the single functions it does not throw for a constant prediction: the correlation
/// and ICCs that are undefined are NaN. Invalid input still throws.
inline RegressionReport regression_report(const std::vector<double>& truth, const std::vector<double>& pred) {
  detail::check_values(truth, pred, "regression_report", 2);
  RegressionReport r;
  r.n = truth.size();
  r.mae = mae(truth, pred);
  r.rmse = rmse(truth, pred);
  r.r2 = r2(truth, pred);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  try {
    r.pearson_r = pearson_r(truth, pred);
  } catch (const InvalidArgument&) {
    r.pearson_r = nan;
  }
  const TwoWayAnova a = two_way_anova({truth, pred});
  auto icc_or_nan = [&](IccType t) {
    try {
      return a.icc(t);
    } catch (const InvalidArgument&) {
      return nan;
    }
  };
  r.icc2_1 = icc_or_nan(IccType::Icc2);
  r.icc3_1 = icc_or_nan(IccType::Icc3);
  r.bland_altman = bland_altman(truth, pred);
  return r;
}

// ---------------------------------------------------------------------------------------
// Binary classification (prognosis)
// ---------------------------------------------------------------------------------------

namespace detail {

/// Indices of `scores` in increasing order of score.
inline std::vector<std::size_t> argsort_ascending(const std::vector<double>& scores) {
  std::vector<std::size_t> o(scores.size());
  std::iota(o.begin(), o.end(), std::size_t(0));
  std::stable_sort(o.begin(), o.end(), [&](std::size_t a, std::size_t b) { return scores[a] < scores[b]; });
  return o;
}

/// AUC from (weighted) positive and negative counts of tie groups in increasing score order:
/// AUC = (sum over groups of p_g (N_below + q_g / 2)) / (P N), the Mann-Whitney U statistic
/// with ties counted one half. Accumulated in half units, so it is exact for integer counts.
template <class Groups>
double auc_from_groups(const Groups& groups, double n_pos, double n_neg) {
  double num2 = 0, neg_below = 0;
  for (const auto& g : groups) {
    num2 += 2 * g.first * neg_below + g.first * g.second;
    neg_below += g.second;
  }
  return num2 / (2 * n_pos * n_neg);
}

/// Starts of the tie groups of sorted scores (plus the end): group g is [s[g], s[g+1]).
inline std::vector<std::size_t> tie_groups(const std::vector<double>& scores, const std::vector<std::size_t>& order) {
  std::vector<std::size_t> s;
  for (std::size_t r = 0; r < order.size(); ++r)
    if (r == 0 || scores[order[r]] != scores[order[r - 1]]) s.push_back(r);
  s.push_back(order.size());
  return s;
}

/// A uniform integer in [0, n) from a 64-bit Mersenne Twister by rejection (draws x until
/// x >= 2^64 mod n, returns x mod n): unbiased and, unlike std::uniform_int_distribution,
/// the same sequence with every standard library.
inline std::uint64_t uniform_index(std::mt19937_64& rng, std::uint64_t n) {
  const std::uint64_t t = (std::uint64_t(0) - n) % n;  // 2^64 mod n
  for (;;) {
    const std::uint64_t x = rng();
    if (x >= t) return x % n;
  }
}

/// numpy.percentile's default ('linear') quantile q in [0, 1] of sorted values.
inline double quantile_sorted(const std::vector<double>& v, double q) {
  const double h = q * static_cast<double>(v.size() - 1);
  const std::size_t lo = static_cast<std::size_t>(std::floor(h));
  if (lo + 1 >= v.size()) return v.back();
  const double t = h - static_cast<double>(lo);
  return v[lo] + t * (v[lo + 1] - v[lo]);
}

}  // namespace detail

/// Area under the ROC curve, computed exactly as the Mann-Whitney statistic: the probability
/// that a random positive case scores higher than a random negative one, ties counting one
/// half (sklearn.metrics.roc_auc_score). Scores may be any finite numbers (probabilities,
/// logits). Needs both classes. O(n log n).
inline double roc_auc(const std::vector<int>& labels, const std::vector<double>& scores) {
  const char* fn = "roc_auc";
  detail::check_binary(labels, scores, fn);
  const std::size_t n_pos = detail::count_positive(labels), n_neg = labels.size() - n_pos;
  detail::require_both_classes(n_pos, n_neg, fn);
  const std::vector<std::size_t> order = detail::argsort_ascending(scores);
  const std::vector<std::size_t> starts = detail::tie_groups(scores, order);
  std::vector<std::pair<double, double>> groups;
  groups.reserve(starts.size() - 1);
  for (std::size_t g = 0; g + 1 < starts.size(); ++g) {
    double p = 0, q = 0;
    for (std::size_t r = starts[g]; r < starts[g + 1]; ++r) (labels[order[r]] == 1 ? p : q) += 1;
    groups.emplace_back(p, q);
  }
  return detail::auc_from_groups(groups, static_cast<double>(n_pos), static_cast<double>(n_neg));
}

/// A ROC curve: points (fpr[i], tpr[i]) for the rule "positive when score >= thresholds[i]".
struct RocCurve {
  std::vector<double> fpr;         ///< false positive rate FP / N, increasing from 0 to 1
  std::vector<double> tpr;         ///< true positive rate TP / P, increasing from 0 to 1
  std::vector<double> thresholds;  ///< decreasing; thresholds[0] = +inf (nothing positive)
};

/// ROC curve as sklearn.metrics.roc_curve: one point per distinct score (taken as threshold,
/// in decreasing order), preceded by the point (0, 0). With `drop_intermediate` (sklearn's
/// default) points on straight horizontal or vertical runs are dropped, as sklearn does;
/// the default here keeps every threshold (sklearn's drop_intermediate=False).
/// Difference: thresholds[0] is +infinity (sklearn >= 1.3), where sklearn 1.2 writes
/// max(score) + 1. Needs both classes.
inline RocCurve roc_curve(const std::vector<int>& labels, const std::vector<double>& scores,
                          bool drop_intermediate = false) {
  const char* fn = "roc_curve";
  detail::check_binary(labels, scores, fn);
  const std::size_t n_pos = detail::count_positive(labels), n_neg = labels.size() - n_pos;
  detail::require_both_classes(n_pos, n_neg, fn);
  std::vector<std::size_t> order = detail::argsort_ascending(scores);
  std::reverse(order.begin(), order.end());  // decreasing score
  std::vector<double> tps, fps, thr;
  std::size_t tp = 0;
  for (std::size_t r = 0; r < order.size(); ++r) {
    tp += static_cast<std::size_t>(labels[order[r]] == 1);
    if (r + 1 == order.size() || scores[order[r + 1]] != scores[order[r]]) {
      tps.push_back(static_cast<double>(tp));
      fps.push_back(static_cast<double>(r + 1 - tp));
      thr.push_back(scores[order[r]]);
    }
  }
  if (drop_intermediate && tps.size() > 2) {
    std::vector<double> t2, f2, h2;
    for (std::size_t i = 0; i < tps.size(); ++i) {
      const bool keep = i == 0 || i + 1 == tps.size() || fps[i + 1] - 2 * fps[i] + fps[i - 1] != 0 ||
                        tps[i + 1] - 2 * tps[i] + tps[i - 1] != 0;
      if (keep) {
        t2.push_back(tps[i]);
        f2.push_back(fps[i]);
        h2.push_back(thr[i]);
      }
    }
    tps.swap(t2);
    fps.swap(f2);
    thr.swap(h2);
  }
  RocCurve c;
  c.fpr.reserve(tps.size() + 1);
  c.tpr.reserve(tps.size() + 1);
  c.thresholds.reserve(tps.size() + 1);
  c.fpr.push_back(0.0);
  c.tpr.push_back(0.0);
  c.thresholds.push_back(std::numeric_limits<double>::infinity());
  for (std::size_t i = 0; i < tps.size(); ++i) {
    c.fpr.push_back(fps[i] / static_cast<double>(n_neg));
    c.tpr.push_back(tps[i] / static_cast<double>(n_pos));
    c.thresholds.push_back(thr[i]);
  }
  return c;
}

/// A bootstrap confidence interval of the ROC AUC.
struct AucCi {
  double auc = 0;           ///< AUC of the full data
  double lower = 0;         ///< alpha/2 percentile of the bootstrap AUCs
  double upper = 0;         ///< 1 - alpha/2 percentile of the bootstrap AUCs
  double alpha = 0.05;      ///< 1 - confidence level
  std::size_t n_boot = 0;   ///< resamples drawn
  std::size_t n_valid = 0;  ///< resamples with both classes, which the percentiles use
};

/// Percentile bootstrap (1 - alpha) confidence interval of the ROC AUC (Efron & Tibshirani
/// 1993, ch. 13). Each of `n_boot` resamples draws n case indices with replacement; resamples
/// with a single class are skipped (counted in n_boot, not n_valid). The bounds are
/// numpy.percentile's linear-interpolation percentiles alpha/2 and 1 - alpha/2 of the valid
/// AUCs.
///
/// Deterministic by `seed` on every platform: std::mt19937_64(seed) drives the draws, and each
/// index in [0, n) is detail::uniform_index (rejection of x < 2^64 mod n, then x mod n), so
/// the resamples can be reproduced in another language. O(n) per resample (the scores are
/// sorted once; a resample is a vector of multiplicities).
inline AucCi auc_bootstrap_ci(const std::vector<int>& labels, const std::vector<double>& scores,
                              std::size_t n_boot = 2000, double alpha = 0.05, std::uint64_t seed = 0) {
  const char* fn = "auc_bootstrap_ci";
  detail::check_binary(labels, scores, fn);
  if (n_boot == 0) throw InvalidArgument("auc_bootstrap_ci: n_boot must be >= 1");
  if (!(alpha > 0 && alpha < 1)) throw InvalidArgument("auc_bootstrap_ci: alpha must be in (0, 1), got " + detail::fmt(alpha));
  AucCi ci;
  ci.auc = roc_auc(labels, scores);  // also checks both classes
  ci.alpha = alpha;
  ci.n_boot = n_boot;
  const std::size_t n = labels.size();
  const std::vector<std::size_t> order = detail::argsort_ascending(scores);
  const std::vector<std::size_t> starts = detail::tie_groups(scores, order);
  std::mt19937_64 rng(seed);
  std::vector<std::uint32_t> mult(n);
  std::vector<std::pair<double, double>> groups(starts.size() - 1);
  std::vector<double> aucs;
  aucs.reserve(n_boot);
  for (std::size_t b = 0; b < n_boot; ++b) {
    std::fill(mult.begin(), mult.end(), 0u);
    for (std::size_t d = 0; d < n; ++d) ++mult[detail::uniform_index(rng, n)];
    double P = 0, N = 0;
    for (std::size_t g = 0; g + 1 < starts.size(); ++g) {
      double p = 0, q = 0;
      for (std::size_t r = starts[g]; r < starts[g + 1]; ++r) {
        const std::size_t i = order[r];
        (labels[i] == 1 ? p : q) += mult[i];
      }
      groups[g] = {p, q};
      P += p;
      N += q;
    }
    if (P == 0 || N == 0) continue;
    aucs.push_back(detail::auc_from_groups(groups, P, N));
  }
  ci.n_valid = aucs.size();
  if (aucs.empty())
    throw InvalidArgument("auc_bootstrap_ci: every resample had a single class; too few cases of one class");
  std::sort(aucs.begin(), aucs.end());
  ci.lower = detail::quantile_sorted(aucs, alpha / 2);
  ci.upper = detail::quantile_sorted(aucs, 1 - alpha / 2);
  return ci;
}

/// The 2x2 confusion table at a threshold (positive when score >= threshold).
struct ConfusionCounts {
  std::size_t tp = 0, fp = 0, tn = 0, fn = 0;
  std::size_t total() const { return tp + fp + tn + fn; }
};

/// Confusion counts of binary labels against scores thresholded at `threshold`.
inline ConfusionCounts confusion_counts(const std::vector<int>& labels, const std::vector<double>& scores,
                                        double threshold = 0.5) {
  detail::check_binary(labels, scores, "confusion_counts");
  detail::require_threshold(threshold, "confusion_counts");
  ConfusionCounts c;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const bool p = scores[i] >= threshold;
    if (labels[i] == 1)
      (p ? c.tp : c.fn) += 1;
    else
      (p ? c.fp : c.tn) += 1;
  }
  return c;
}

/// Fraction of cases classified correctly at `threshold`, (TP + TN) / n.
inline double accuracy(const std::vector<int>& labels, const std::vector<double>& scores, double threshold = 0.5) {
  const ConfusionCounts c = confusion_counts(labels, scores, threshold);
  return static_cast<double>(c.tp + c.tn) / static_cast<double>(c.total());
}

/// Sensitivity (recall, true positive rate) TP / (TP + FN) at `threshold`. Needs a positive case.
inline double sensitivity(const std::vector<int>& labels, const std::vector<double>& scores, double threshold = 0.5) {
  const ConfusionCounts c = confusion_counts(labels, scores, threshold);
  if (c.tp + c.fn == 0) throw InvalidArgument("sensitivity: labels have no positive case");
  return static_cast<double>(c.tp) / static_cast<double>(c.tp + c.fn);
}

/// Same as sensitivity.
inline double recall(const std::vector<int>& labels, const std::vector<double>& scores, double threshold = 0.5) {
  return sensitivity(labels, scores, threshold);
}

/// Specificity (true negative rate) TN / (TN + FP) at `threshold`. Needs a negative case.
inline double specificity(const std::vector<int>& labels, const std::vector<double>& scores, double threshold = 0.5) {
  const ConfusionCounts c = confusion_counts(labels, scores, threshold);
  if (c.tn + c.fp == 0) throw InvalidArgument("specificity: labels have no negative case");
  return static_cast<double>(c.tn) / static_cast<double>(c.tn + c.fp);
}

/// Precision (positive predictive value) TP / (TP + FP) at `threshold`; 0 when no case is
/// predicted positive (sklearn's zero_division value).
inline double precision(const std::vector<int>& labels, const std::vector<double>& scores, double threshold = 0.5) {
  const ConfusionCounts c = confusion_counts(labels, scores, threshold);
  return c.tp + c.fp == 0 ? 0.0 : static_cast<double>(c.tp) / static_cast<double>(c.tp + c.fp);
}

/// F1 score 2 TP / (2 TP + FP + FN), the harmonic mean of precision and sensitivity, at
/// `threshold` (sklearn.metrics.f1_score). Needs a positive case.
inline double f1(const std::vector<int>& labels, const std::vector<double>& scores, double threshold = 0.5) {
  const ConfusionCounts c = confusion_counts(labels, scores, threshold);
  if (c.tp + c.fn == 0) throw InvalidArgument("f1: labels have no positive case");
  return 2.0 * static_cast<double>(c.tp) / static_cast<double>(2 * c.tp + c.fp + c.fn);
}

/// Brier score, mean (score - label)^2, of probabilities in [0, 1]
/// (sklearn.metrics.brier_score_loss). One class is allowed.
inline double brier(const std::vector<int>& labels, const std::vector<double>& scores) {
  detail::check_binary(labels, scores, "brier");
  detail::require_probabilities(scores, "brier");
  double s = 0;
  for (std::size_t i = 0; i < labels.size(); ++i) s += (scores[i] - labels[i]) * (scores[i] - labels[i]);
  return s / static_cast<double>(labels.size());
}

/// A reliability diagram: per non-empty bin, the observed and the predicted frequency.
struct CalibrationBins {
  std::vector<double> prob_true;    ///< fraction of positive labels in the bin
  std::vector<double> prob_pred;    ///< mean score in the bin
  std::vector<std::size_t> counts;  ///< cases in the bin
  std::vector<std::size_t> bins;    ///< index of the bin, 0..n_bins-1
  /// Expected calibration error, sum over bins of counts/n |prob_true - prob_pred|
  /// (Naeini et al., AAAI 2015).
  double ece = 0;
};

/// Calibration bins as sklearn.calibration.calibration_curve(strategy='uniform'): n_bins bins
/// of equal width on [0, 1], edges e_b = b (1 / n_bins); bin 0 is [0, e_1], bin b > 0 is
/// (e_b, e_{b+1}] (a score on an inner edge falls in the lower bin, as numpy.searchsorted
/// puts it). Empty bins are left out. Scores must lie in [0, 1]; one class is allowed.
inline CalibrationBins calibration_bins(const std::vector<int>& labels, const std::vector<double>& scores,
                                        std::size_t n_bins = 10) {
  const char* fn = "calibration_bins";
  detail::check_binary(labels, scores, fn);
  detail::require_probabilities(scores, fn);
  if (n_bins == 0) throw InvalidArgument("calibration_bins: n_bins must be >= 1");
  const double step = 1.0 / static_cast<double>(n_bins);
  std::vector<double> inner(n_bins - 1);
  for (std::size_t b = 1; b < n_bins; ++b) inner[b - 1] = static_cast<double>(b) * step;
  std::vector<double> sum_score(n_bins, 0.0), sum_true(n_bins, 0.0);
  std::vector<std::size_t> total(n_bins, 0);
  for (std::size_t i = 0; i < scores.size(); ++i) {
    const std::size_t b = static_cast<std::size_t>(std::lower_bound(inner.begin(), inner.end(), scores[i]) - inner.begin());
    sum_score[b] += scores[i];
    sum_true[b] += labels[i];
    ++total[b];
  }
  CalibrationBins c;
  for (std::size_t b = 0; b < n_bins; ++b) {
    if (total[b] == 0) continue;
    const double t = static_cast<double>(total[b]);
    c.prob_true.push_back(sum_true[b] / t);
    c.prob_pred.push_back(sum_score[b] / t);
    c.counts.push_back(total[b]);
    c.bins.push_back(b);
    c.ece += t * std::abs(c.prob_true.back() - c.prob_pred.back());
  }
  c.ece /= static_cast<double>(scores.size());
  return c;
}

/// Every binary classification metric of probabilities against labels.
struct ClassificationReport {
  std::size_t n = 0, n_pos = 0, n_neg = 0;
  double threshold = 0.5;
  double auc = 0;
  /// Bootstrap CI of the AUC; lower = upper = NaN and n_boot = 0 when no bootstrap was asked.
  AucCi auc_ci;
  double accuracy = 0, sensitivity = 0, specificity = 0, precision = 0, f1 = 0;
  double brier = 0;
  double ece = 0;  ///< expected calibration error over 10 uniform bins
  ConfusionCounts counts;
};

/// roc_auc, auc_bootstrap_ci (skipped when n_boot = 0), the threshold metrics, brier and the
/// ECE of calibration_bins(labels, scores, 10) in one call. Needs both classes and scores that
/// are probabilities in [0, 1].
inline ClassificationReport classification_report(const std::vector<int>& labels, const std::vector<double>& scores,
                                                  double threshold = 0.5, std::size_t n_boot = 2000,
                                                  std::uint64_t seed = 0, double alpha = 0.05) {
  const char* fn = "classification_report";
  detail::check_binary(labels, scores, fn);
  detail::require_probabilities(scores, fn);
  detail::require_threshold(threshold, fn);
  ClassificationReport r;
  r.n = labels.size();
  r.n_pos = detail::count_positive(labels);
  r.n_neg = r.n - r.n_pos;
  detail::require_both_classes(r.n_pos, r.n_neg, fn);
  r.threshold = threshold;
  r.auc = roc_auc(labels, scores);
  if (n_boot > 0) {
    r.auc_ci = auc_bootstrap_ci(labels, scores, n_boot, alpha, seed);
  } else {
    r.auc_ci.auc = r.auc;
    r.auc_ci.alpha = alpha;
    r.auc_ci.lower = r.auc_ci.upper = std::numeric_limits<double>::quiet_NaN();
  }
  r.counts = confusion_counts(labels, scores, threshold);
  r.accuracy = accuracy(labels, scores, threshold);
  r.sensitivity = sensitivity(labels, scores, threshold);
  r.specificity = specificity(labels, scores, threshold);
  r.precision = precision(labels, scores, threshold);
  r.f1 = f1(labels, scores, threshold);
  r.brier = brier(labels, scores);
  r.ece = calibration_bins(labels, scores, 10).ece;
  return r;
}

// ---------------------------------------------------------------------------------------
// Multi-class (e.g. an ordinal mRS head)
// ---------------------------------------------------------------------------------------

/// Largest number of classes the multi-class metrics accept.
constexpr int kMaxClasses = 1024;

namespace detail {

/// Number of classes: n_classes when > 0 (every label must be below it), else max label + 1.
inline std::size_t class_count(const std::vector<int>& truth, const std::vector<int>& pred, int n_classes,
                               const char* fn) {
  require_nonempty(truth.size(), fn);
  require_same_size(truth.size(), pred.size(), fn, "truth", "pred");
  if (n_classes < 0 || n_classes > kMaxClasses)
    throw InvalidArgument(std::string(fn) + ": n_classes must be in [0, " + std::to_string(kMaxClasses) + "], got " +
                          std::to_string(n_classes));
  int mx = 0;
  for (const std::vector<int>* v : {&truth, &pred})
    for (std::size_t i = 0; i < v->size(); ++i) {
      const int c = (*v)[i];
      if (c < 0) throw InvalidArgument(std::string(fn) + ": class labels must be >= 0, got " + std::to_string(c));
      if (c >= kMaxClasses)
        throw InvalidArgument(std::string(fn) + ": class label " + std::to_string(c) + " is above the limit of " +
                              std::to_string(kMaxClasses) + " classes");
      if (n_classes > 0 && c >= n_classes)
        throw InvalidArgument(std::string(fn) + ": class label " + std::to_string(c) + " is not below n_classes = " +
                              std::to_string(n_classes));
      mx = std::max(mx, c);
    }
  return n_classes > 0 ? static_cast<std::size_t>(n_classes) : static_cast<std::size_t>(mx) + 1;
}

}  // namespace detail

/// Fraction of equal labels, mean(truth == pred) (sklearn.metrics.accuracy_score). Labels may
/// be any integers.
inline double accuracy(const std::vector<int>& truth, const std::vector<int>& pred) {
  detail::require_nonempty(truth.size(), "accuracy");
  detail::require_same_size(truth.size(), pred.size(), "accuracy", "truth", "pred");
  std::size_t ok = 0;
  for (std::size_t i = 0; i < truth.size(); ++i) ok += truth[i] == pred[i];
  return static_cast<double>(ok) / static_cast<double>(truth.size());
}

/// A K x K confusion matrix: rows are true classes, columns predicted classes.
struct ConfusionMatrix {
  std::size_t n_classes = 0;
  std::vector<std::size_t> counts;  ///< row-major, counts[truth * n_classes + pred]
  std::size_t at(std::size_t truth, std::size_t pred) const { return counts[truth * n_classes + pred]; }
};

/// Confusion matrix of class labels 0..K-1, K = n_classes, or max label + 1 when n_classes = 0
/// (sklearn.metrics.confusion_matrix(truth, pred, labels=range(K))).
inline ConfusionMatrix confusion_matrix(const std::vector<int>& truth, const std::vector<int>& pred, int n_classes = 0) {
  ConfusionMatrix m;
  m.n_classes = detail::class_count(truth, pred, n_classes, "confusion_matrix");
  m.counts.assign(m.n_classes * m.n_classes, 0);
  for (std::size_t i = 0; i < truth.size(); ++i)
    ++m.counts[static_cast<std::size_t>(truth[i]) * m.n_classes + static_cast<std::size_t>(pred[i])];
  return m;
}

/// Macro-averaged F1: the unweighted mean over classes of 2 TP_c / (2 TP_c + FP_c + FN_c)
/// (0 for a class with no true and no predicted case). With n_classes = 0 the classes are those
/// present in truth or pred (sklearn.metrics.f1_score(average='macro')); with n_classes = K all
/// classes 0..K-1 count (sklearn's labels=range(K)).
inline double macro_f1(const std::vector<int>& truth, const std::vector<int>& pred, int n_classes = 0) {
  const std::size_t k = detail::class_count(truth, pred, n_classes, "macro_f1");
  std::vector<std::size_t> tp(k, 0), n_true(k, 0), n_pred(k, 0);
  for (std::size_t i = 0; i < truth.size(); ++i) {
    ++n_true[static_cast<std::size_t>(truth[i])];
    ++n_pred[static_cast<std::size_t>(pred[i])];
    tp[static_cast<std::size_t>(truth[i])] += truth[i] == pred[i];
  }
  double s = 0;
  std::size_t used = 0;
  for (std::size_t c = 0; c < k; ++c) {
    const std::size_t den = n_true[c] + n_pred[c];  // 2 TP + FP + FN
    if (den == 0 && n_classes == 0) continue;      // absent class
    ++used;
    if (den > 0) s += 2.0 * static_cast<double>(tp[c]) / static_cast<double>(den);
  }
  return s / static_cast<double>(used);
}

// ---------------------------------------------------------------------------------------
// Segmentation
// ---------------------------------------------------------------------------------------

/// Dice coefficient 2 |A ∩ B| / (|A| + |B|) of two masks of n voxels (non-zero = foreground);
/// 1 when both masks are empty.
inline double dice(const std::uint8_t* a, const std::uint8_t* b, std::size_t n) {
  if (n == 0) throw InvalidArgument("dice: empty masks (n = 0)");
  if (a == nullptr || b == nullptr) throw InvalidArgument("dice: null mask pointer");
  std::size_t na = 0, nb = 0, both = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const bool x = a[i] != 0, y = b[i] != 0;
    na += x;
    nb += y;
    both += x && y;
  }
  if (na + nb == 0) return 1.0;
  return 2.0 * static_cast<double>(both) / static_cast<double>(na + nb);
}

/// Dice coefficient of two masks of the same size.
inline double dice(const std::vector<std::uint8_t>& a, const std::vector<std::uint8_t>& b) {
  detail::require_same_size(a.size(), b.size(), "dice", "a", "b");
  return dice(a.data(), b.data(), a.size());
}

// ---------------------------------------------------------------------------------------
// ABC/2: the clinical volume baseline
// ---------------------------------------------------------------------------------------

/// The measurements behind an ABC/2 volume.
struct Abc2 {
  double a_mm = 0;          ///< largest diameter on the largest slice
  double b_mm = 0;          ///< extent of that slice perpendicular to A
  double c_mm = 0;          ///< (weighted) number of slices with hematoma times slice thickness
  double volume_ml = 0;     ///< A B C / 2 / 1000
  std::size_t slice = 0;    ///< k of the slice with the largest area (the first one on ties)
  std::size_t area_voxels = 0;  ///< voxels of that slice
  double slices = 0;        ///< the (weighted) slice count, C / sk
};

namespace detail {

struct P2 {
  std::int64_t x, y;
};

inline std::int64_t cross(const P2& o, const P2& a, const P2& b) {
  return (a.x - o.x) * (b.y - o.y) - (a.y - o.y) * (b.x - o.x);
}

/// Convex hull (Andrew's monotone chain, collinear points dropped) of integer points.
inline std::vector<P2> convex_hull(std::vector<P2> p) {
  std::sort(p.begin(), p.end(), [](const P2& a, const P2& b) { return a.x < b.x || (a.x == b.x && a.y < b.y); });
  p.erase(std::unique(p.begin(), p.end(), [](const P2& a, const P2& b) { return a.x == b.x && a.y == b.y; }), p.end());
  if (p.size() < 3) return p;
  std::vector<P2> h(2 * p.size());
  std::size_t m = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    while (m >= 2 && cross(h[m - 2], h[m - 1], p[i]) <= 0) --m;
    h[m++] = p[i];
  }
  for (std::size_t i = p.size() - 1, t = m + 1; i-- > 0;) {
    while (m >= t && cross(h[m - 2], h[m - 1], p[i]) <= 0) --m;
    h[m++] = p[i];
  }
  h.resize(m - 1);
  return h;
}

}  // namespace detail

/// ABC/2 hematoma volume (Kothari et al., "The ABCs of measuring intracerebral hemorrhage
/// volumes", Stroke 1996;27:1304) from a binary mask (non-zero = hematoma) of shape
/// (ni, nj, nk), i fastest in memory, voxel size (si, sj, sk) mm.
///
/// Assumptions: k is the axial slice axis (reorient to RAS first when the scan is not stored
/// in axial slices; a gantry tilt is ignored), and a voxel is a box si x sj x sk.
/// - The slice with the largest hematoma area is the first k with the most voxels.
/// - A is the largest diameter of the hematoma on that slice and B its extent perpendicular
///   to A: both measured on the union of the voxels' squares (the maximum Feret diameter of
///   the convex hull of the voxel corners, and the caliper width of that hull across A), i.e.
///   centre-to-centre distance plus the voxel's own width in that direction. For a convex
///   hematoma B equals the largest diameter perpendicular to A. A single voxel gives
///   A B / 2 = si sj, and a box of voxels gives exactly its volume.
/// - C = slices x sk. With `weighted` (Kothari's method) a slice counts 1 when its area is at
///   least 75 % of the largest, 0.5 when at least 25 %, 0 below; otherwise every slice with
///   any hematoma counts 1.
/// - volume = A B C / 2 mm³, reported in mL. An empty mask gives 0.
/// For an ellipsoid of semi-axes a, b, c along i, j, k the unweighted ABC/2 tends to
/// (2a)(2b)(2c)/2 = 4 abc, 95 % of the true 4/3 pi abc.
inline Abc2 abc2(const std::uint8_t* mask, std::size_t ni, std::size_t nj, std::size_t nk, double si, double sj,
                 double sk, bool weighted = true) {
  if (ni == 0 || nj == 0 || nk == 0)
    throw InvalidArgument("abc2: the mask shape must be non-zero, got (" + std::to_string(ni) + ", " +
                          std::to_string(nj) + ", " + std::to_string(nk) + ")");
  if (mask == nullptr) throw InvalidArgument("abc2: null mask pointer");
  for (double s : {si, sj, sk})
    if (!(s > 0) || !std::isfinite(s))
      throw InvalidArgument("abc2: voxel spacing must be finite and > 0 mm, got (" + detail::fmt(si) + ", " +
                            detail::fmt(sj) + ", " + detail::fmt(sk) + ")");
  const std::size_t nij = ni * nj;
  std::vector<std::size_t> area(nk, 0);
  for (std::size_t k = 0; k < nk; ++k) {
    const std::uint8_t* s = mask + k * nij;
    std::size_t a = 0;
    for (std::size_t x = 0; x < nij; ++x) a += s[x] != 0;
    area[k] = a;
  }
  Abc2 r;
  r.slice = static_cast<std::size_t>(std::max_element(area.begin(), area.end()) - area.begin());
  r.area_voxels = area[r.slice];
  if (r.area_voxels == 0) return r;
  const std::size_t amax = r.area_voxels;
  for (std::size_t k = 0; k < nk; ++k) {
    if (area[k] == 0) continue;
    if (!weighted || 4 * area[k] >= 3 * amax)
      r.slices += 1.0;
    else if (4 * area[k] >= amax)
      r.slices += 0.5;
  }
  r.c_mm = r.slices * sk;

  // Corners of the first and last voxel of each row of the largest slice, in half-voxel units
  // (voxel (i, j) spans [2i - 1, 2i + 1] x [2j - 1, 2j + 1]); their hull is the hull of the
  // voxel squares. Integer coordinates keep the hull exact; mm come after (an affine map).
  std::vector<detail::P2> pts;
  const std::uint8_t* s = mask + r.slice * nij;
  for (std::size_t j = 0; j < nj; ++j) {
    const std::uint8_t* row = s + j * ni;
    std::size_t lo = ni, hi = 0;
    for (std::size_t i = 0; i < ni; ++i)
      if (row[i]) {
        lo = std::min(lo, i);
        hi = i;
      }
    if (lo == ni) continue;
    const std::int64_t y = 2 * static_cast<std::int64_t>(j);
    for (std::int64_t x : {2 * static_cast<std::int64_t>(lo) - 1, 2 * static_cast<std::int64_t>(hi) + 1}) {
      pts.push_back({x, y - 1});
      pts.push_back({x, y + 1});
    }
  }
  const std::vector<detail::P2> hull = detail::convex_hull(pts);
  const double hx = si / 2, hy = sj / 2;  // mm per half voxel
  double best = -1, ux = 1, uy = 0;
  for (std::size_t p = 0; p < hull.size(); ++p)
    for (std::size_t q = p + 1; q < hull.size(); ++q) {
      const double dx = double(hull[q].x - hull[p].x) * hx, dy = double(hull[q].y - hull[p].y) * hy;
      const double d2 = dx * dx + dy * dy;
      if (d2 > best) {
        best = d2;
        ux = dx;
        uy = dy;
      }
    }
  r.a_mm = std::sqrt(best);
  ux /= r.a_mm;
  uy /= r.a_mm;
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const detail::P2& p : hull) {
    const double v = -uy * double(p.x) * hx + ux * double(p.y) * hy;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  r.b_mm = hi - lo;
  r.volume_ml = r.a_mm * r.b_mm * r.c_mm / 2.0 / 1000.0;
  return r;
}

/// ABC/2 volume in mL (see abc2 for the method and its assumptions).
inline double abc2_ml(const std::uint8_t* mask, std::size_t ni, std::size_t nj, std::size_t nk, double si, double sj,
                      double sk, bool weighted = true) {
  return abc2(mask, ni, nj, nk, si, sj, sk, weighted).volume_ml;
}

}  // namespace ichkit::metrics
