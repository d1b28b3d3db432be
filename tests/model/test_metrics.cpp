// Tests of ichkit/model/metrics.h against hand-computed and published values: Shrout & Fleiss's
// ICC table, sklearn's documented ROC and calibration examples, exact ABC/2 of boxes and the
// analytic ABC/2 of an ellipsoid. tests/python/test_metrics.py compares every metric with
// scikit-learn / scipy on random data.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "ichkit/core/error.h"
#include "ichkit/model/metrics.h"

namespace m = ichkit::metrics;
using ichkit::InvalidArgument;
using V = std::vector<double>;
using L = std::vector<int>;

namespace {

const double kNan = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

/// A mask of shape (ni, nj, nk), i fastest.
struct Mask {
  std::size_t ni, nj, nk;
  std::vector<std::uint8_t> v;
  Mask(std::size_t a, std::size_t b, std::size_t c) : ni(a), nj(b), nk(c), v(a * b * c, 0) {}
  std::uint8_t& operator()(std::size_t i, std::size_t j, std::size_t k) { return v[i + ni * (j + nj * k)]; }
  /// Sets the box [i0, i1) x [j0, j1) on slice k.
  void box(std::size_t i0, std::size_t i1, std::size_t j0, std::size_t j1, std::size_t k) {
    for (std::size_t j = j0; j < j1; ++j)
      for (std::size_t i = i0; i < i1; ++i) (*this)(i, j, k) = 1;
  }
  m::Abc2 abc2(double si, double sj, double sk, bool weighted = true) const {
    return m::abc2(v.data(), ni, nj, nk, si, sj, sk, weighted);
  }
};

}  // namespace

TEST_CASE("perfect regression: MAE 0, RMSE 0, R2 1, r 1, ICC 1, no bias") {
  const V t{3.5, 10.0, 0.7, 42.0, 17.25, 8.0};
  CHECK(m::mae(t, t) == 0.0);
  CHECK(m::rmse(t, t) == 0.0);
  CHECK(m::r2(t, t) == 1.0);
  CHECK(m::pearson_r(t, t) == doctest::Approx(1.0).epsilon(1e-15));
  CHECK(m::icc(t, t, m::IccType::Icc1) == doctest::Approx(1.0).epsilon(1e-14));
  CHECK(m::icc(t, t, m::IccType::Icc2) == doctest::Approx(1.0).epsilon(1e-14));
  CHECK(m::icc(t, t, m::IccType::Icc3) == doctest::Approx(1.0).epsilon(1e-14));
  const m::BlandAltman b = m::bland_altman(t, t);
  CHECK(b.bias == 0.0);
  CHECK(b.sd == 0.0);
  CHECK(b.lower == 0.0);
  CHECK(b.upper == 0.0);
}

TEST_CASE("regression metrics on a hand-computed example") {
  const V t{1, 2, 3, 4}, p{1.5, 1.5, 4, 3};
  // errors 0.5, -0.5, 1, -1
  CHECK(m::mae(t, p) == doctest::Approx(0.75));
  CHECK(m::rmse(t, p) == doctest::Approx(std::sqrt(2.5 / 4)));
  CHECK(m::r2(t, p) == doctest::Approx(1 - 2.5 / 5.0));
  // pearson: x - mx = (-1.5, -.5, .5, 1.5), y - my = (-1, -1, 1.5, .5)
  CHECK(m::pearson_r(t, p) == doctest::Approx(3.5 / std::sqrt(5.0 * 4.5)));
  CHECK(m::pearson_r(t, V{4, 3, 2, 1}) == doctest::Approx(-1.0));
  // constant truth: sklearn's force_finite convention
  CHECK(m::r2(V{2, 2, 2}, V{2, 2, 2}) == 1.0);
  CHECK(m::r2(V{2, 2, 2}, V{1, 2, 3}) == 0.0);
  // a prediction worse than the mean has negative R2
  CHECK(m::r2(t, V{4, 3, 2, 1}) == doctest::Approx(1 - 20.0 / 5.0));
}

TEST_CASE("ICC reproduces Shrout & Fleiss (1979), Tables 2-4") {
  // 6 targets rated by 4 judges; the paper's mean squares are BMS 11.24, JMS 32.49, EMS 1.02,
  // WMS 6.26 and ICC(1,1) = .17, ICC(2,1) = .29, ICC(3,1) = .71.
  const std::vector<std::vector<double>> judges{{9, 6, 8, 7, 10, 6}, {2, 1, 4, 1, 5, 2}, {5, 3, 6, 2, 6, 4}, {8, 2, 8, 6, 9, 7}};
  const m::TwoWayAnova a = m::two_way_anova(judges);
  CHECK(a.n == 6);
  CHECK(a.k == 4);
  CHECK(a.ms_rows == doctest::Approx(11.241666666666667).epsilon(1e-12));
  CHECK(a.ms_cols == doctest::Approx(32.486111111111111).epsilon(1e-12));
  CHECK(a.ms_error == doctest::Approx(1.0194444444444444).epsilon(1e-12));
  CHECK(a.ms_within == doctest::Approx(6.2638888888888889).epsilon(1e-12));
  CHECK(std::abs(m::icc(judges, m::IccType::Icc1) - 0.17) < 0.005);
  CHECK(std::abs(m::icc(judges, m::IccType::Icc2) - 0.29) < 0.005);
  CHECK(std::abs(m::icc(judges, m::IccType::Icc3) - 0.71) < 0.005);
  CHECK(m::icc(judges, m::IccType::Icc1) == doctest::Approx(0.16574176840547553).epsilon(1e-12));
  CHECK(m::icc(judges, m::IccType::Icc2) == doctest::Approx(184.0 / 635.0).epsilon(1e-12));
  CHECK(m::icc(judges, m::IccType::Icc3) == doctest::Approx(0.7148407148407154).epsilon(1e-12));
}

TEST_CASE("ICC(2,1) penalises a constant bias, ICC(3,1) does not") {
  const V t{1, 2, 3, 4}, p{2, 3, 4, 5};
  // BMS = 10/3, JMS = 2, EMS = 0, WMS = 1/2
  CHECK(m::icc(t, p, m::IccType::Icc3) == doctest::Approx(1.0));
  CHECK(m::icc(t, p, m::IccType::Icc2) == doctest::Approx(10.0 / 13.0));
  CHECK(m::icc(t, p, m::IccType::Icc1) == doctest::Approx(17.0 / 23.0));
  CHECK(m::icc(t, p) == m::icc(t, p, m::IccType::Icc2));
  CHECK(m::icc_type_from_string("ICC(3,1)") == m::IccType::Icc3);
  CHECK(m::icc_type_from_string("icc2") == m::IccType::Icc2);
  CHECK(m::icc_type_from_string("ICC (1, 1)") == m::IccType::Icc1);
  CHECK_THROWS_AS(m::icc_type_from_string("ICC(2,k)"), InvalidArgument);
}

TEST_CASE("Bland-Altman: bias, sd with ddof = 1, limits at 1.96 sd") {
  const V t{10, 20, 30, 40}, p{12, 19, 35, 44};  // d = 2, -1, 5, 4: mean 2.5
  const m::BlandAltman b = m::bland_altman(t, p);
  const double sd = std::sqrt((0.25 + 12.25 + 6.25 + 2.25) / 3);
  CHECK(b.bias == doctest::Approx(2.5));
  CHECK(b.sd == doctest::Approx(sd));
  CHECK(b.lower == doctest::Approx(2.5 - 1.96 * sd));
  CHECK(b.upper == doctest::Approx(2.5 + 1.96 * sd));
  CHECK(m::bland_altman(t, p, 2.0).upper == doctest::Approx(2.5 + 2 * sd));
}

TEST_CASE("regression_report gathers the single metrics and NaNs what is undefined") {
  const V t{5, 12, 30, 2, 60, 18}, p{7, 10, 26, 4, 55, 21};
  const m::RegressionReport r = m::regression_report(t, p);
  CHECK(r.n == 6);
  CHECK(r.mae == m::mae(t, p));
  CHECK(r.rmse == m::rmse(t, p));
  CHECK(r.r2 == m::r2(t, p));
  CHECK(r.pearson_r == m::pearson_r(t, p));
  CHECK(r.icc2_1 == m::icc(t, p, m::IccType::Icc2));
  CHECK(r.icc3_1 == m::icc(t, p, m::IccType::Icc3));
  CHECK(r.bland_altman.bias == m::bland_altman(t, p).bias);
  // an untrained model predicting a constant: r is undefined, the report says NaN
  const m::RegressionReport c = m::regression_report(t, V(6, 20.0));
  CHECK(std::isnan(c.pearson_r));
  CHECK(c.icc3_1 == doctest::Approx(0.0));  // BMS = EMS: defined, and 0
  CHECK_THROWS_AS(m::pearson_r(t, V(6, 20.0)), InvalidArgument);
  CHECK_THROWS_AS(m::regression_report(t, V{1, 2}), InvalidArgument);
}

TEST_CASE("regression errors: empty, length mismatch, NaN/inf, too few values, constant ratings") {
  CHECK_THROWS_AS(m::mae(V{}, V{}), InvalidArgument);
  CHECK_THROWS_AS(m::rmse(V{1, 2}, V{1}), InvalidArgument);
  CHECK_THROWS_AS(m::mae(V{1, kNan}, V{1, 2}), InvalidArgument);
  CHECK_THROWS_AS(m::rmse(V{1, 2}, V{1, kInf}), InvalidArgument);
  CHECK_THROWS_AS(m::r2(V{1}, V{1}), InvalidArgument);
  CHECK_THROWS_AS(m::pearson_r(V{1}, V{2}), InvalidArgument);
  CHECK_THROWS_AS(m::pearson_r(V{1, 1, 1}, V{1, 2, 3}), InvalidArgument);
  CHECK_THROWS_AS(m::icc(V{1}, V{1}), InvalidArgument);
  CHECK_THROWS_AS(m::icc(V{3, 3, 3}, V{3, 3, 3}), InvalidArgument);
  CHECK_THROWS_AS(m::icc(std::vector<std::vector<double>>{{1, 2, 3}}), InvalidArgument);
  CHECK_THROWS_AS(m::icc(std::vector<std::vector<double>>{{1, 2, 3}, {1, 2}}), InvalidArgument);
  CHECK_THROWS_AS(m::bland_altman(V{1}, V{2}), InvalidArgument);
  CHECK_THROWS_AS(m::bland_altman(V{1, 2}, V{2, 3}, -1.0), InvalidArgument);
  try {
    m::mae(V{1, 2, 3}, V{1, 2});
    FAIL("no exception");
  } catch (const InvalidArgument& e) {
    CHECK(std::string(e.what()) == "mae: truth and pred differ in length (3 vs 2)");
  }
}

TEST_CASE("AUC: separable 1, reversed 0, all tied 0.5, partial ties count one half") {
  const L y{0, 0, 1, 1};
  CHECK(m::roc_auc(y, V{0.1, 0.4, 0.35, 0.8}) == 0.75);  // sklearn's documented example
  CHECK(m::roc_auc(y, V{0.1, 0.2, 0.8, 0.9}) == 1.0);
  CHECK(m::roc_auc(y, V{0.9, 0.8, 0.2, 0.1}) == 0.0);
  CHECK(m::roc_auc(y, V{0.5, 0.5, 0.5, 0.5}) == 0.5);
  CHECK(m::roc_auc(L{0, 1, 0, 1}, V{0.5, 0.5, 0.2, 0.9}) == 0.875);
  // scores need not be probabilities; a monotone transform keeps the AUC
  CHECK(m::roc_auc(y, V{-2.2, -0.4, -0.6, 1.4}) == 0.75);
}

TEST_CASE("roc_curve keeps every threshold, or drops collinear points like sklearn") {
  const m::RocCurve c = m::roc_curve(L{0, 0, 1, 1}, V{0.1, 0.4, 0.35, 0.8});
  CHECK(c.fpr == V{0, 0, 0.5, 0.5, 1});
  CHECK(c.tpr == V{0, 0.5, 0.5, 1, 1});
  CHECK(c.thresholds == V{kInf, 0.8, 0.4, 0.35, 0.1});
  const m::RocCurve all = m::roc_curve(L{1, 1, 0, 0}, V{0.9, 0.8, 0.3, 0.2});
  CHECK(all.fpr == V{0, 0, 0, 0.5, 1});
  CHECK(all.tpr == V{0, 0.5, 1, 1, 1});
  const m::RocCurve d = m::roc_curve(L{1, 1, 0, 0}, V{0.9, 0.8, 0.3, 0.2}, true);
  CHECK(d.fpr == V{0, 0, 0, 1});
  CHECK(d.tpr == V{0, 0.5, 1, 1});
  CHECK(d.thresholds == V{kInf, 0.9, 0.8, 0.2});
  // ties merge into one point
  const m::RocCurve t = m::roc_curve(L{0, 1, 0, 1}, V{0.5, 0.5, 0.2, 0.9});
  CHECK(t.thresholds == V{kInf, 0.9, 0.5, 0.2});
  CHECK(t.fpr == V{0, 0, 0.5, 1});
  CHECK(t.tpr == V{0, 0.5, 1, 1});
}

TEST_CASE("the trapezoidal area under roc_curve equals roc_auc") {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> coin(0, 1), level(0, 20);
  for (int rep = 0; rep < 20; ++rep) {
    L y(60);
    V s(60);
    for (std::size_t i = 0; i < y.size(); ++i) {
      y[i] = coin(rng);
      s[i] = level(rng) / 20.0 + 0.2 * y[i];  // many ties
    }
    y[0] = 0;
    y[1] = 1;
    const m::RocCurve c = m::roc_curve(y, s);
    double area = 0;
    for (std::size_t i = 1; i < c.fpr.size(); ++i) area += (c.fpr[i] - c.fpr[i - 1]) * (c.tpr[i] + c.tpr[i - 1]) / 2;
    CHECK(area == doctest::Approx(m::roc_auc(y, s)).epsilon(1e-12));
  }
}

TEST_CASE("auc_bootstrap_ci is deterministic by seed and brackets the AUC") {
  std::mt19937 rng(3);
  std::normal_distribution<double> z;
  L y(120);
  V s(120);
  for (std::size_t i = 0; i < y.size(); ++i) {
    y[i] = i % 3 == 0;
    s[i] = 1 / (1 + std::exp(-(z(rng) + 1.2 * y[i])));
  }
  const m::AucCi a = m::auc_bootstrap_ci(y, s, 500, 0.05, 42), b = m::auc_bootstrap_ci(y, s, 500, 0.05, 42);
  const m::AucCi c = m::auc_bootstrap_ci(y, s, 500, 0.05, 43);
  CHECK(a.auc == m::roc_auc(y, s));
  CHECK(a.lower == b.lower);
  CHECK(a.upper == b.upper);
  CHECK((a.lower != c.lower || a.upper != c.upper));
  CHECK(a.lower < a.auc);
  CHECK(a.auc < a.upper);
  CHECK(a.upper - a.lower < 0.3);
  CHECK(a.n_boot == 500);
  CHECK(a.n_valid == 500);
  // a wider confidence level gives a wider interval from the same resamples
  const m::AucCi w = m::auc_bootstrap_ci(y, s, 500, 0.01, 42);
  CHECK(w.lower <= a.lower);
  CHECK(w.upper >= a.upper);
  // separable data: every resample has AUC 1
  const m::AucCi sep = m::auc_bootstrap_ci(L{0, 0, 0, 1, 1, 1}, V{.1, .2, .3, .7, .8, .9}, 200, 0.05, 1);
  CHECK(sep.lower == 1.0);
  CHECK(sep.upper == 1.0);
  // one positive in 10 cases: about (9/10)^10 = 35 % of resamples have none and are skipped
  const m::AucCi rare = m::auc_bootstrap_ci(L{0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, V{.1, .2, .3, .4, .5, .6, .7, .8, .9, .95}, 1000, 0.05, 5);
  CHECK(rare.n_valid < 800);
  CHECK(rare.n_valid > 500);
  CHECK_THROWS_AS(m::auc_bootstrap_ci(y, s, 0), InvalidArgument);
  CHECK_THROWS_AS(m::auc_bootstrap_ci(y, s, 10, 1.0), InvalidArgument);
  CHECK_THROWS_AS(m::auc_bootstrap_ci(L{1, 1}, V{.2, .3}), InvalidArgument);
}

TEST_CASE("uniform_index is the documented rejection sampler on mt19937_64") {
  // The first outputs of std::mt19937_64(5489) are fixed by the C++ standard; the 10000th is
  // 9981545732273789042 ([rand.predef]).
  std::mt19937_64 g;
  for (int i = 0; i < 9999; ++i) g();
  CHECK(g() == 9981545732273789042ull);
  std::mt19937_64 a(12), b(12);
  for (std::uint64_t n : {1ull, 2ull, 3ull, 7ull, 100ull, 1000003ull}) {
    const std::uint64_t t = (0 - n) % n;
    for (int rep = 0; rep < 50; ++rep) {
      std::uint64_t x;
      do x = b(); while (x < t);
      CHECK(m::detail::uniform_index(a, n) == x % n);
    }
  }
}

TEST_CASE("threshold metrics from the confusion counts (positive when score >= threshold)") {
  const L y{1, 1, 1, 0, 0, 0, 0, 1};
  const V s{0.9, 0.5, 0.3, 0.2, 0.6, 0.1, 0.49, 0.7};
  const m::ConfusionCounts c = m::confusion_counts(y, s);  // threshold 0.5
  CHECK(c.tp == 3);  // 0.9, 0.5, 0.7
  CHECK(c.fn == 1);  // 0.3
  CHECK(c.fp == 1);  // 0.6
  CHECK(c.tn == 3);
  CHECK(m::accuracy(y, s) == 6.0 / 8);
  CHECK(m::sensitivity(y, s) == 3.0 / 4);
  CHECK(m::recall(y, s) == 3.0 / 4);
  CHECK(m::specificity(y, s) == 3.0 / 4);
  CHECK(m::precision(y, s) == 3.0 / 4);
  CHECK(m::f1(y, s) == doctest::Approx(0.75));
  CHECK(m::sensitivity(y, s, 0.8) == 1.0 / 4);
  CHECK(m::specificity(y, s, 0.8) == 1.0);
  CHECK(m::f1(y, s, 0.8) == doctest::Approx(2.0 / (2 + 0 + 3)));
  // nothing predicted positive: precision 0 (sklearn's zero_division), f1 0
  CHECK(m::precision(y, s, 1.5) == 0.0);
  CHECK(m::f1(y, s, 1.5) == 0.0);
  CHECK_THROWS_AS(m::sensitivity(L{0, 0}, V{.1, .9}), InvalidArgument);
  CHECK_THROWS_AS(m::specificity(L{1, 1}, V{.1, .9}), InvalidArgument);
  CHECK_THROWS_AS(m::accuracy(y, s, kNan), InvalidArgument);
}

TEST_CASE("Brier score and calibration bins as sklearn's documented example") {
  CHECK(m::brier(L{0, 1, 1, 0}, V{0.1, 0.9, 0.8, 0.3}) == doctest::Approx(0.0375));  // sklearn docstring
  CHECK(m::brier(L{0, 0}, V{0.0, 0.5}) == doctest::Approx(0.125));                    // one class is fine
  const L y{0, 0, 0, 0, 1, 1, 1, 1, 1};
  const V p{0.1, 0.2, 0.3, 0.4, 0.65, 0.7, 0.8, 0.9, 1.0};
  const m::CalibrationBins c = m::calibration_bins(y, p, 3);
  CHECK(c.prob_true == V{0, 0.5, 1});
  REQUIRE(c.prob_pred.size() == 3);
  CHECK(c.prob_pred[0] == doctest::Approx(0.2));
  CHECK(c.prob_pred[1] == doctest::Approx(0.525));
  CHECK(c.prob_pred[2] == doctest::Approx(0.85));
  CHECK(c.counts == std::vector<std::size_t>{3, 2, 4});
  CHECK(c.bins == std::vector<std::size_t>{0, 1, 2});
  CHECK(c.ece == doctest::Approx((3 * 0.2 + 2 * 0.025 + 4 * 0.15) / 9));
  // a score on an inner edge falls in the lower bin; empty bins are left out
  const m::CalibrationBins e = m::calibration_bins(L{0, 1, 1}, V{0.0, 0.1, 0.95}, 10);
  CHECK(e.bins == std::vector<std::size_t>{0, 9});
  CHECK(e.counts == std::vector<std::size_t>{2, 1});
  CHECK(e.prob_true == V{0.5, 1.0});
  CHECK_THROWS_AS(m::calibration_bins(y, p, 0), InvalidArgument);
  CHECK_THROWS_AS(m::calibration_bins(L{0, 1}, V{0.5, 1.01}), InvalidArgument);
  CHECK_THROWS_AS(m::brier(L{0, 1}, V{-0.1, 0.5}), InvalidArgument);
}

TEST_CASE("classification_report matches the single metrics") {
  const L y{1, 1, 1, 0, 0, 0, 0, 1, 0, 1};
  const V s{0.9, 0.5, 0.3, 0.2, 0.6, 0.1, 0.49, 0.7, 0.05, 0.8};
  const m::ClassificationReport r = m::classification_report(y, s, 0.5, 300, 9);
  CHECK(r.n == 10);
  CHECK(r.n_pos == 5);
  CHECK(r.n_neg == 5);
  CHECK(r.auc == m::roc_auc(y, s));
  CHECK(r.auc_ci.lower == m::auc_bootstrap_ci(y, s, 300, 0.05, 9).lower);
  CHECK(r.accuracy == m::accuracy(y, s));
  CHECK(r.sensitivity == m::sensitivity(y, s));
  CHECK(r.specificity == m::specificity(y, s));
  CHECK(r.precision == m::precision(y, s));
  CHECK(r.f1 == m::f1(y, s));
  CHECK(r.brier == m::brier(y, s));
  CHECK(r.ece == m::calibration_bins(y, s).ece);
  CHECK(r.counts.tp == 4);
  const m::ClassificationReport nb = m::classification_report(y, s, 0.5, 0);
  CHECK(std::isnan(nb.auc_ci.lower));
  CHECK(nb.auc_ci.n_boot == 0);
  CHECK_THROWS_AS(m::classification_report(L(10, 0), s), InvalidArgument);
  CHECK_THROWS_AS(m::classification_report(y, V(10, 2.0)), InvalidArgument);
}

TEST_CASE("binary classification errors") {
  CHECK_THROWS_AS(m::roc_auc(L{}, V{}), InvalidArgument);
  CHECK_THROWS_AS(m::roc_auc(L{0, 1}, V{0.5}), InvalidArgument);
  CHECK_THROWS_AS(m::roc_auc(L{0, 2}, V{0.1, 0.5}), InvalidArgument);
  CHECK_THROWS_AS(m::roc_auc(L{1, 1, 1}, V{0.1, 0.5, 0.6}), InvalidArgument);
  CHECK_THROWS_AS(m::roc_auc(L{0, 1}, V{0.1, kNan}), InvalidArgument);
  CHECK_THROWS_AS(m::roc_curve(L{0, 0}, V{0.1, 0.5}), InvalidArgument);
  try {
    m::roc_auc(L{0, 0, 0}, V{0.1, 0.2, 0.3});
    FAIL("no exception");
  } catch (const InvalidArgument& e) {
    CHECK(std::string(e.what()) == "roc_auc: needs both classes in labels, got 0 positive and 3 negative cases");
  }
}

TEST_CASE("multi-class accuracy, confusion matrix and macro F1") {
  const L t{0, 1, 2, 2, 1}, p{0, 2, 2, 2, 1};
  CHECK(m::accuracy(t, p) == 0.8);
  const m::ConfusionMatrix cm = m::confusion_matrix(t, p);
  CHECK(cm.n_classes == 3);
  CHECK(cm.counts == std::vector<std::size_t>{1, 0, 0, 0, 1, 1, 0, 0, 2});
  CHECK(cm.at(1, 2) == 1);
  // per class F1: 1, 2/3, 4/5
  CHECK(m::macro_f1(t, p) == doctest::Approx((1 + 2.0 / 3 + 0.8) / 3));
  // class 1 absent from both: left out by default, counted as 0 with n_classes
  const L t2{0, 2, 2}, p2{0, 2, 0};
  CHECK(m::macro_f1(t2, p2) == doctest::Approx((2.0 / 3 + 2.0 / 3) / 2));
  CHECK(m::macro_f1(t2, p2, 3) == doctest::Approx((2.0 / 3 + 0 + 2.0 / 3) / 3));
  CHECK(m::confusion_matrix(t2, p2, 4).n_classes == 4);
  CHECK_THROWS_AS(m::confusion_matrix(t, p, 2), InvalidArgument);
  CHECK_THROWS_AS(m::confusion_matrix(L{-1, 0}, L{0, 0}), InvalidArgument);
  CHECK_THROWS_AS(m::macro_f1(L{0, 1}, L{0}), InvalidArgument);
  CHECK_THROWS_AS(m::macro_f1(L{0, 5000}, L{0, 1}), InvalidArgument);
  CHECK_THROWS_AS(m::accuracy(L{}, L{}), InvalidArgument);
}

TEST_CASE("Dice: overlap, empty-empty 1, disjoint 0") {
  using B = std::vector<std::uint8_t>;
  CHECK(m::dice(B{1, 1, 0, 0}, B{1, 0, 1, 0}) == 0.5);
  CHECK(m::dice(B{0, 0, 0}, B{0, 0, 0}) == 1.0);
  CHECK(m::dice(B{1, 0, 0}, B{0, 0, 1}) == 0.0);
  CHECK(m::dice(B{3, 255, 0}, B{1, 1, 0}) == 1.0);  // non-zero is foreground
  CHECK(m::dice(B{1, 1, 1, 0}, B{1, 1, 0, 0}) == doctest::Approx(0.8));
  CHECK_THROWS_AS(m::dice(B{1, 0}, B{1}), InvalidArgument);
  CHECK_THROWS_AS(m::dice(B{}, B{}), InvalidArgument);
  CHECK_THROWS_AS(m::dice(nullptr, nullptr, 3), InvalidArgument);
}

TEST_CASE("ABC/2 of a single voxel and of a box is their exact volume") {
  Mask one(5, 5, 3);
  one(2, 3, 1) = 1;
  const m::Abc2 v = one.abc2(0.5, 0.8, 5.0);
  CHECK(v.a_mm == doctest::Approx(std::hypot(0.5, 0.8)));
  CHECK(v.volume_ml == doctest::Approx(0.5 * 0.8 * 5.0 / 1000));
  CHECK(v.slice == 1);
  Mask box(20, 16, 8);
  for (std::size_t k = 2; k < 6; ++k) box.box(3, 15, 4, 9, k);  // 12 x 5 x 4 voxels
  const m::Abc2 b = box.abc2(0.45, 0.6, 2.5);
  CHECK(b.a_mm == doctest::Approx(std::hypot(12 * 0.45, 5 * 0.6)));
  CHECK(b.c_mm == doctest::Approx(4 * 2.5));
  CHECK(b.volume_ml == doctest::Approx(12 * 5 * 4 * 0.45 * 0.6 * 2.5 / 1000));
  CHECK(box.abc2(0.45, 0.6, 2.5, false).volume_ml == doctest::Approx(b.volume_ml));
  // empty mask: 0 mL
  CHECK(Mask(4, 4, 4).abc2(1, 1, 1).volume_ml == 0.0);
}

TEST_CASE("ABC/2 slice weighting follows Kothari: >= 75 % counts 1, 25-75 % one half, < 25 % 0") {
  Mask s(12, 12, 6);
  s.box(0, 10, 0, 10, 0);  // 100 voxels: the largest slice
  s.box(0, 10, 0, 8, 1);   // 80 %: 1
  s.box(0, 10, 0, 5, 2);   // 50 %: 0.5
  s.box(0, 5, 0, 5, 3);    // 25 %: 0.5
  s.box(0, 6, 0, 4, 4);    // 24 %: 0
  s.box(0, 5, 0, 3, 5);    // 15 %: 0
  const m::Abc2 w = s.abc2(1, 1, 5), u = s.abc2(1, 1, 5, false);
  CHECK(w.slice == 0);
  CHECK(w.area_voxels == 100);
  CHECK(w.slices == 3.0);
  CHECK(w.c_mm == 15.0);
  CHECK(u.slices == 6.0);
  // A x B of a 10 x 10 square is twice its area (diagonal x width across it)
  CHECK(w.a_mm * w.b_mm == doctest::Approx(200.0));
  CHECK(w.volume_ml == doctest::Approx(200.0 * 15 / 2 / 1000));
  CHECK(u.volume_ml == doctest::Approx(200.0 * 30 / 2 / 1000));
}

TEST_CASE("ABC/2 of an ellipsoid: A = 2a, B = 2b, unweighted C = 2c, volume 4abc") {
  // semi-axes 20 x 12 x 10 mm centred between voxels, voxels 0.5 x 0.5 x 1 mm: 20 slices
  const double a = 20, b = 12, c = 10, si = 0.5, sj = 0.5, sk = 1.0;
  Mask e(100, 60, 30);
  for (std::size_t k = 0; k < e.nk; ++k)
    for (std::size_t j = 0; j < e.nj; ++j)
      for (std::size_t i = 0; i < e.ni; ++i) {
        const double x = (i - (e.ni - 1) / 2.0) * si, y = (j - (e.nj - 1) / 2.0) * sj, z = (k - (e.nk - 1) / 2.0) * sk;
        e(i, j, k) = x * x / (a * a) + y * y / (b * b) + z * z / (c * c) <= 1;
      }
  const m::Abc2 u = e.abc2(si, sj, sk, false);
  // The digitised ellipse has flat ends, so its largest diameter runs slightly across the
  // major axis (here by ~5 degrees) and the width across it grows a little: A within one voxel
  // of 2a, B within two of 2b.
  CHECK(std::abs(u.a_mm - 2 * a) <= si);
  CHECK(std::abs(u.b_mm - 2 * b) <= 2 * sj);
  CHECK(u.c_mm == doctest::Approx(2 * c));
  CHECK(std::abs(u.volume_ml - 4 * a * b * c / 1000) < 0.05 * 4 * a * b * c / 1000);
  // ABC/2 underestimates the ellipsoid (4 abc vs 4/3 pi abc)
  CHECK(u.volume_ml < 4.0 / 3 * std::acos(-1.0) * a * b * c / 1000);
  // weighted: slices at |z| <= 4.5 mm have >= 75 % of the largest area (10 slices), 5.5..8.5 mm
  // between 25 and 75 % (8 slices, one half each), 9.5 mm below 25 %
  const m::Abc2 w = e.abc2(si, sj, sk, true);
  CHECK(w.slices == 14.0);
  CHECK(w.volume_ml == doctest::Approx(u.a_mm * u.b_mm * 14 / 2 / 1000));
}

TEST_CASE("ABC/2 diameters do not depend on the ellipse's orientation in the slice") {
  const double a = 15, b = 6, si = 0.4, sj = 0.4;
  for (double deg : {0.0, 30.0, 45.0, 72.0}) {
    const double th = deg * std::acos(-1.0) / 180, c = std::cos(th), s = std::sin(th);
    Mask e(90, 90, 1);
    for (std::size_t j = 0; j < e.nj; ++j)
      for (std::size_t i = 0; i < e.ni; ++i) {
        const double x = (i - 44.3) * si, y = (j - 45.1) * sj;
        const double u = c * x + s * y, v = -s * x + c * y;
        e(i, j, 0) = u * u / (a * a) + v * v / (b * b) <= 1;
      }
    const m::Abc2 r = e.abc2(si, sj, 3.0);
    CAPTURE(deg);
    CHECK(std::abs(r.a_mm - 2 * a) <= 1.5 * si);
    CHECK(std::abs(r.b_mm - 2 * b) <= 2 * si);
    CHECK(r.c_mm == 3.0);
  }
}

TEST_CASE("ABC/2 errors") {
  Mask e(4, 4, 4);
  CHECK_THROWS_AS(e.abc2(0, 1, 1), InvalidArgument);
  CHECK_THROWS_AS(e.abc2(1, kNan, 1), InvalidArgument);
  CHECK_THROWS_AS(m::abc2_ml(e.v.data(), 0, 4, 4, 1, 1, 1), InvalidArgument);
  CHECK_THROWS_AS(m::abc2_ml(nullptr, 4, 4, 4, 1, 1, 1), InvalidArgument);
}
