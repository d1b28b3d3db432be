"""ichkit.metrics against independent references: scikit-learn (regression, ROC, threshold
metrics, Brier, calibration, confusion matrix, macro F1), scipy (Pearson r), numpy formulas
(ICC from the two-way ANOVA, Bland-Altman, Dice, ABC/2 by brute force over voxel corners) and
a pure-Python std::mt19937_64 replaying the AUC bootstrap."""
import numpy as np
import pytest
import sklearn.metrics as sk
from scipy import stats
from sklearn.calibration import calibration_curve

import ichkit
from ichkit import metrics

TOL = dict(rel=1e-9, abs=1e-9)
SEEDS = [0, 1, 2, 3, 4]
SIZES = [20, 57, 200, 500]


def binary_data(seed, n, levels=None):
    """Labels with both classes and probabilities that carry signal; `levels` rounds the scores
    to that many decimals so that many are tied."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(np.int64)
    y[:2] = [0, 1]
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.3 * y - 0.5)))
    if levels is not None:
        p = np.round(p, levels)
    return y, p


def regression_data(seed, n):
    rng = np.random.default_rng(seed)
    t = rng.gamma(2.0, 12.0, size=n)  # volumes in mL, skewed like hematoma volumes
    p = 0.9 * t + 3 + rng.normal(scale=4.0, size=n)
    return t, p


# ---------------------------------------------------------------------------------------
# Regression
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", SIZES)
def test_regression_metrics_match_sklearn_and_scipy(seed, n):
    t, p = regression_data(seed, n)
    assert metrics.mae(t, p) == pytest.approx(sk.mean_absolute_error(t, p), **TOL)
    assert metrics.rmse(t, p) == pytest.approx(np.sqrt(sk.mean_squared_error(t, p)), **TOL)
    assert metrics.r2(t, p) == pytest.approx(sk.r2_score(t, p), **TOL)
    assert metrics.pearson_r(t, p) == pytest.approx(stats.pearsonr(t, p)[0], **TOL)
    # lists and integer arrays work too
    assert metrics.mae(list(t), list(p)) == metrics.mae(t, p)
    ti = np.round(t).astype(np.int32)
    assert metrics.r2(ti, p) == pytest.approx(sk.r2_score(ti, p), **TOL)


def test_r2_constant_truth_follows_sklearn():
    t = np.full(6, 4.0)
    assert metrics.r2(t, t) == sk.r2_score(t, t) == 1.0
    assert metrics.r2(t, t + np.arange(6)) == sk.r2_score(t, t + np.arange(6)) == 0.0


def anova(x):
    """Shrout & Fleiss's mean squares of an (n targets, k raters) table, from the sums of squares."""
    n, k = x.shape
    m = x.mean()
    ss_rows = k * ((x.mean(axis=1) - m) ** 2).sum()
    ss_cols = n * ((x.mean(axis=0) - m) ** 2).sum()
    ss_total = ((x - m) ** 2).sum()
    ss_error = ss_total - ss_rows - ss_cols
    return dict(bms=ss_rows / (n - 1), jms=ss_cols / (k - 1), ems=ss_error / ((n - 1) * (k - 1)),
                wms=(ss_cols + ss_error) / (n * (k - 1)), n=n, k=k)


def icc_reference(x, kind):
    a = anova(np.asarray(x, dtype=float))
    bms, jms, ems, wms, n, k = a["bms"], a["jms"], a["ems"], a["wms"], a["n"], a["k"]
    if kind == "ICC(1,1)":
        return (bms - wms) / (bms + (k - 1) * wms)
    if kind == "ICC(2,1)":
        return (bms - ems) / (bms + (k - 1) * ems + k * (jms - ems) / n)
    return (bms - ems) / (bms + (k - 1) * ems)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", ["ICC(1,1)", "ICC(2,1)", "ICC(3,1)"])
def test_icc_matches_anova_formulas(seed, n, kind):
    t, p = regression_data(seed, n)
    ref = icc_reference(np.column_stack([t, p]), kind)
    assert metrics.icc(t, p, kind=kind) == pytest.approx(ref, **TOL)
    # k raters at once: the truth and three noisy, biased readers
    rng = np.random.default_rng(seed + 100)
    x = np.column_stack([t] + [t * rng.uniform(0.8, 1.2) + rng.normal(0, 5, n) + rng.uniform(-3, 3) for _ in range(3)])
    assert metrics.icc(x, kind=kind) == pytest.approx(icc_reference(x, kind), **TOL)


def test_icc_of_shrout_fleiss_table():
    x = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], dtype=float)
    a = metrics.icc_anova(x)
    ref = anova(x)
    assert (a["n"], a["k"]) == (6, 4)
    assert a["ms_rows"] == pytest.approx(ref["bms"], **TOL)
    assert a["ms_cols"] == pytest.approx(ref["jms"], **TOL)
    assert a["ms_error"] == pytest.approx(ref["ems"], **TOL)
    assert a["ms_within"] == pytest.approx(ref["wms"], **TOL)
    # the paper's Table 4 (two decimals)
    assert round(metrics.icc(x, kind="ICC1"), 2) == 0.17
    assert round(metrics.icc(x, kind="ICC2"), 2) == 0.29
    assert round(metrics.icc(x, kind="ICC3"), 2) == 0.71


def test_icc_agreement_vs_consistency():
    t = np.linspace(5, 80, 30)
    assert metrics.icc(t, t + 10, kind="ICC(3,1)") == pytest.approx(1.0, abs=1e-12)
    assert metrics.icc(t, t + 10, kind="ICC(2,1)") < 0.95
    assert metrics.icc(t, t, kind="ICC(2,1)") == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_bland_altman_matches_numpy(seed):
    t, p = regression_data(seed, 80)
    d = p - t
    ba = metrics.bland_altman(t, p)
    assert ba["bias"] == pytest.approx(d.mean(), **TOL)
    assert ba["sd"] == pytest.approx(d.std(ddof=1), **TOL)
    assert ba["lower"] == pytest.approx(d.mean() - 1.96 * d.std(ddof=1), **TOL)
    assert ba["upper"] == pytest.approx(d.mean() + 1.96 * d.std(ddof=1), **TOL)
    assert metrics.bland_altman(t, p, z=2.576)["upper"] == pytest.approx(d.mean() + 2.576 * d.std(ddof=1), **TOL)


def test_regression_report():
    t, p = regression_data(7, 120)
    r = metrics.regression_report(t, p)
    assert r["n"] == 120
    assert r["mae"] == pytest.approx(sk.mean_absolute_error(t, p), **TOL)
    assert r["rmse"] == pytest.approx(np.sqrt(sk.mean_squared_error(t, p)), **TOL)
    assert r["r2"] == pytest.approx(sk.r2_score(t, p), **TOL)
    assert r["pearson_r"] == pytest.approx(stats.pearsonr(t, p)[0], **TOL)
    assert r["icc2_1"] == pytest.approx(icc_reference(np.column_stack([t, p]), "ICC(2,1)"), **TOL)
    assert r["icc3_1"] == pytest.approx(icc_reference(np.column_stack([t, p]), "ICC(3,1)"), **TOL)
    assert r["bias"] == pytest.approx((p - t).mean(), **TOL)
    assert r["loa_upper"] == pytest.approx((p - t).mean() + 1.96 * (p - t).std(ddof=1), **TOL)
    # a constant prediction: r undefined -> NaN in the report, an error from pearson_r
    c = metrics.regression_report(t, np.full_like(t, 20.0))
    assert np.isnan(c["pearson_r"])
    with pytest.raises(ValueError):
        metrics.pearson_r(t, np.full_like(t, 20.0))


# ---------------------------------------------------------------------------------------
# Binary classification
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("levels", [None, 2, 1])
def test_auc_and_roc_curve_match_sklearn(seed, n, levels):
    y, p = binary_data(seed, n, levels)
    assert metrics.roc_auc(y, p) == pytest.approx(sk.roc_auc_score(y, p), **TOL)
    for drop in (False, True):
        fpr, tpr, thr = metrics.roc_curve(y, p, drop_intermediate=drop)
        rf, rt, rh = sk.roc_curve(y, p, drop_intermediate=drop)
        assert fpr.shape == rf.shape
        np.testing.assert_allclose(fpr, rf, rtol=0, atol=1e-12)
        np.testing.assert_allclose(tpr, rt, rtol=0, atol=1e-12)
        assert thr[0] == np.inf  # sklearn 1.2 writes max + 1 there
        np.testing.assert_array_equal(thr[1:], rh[1:])
    # bool labels and a monotone transform of the scores (logits) give the same AUC
    logit = np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6)))
    assert metrics.roc_auc(y.astype(bool), logit) == pytest.approx(sk.roc_auc_score(y, logit), **TOL)


def test_auc_edge_cases():
    assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert metrics.roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert metrics.roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.71])
def test_threshold_metrics_match_sklearn(seed, n, threshold):
    y, p = binary_data(seed, n, 2)
    pred = (p >= threshold).astype(int)
    assert metrics.accuracy(y, p, threshold) == pytest.approx(sk.accuracy_score(y, pred), **TOL)
    assert metrics.sensitivity(y, p, threshold) == pytest.approx(sk.recall_score(y, pred), **TOL)
    assert metrics.recall(y, p, threshold) == pytest.approx(sk.recall_score(y, pred), **TOL)
    assert metrics.specificity(y, p, threshold) == pytest.approx(sk.recall_score(y, pred, pos_label=0), **TOL)
    assert metrics.precision(y, p, threshold) == pytest.approx(sk.precision_score(y, pred, zero_division=0), **TOL)
    assert metrics.f1(y, p, threshold) == pytest.approx(sk.f1_score(y, pred, zero_division=0), **TOL)
    c = metrics.confusion_counts(y, p, threshold)
    (tn, fp), (fn, tp) = sk.confusion_matrix(y, pred, labels=[0, 1])
    assert (c["tn"], c["fp"], c["fn"], c["tp"]) == (tn, fp, fn, tp)


def test_nothing_predicted_positive():
    y, p = binary_data(3, 50)
    pred = np.zeros_like(y)
    assert metrics.precision(y, p, 1.01) == sk.precision_score(y, pred, zero_division=0) == 0.0
    assert metrics.f1(y, p, 1.01) == sk.f1_score(y, pred, zero_division=0) == 0.0
    assert metrics.specificity(y, p, 1.01) == 1.0


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", SIZES)
def test_brier_matches_sklearn(seed, n):
    y, p = binary_data(seed, n, 2)
    assert metrics.brier(y, p) == pytest.approx(sk.brier_score_loss(y, p), **TOL)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("n_bins", [3, 5, 7, 10])
@pytest.mark.parametrize("levels", [None, 2, 1])
def test_calibration_bins_match_sklearn(seed, n, n_bins, levels):
    # rounded scores land exactly on bin edges (0.3, 0.6, ...), where numpy's edge rule matters
    y, p = binary_data(seed, n, levels)
    c = metrics.calibration_bins(y, p, n_bins=n_bins)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
    np.testing.assert_allclose(c["prob_true"], prob_true, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c["prob_pred"], prob_pred, rtol=1e-12, atol=1e-12)
    ids = np.searchsorted(np.linspace(0, 1, n_bins + 1)[1:-1], p)
    counts = np.bincount(ids, minlength=n_bins)
    np.testing.assert_array_equal(c["bins"], np.nonzero(counts)[0])
    np.testing.assert_array_equal(c["counts"], counts[counts > 0])
    ece = np.sum(counts[counts > 0] / n * np.abs(prob_true - prob_pred))
    assert c["ece"] == pytest.approx(ece, **TOL)


def test_calibration_edges_fall_in_the_lower_bin():
    c = metrics.calibration_bins([0, 1, 1, 0], [0.0, 0.1, 0.2, 1.0], n_bins=10)
    np.testing.assert_array_equal(c["bins"], [0, 1, 9])
    np.testing.assert_array_equal(c["counts"], [2, 1, 1])


class MT19937_64:
    """std::mt19937_64 as the C++ standard defines it ([rand.eng.mers], [rand.predef])."""

    MASK = (1 << 64) - 1

    def __init__(self, seed):
        mt = [seed & self.MASK]
        for i in range(1, 312):
            mt.append((6364136223846793005 * (mt[-1] ^ (mt[-1] >> 62)) + i) & self.MASK)
        self.mt, self.idx = mt, 312

    def __call__(self):
        mt = self.mt
        if self.idx >= 312:
            for i in range(312):
                x = (mt[i] & 0xFFFFFFFF80000000) | (mt[(i + 1) % 312] & 0x7FFFFFFF)
                mt[i] = mt[(i + 156) % 312] ^ (x >> 1) ^ (0xB5026F5AA96619E9 if x & 1 else 0)
            self.idx = 0
        y = mt[self.idx]
        self.idx += 1
        y ^= (y >> 29) & 0x5555555555555555
        y ^= (y << 17) & 0x71D67FFFEDA60000
        y ^= (y << 37) & 0xFFF7EEE000000000
        y ^= y >> 43
        return y & self.MASK

    def index(self, n):
        """The documented draw in [0, n): reject x < 2^64 mod n, return x mod n."""
        t = (1 << 64) % n
        while True:
            x = self()
            if x >= t:
                return x % n


def test_mt19937_64_reference_is_the_standard_engine():
    g = MT19937_64(5489)
    for _ in range(9999):
        g()
    assert g() == 9981545732273789042


def bootstrap_reference(y, p, n_boot, alpha, seed):
    g = MT19937_64(seed)
    n = len(y)
    aucs = []
    for _ in range(n_boot):
        idx = np.array([g.index(n) for _ in range(n)])
        if y[idx].min() == y[idx].max():
            continue
        aucs.append(sk.roc_auc_score(y[idx], p[idx]))
    return np.percentile(aucs, [100 * alpha / 2, 100 * (1 - alpha / 2)]), len(aucs)


@pytest.mark.parametrize("seed,n,n_boot,alpha", [(0, 40, 150, 0.05), (11, 25, 120, 0.1), (5, 8, 200, 0.05)])
def test_auc_bootstrap_ci_replays_in_python(seed, n, n_boot, alpha):
    y, p = binary_data(seed, n, 1)
    if n == 8:
        y = np.array([0, 0, 0, 1, 0, 0, 0, 0])  # one positive: many resamples are skipped
    ci = metrics.auc_bootstrap_ci(y, p, n_boot=n_boot, alpha=alpha, seed=seed)
    (lo, hi), n_valid = bootstrap_reference(y, p, n_boot, alpha, seed)
    assert ci["n_boot"] == n_boot
    assert ci["n_valid"] == n_valid
    assert ci["auc"] == pytest.approx(sk.roc_auc_score(y, p), **TOL)
    assert ci["lower"] == pytest.approx(lo, **TOL)
    assert ci["upper"] == pytest.approx(hi, **TOL)
    if n == 8:
        assert n_valid < n_boot


def test_auc_bootstrap_ci_is_deterministic_and_thread_safe():
    from concurrent.futures import ThreadPoolExecutor
    y, p = binary_data(9, 300, 2)
    a = metrics.auc_bootstrap_ci(y, p, n_boot=500, seed=3)
    with ThreadPoolExecutor(4) as ex:
        runs = list(ex.map(lambda s: metrics.auc_bootstrap_ci(y, p, n_boot=500, seed=s), [3, 3, 4, 3]))
    assert runs[0] == runs[1] == runs[3] == a
    assert runs[2] != a
    assert a["lower"] < a["auc"] < a["upper"]


def test_classification_report():
    y, p = binary_data(2, 150, 2)
    r = metrics.classification_report(y, p, threshold=0.4, n_boot=300, seed=8)
    pred = (p >= 0.4).astype(int)
    assert (r["n"], r["n_pos"], r["n_neg"]) == (150, int(y.sum()), int(150 - y.sum()))
    assert r["auc"] == pytest.approx(sk.roc_auc_score(y, p), **TOL)
    ci = metrics.auc_bootstrap_ci(y, p, n_boot=300, seed=8)
    assert (r["auc_lower"], r["auc_upper"]) == (ci["lower"], ci["upper"])
    assert r["accuracy"] == pytest.approx(sk.accuracy_score(y, pred), **TOL)
    assert r["sensitivity"] == pytest.approx(sk.recall_score(y, pred), **TOL)
    assert r["specificity"] == pytest.approx(sk.recall_score(y, pred, pos_label=0), **TOL)
    assert r["precision"] == pytest.approx(sk.precision_score(y, pred), **TOL)
    assert r["f1"] == pytest.approx(sk.f1_score(y, pred), **TOL)
    assert r["brier"] == pytest.approx(sk.brier_score_loss(y, p), **TOL)
    assert r["ece"] == pytest.approx(metrics.calibration_bins(y, p)["ece"], **TOL)
    assert r["tp"] == int(((pred == 1) & (y == 1)).sum())
    no_boot = metrics.classification_report(y, p, n_boot=0)
    assert np.isnan(no_boot["auc_lower"])


# ---------------------------------------------------------------------------------------
# Multi-class
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("k", [2, 3, 7])
def test_multiclass_metrics_match_sklearn(seed, n, k):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, k, size=n)
    pred = np.where(rng.random(n) < 0.6, t, rng.integers(0, k, size=n))
    assert metrics.accuracy(t, pred) == pytest.approx(sk.accuracy_score(t, pred), **TOL)
    kk = int(max(t.max(), pred.max())) + 1
    np.testing.assert_array_equal(metrics.confusion_matrix(t, pred), sk.confusion_matrix(t, pred, labels=np.arange(kk)))
    assert metrics.macro_f1(t, pred) == pytest.approx(sk.f1_score(t, pred, average="macro", zero_division=0), **TOL)
    big = k + 2  # two classes nobody used
    cm = metrics.confusion_matrix(t, pred, n_classes=big)
    assert cm.shape == (big, big) and cm.dtype == np.int64
    np.testing.assert_array_equal(cm, sk.confusion_matrix(t, pred, labels=np.arange(big)))
    assert metrics.macro_f1(t, pred, n_classes=big) == pytest.approx(
        sk.f1_score(t, pred, labels=np.arange(big), average="macro", zero_division=0), **TOL)


def test_macro_f1_skips_absent_classes_like_sklearn():
    t, pred = [0, 3, 3, 5], [0, 3, 5, 5]
    assert metrics.macro_f1(t, pred) == pytest.approx(sk.f1_score(t, pred, average="macro"), **TOL)


# ---------------------------------------------------------------------------------------
# Dice and ABC/2
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_dice_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    a = rng.random((20, 18, 7)) < 0.3
    b = a ^ (rng.random(a.shape) < 0.1)
    ref = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert metrics.dice(a, b) == pytest.approx(ref, **TOL)
    # any dtype (non-zero = foreground), any memory order, Volumes
    assert metrics.dice(a.astype(np.float32) * 0.5, np.asfortranarray(b.astype(np.int16) * 7)) == pytest.approx(ref, **TOL)
    va, vb = ichkit.Volume(a.astype(np.uint8)), ichkit.Volume(b.astype(np.uint8))
    assert metrics.dice(va, vb) == pytest.approx(ref, **TOL)
    assert metrics.dice(np.zeros(5), np.zeros(5)) == 1.0
    assert metrics.dice([1, 0, 0], [0, 0, 1]) == 0.0


def blob(seed, shape=(44, 40, 12)):
    """An irregular hematoma: the union of three rotated ellipsoids with random centres."""
    rng = np.random.default_rng(seed)
    i, j, k = np.indices(shape, dtype=float)
    m = np.zeros(shape, dtype=bool)
    c0 = np.array(shape) / 2
    for _ in range(3):
        c = c0 + rng.uniform(-4, 4, 3) * np.array([1, 1, 0.3])
        ax = rng.uniform([5, 3, 2], [12, 8, 4])
        th = rng.uniform(0, np.pi)
        u = np.cos(th) * (i - c[0]) + np.sin(th) * (j - c[1])
        v = -np.sin(th) * (i - c[0]) + np.cos(th) * (j - c[1])
        m |= (u / ax[0]) ** 2 + (v / ax[1]) ** 2 + ((k - c[2]) / ax[2]) ** 2 <= 1
    return m


def abc2_reference(mask, spacing, weighted):
    """ABC/2 by brute force: every corner of every voxel of the largest slice, all pairs."""
    si, sj, sk_ = spacing
    areas = mask.sum(axis=(0, 1))
    ks = int(np.argmax(areas))
    amax = areas[ks]
    if weighted:
        w = np.where(4 * areas >= 3 * amax, 1.0, np.where(4 * areas >= amax, 0.5, 0.0))
        slices = w[areas > 0].sum()
    else:
        slices = float((areas > 0).sum())
    ii, jj = np.nonzero(mask[:, :, ks])
    corners = np.unique(np.concatenate([np.column_stack([(ii + di) * si, (jj + dj) * sj])
                                        for di in (-0.5, 0.5) for dj in (-0.5, 0.5)]), axis=0)
    d2 = ((corners[:, None, :] - corners[None, :, :]) ** 2).sum(-1)
    a = np.sqrt(d2.max())
    bs = []  # B across every longest diameter (ties between pairs can tilt it differently)
    for p, q in zip(*np.nonzero(d2 >= d2.max() * (1 - 1e-12))):
        u = (corners[q] - corners[p]) / a
        proj = corners @ np.array([-u[1], u[0]])
        bs.append(proj.max() - proj.min())
    return a, np.array(bs), slices * sk_, ks


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("weighted", [True, False])
def test_abc2_matches_brute_force(seed, weighted):
    m = blob(seed)
    spacing = (0.43, 0.51, 5.0)
    r = metrics.abc2(m, spacing=spacing, weighted=weighted)
    a, bs, c, ks = abc2_reference(m, spacing, weighted)
    assert r["slice"] == ks
    assert r["area_voxels"] == m[:, :, ks].sum()
    assert r["a_mm"] == pytest.approx(a, **TOL)
    assert np.isclose(bs, r["b_mm"], rtol=1e-9, atol=1e-9).any()
    assert r["c_mm"] == pytest.approx(c, **TOL)
    assert r["volume_ml"] == pytest.approx(r["a_mm"] * r["b_mm"] * c / 2 / 1000, **TOL)
    assert metrics.abc2_ml(m, spacing=spacing, weighted=weighted) == r["volume_ml"]
    # a Volume carries its spacing; memory order and dtype do not matter
    vol = ichkit.Volume(m.astype(np.uint8), np.diag(list(spacing) + [1.0]))
    assert metrics.abc2(vol, weighted=weighted) == pytest.approx(r)
    assert metrics.abc2_ml(np.ascontiguousarray(m.astype(np.float32)), spacing, weighted) == r["volume_ml"]


def test_abc2_of_an_ellipsoid_is_about_4abc():
    a, b, c = 20.0, 12.0, 10.0
    spacing = (0.5, 0.5, 1.0)
    shape = (100, 60, 30)
    x, y, z = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]
    m = (x[:, None, None] / a) ** 2 + (y[None, :, None] / b) ** 2 + (z[None, None, :] / c) ** 2 <= 1
    v = metrics.abc2_ml(m, spacing, weighted=False)
    assert abs(v - 4 * a * b * c / 1000) < 0.05 * 4 * a * b * c / 1000
    true_ml = m.sum() * np.prod(spacing) / 1000
    assert v < true_ml


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda: metrics.mae([], []),
    lambda: metrics.mae([1, 2], [1]),
    lambda: metrics.rmse([1, np.nan], [1, 2]),
    lambda: metrics.r2([1, 2], [1, np.inf]),
    lambda: metrics.r2([1], [1]),
    lambda: metrics.pearson_r([1, 1, 1], [1, 2, 3]),
    lambda: metrics.mae(np.ones((3, 2)), np.ones((3, 2))),
    lambda: metrics.mae(["a", "b"], [1, 2]),
    lambda: metrics.icc([3, 3, 3], [3, 3, 3]),
    lambda: metrics.icc([1, 2, 3], [1, 2, 3], kind="ICC(2,k)"),
    lambda: metrics.icc(np.ones(5)),
    lambda: metrics.bland_altman([1], [2]),
    lambda: metrics.roc_auc([0, 0, 0], [0.1, 0.2, 0.3]),
    lambda: metrics.roc_auc([1, 1], [0.1, 0.2]),
    lambda: metrics.roc_auc([0, 2, 1], [0.1, 0.2, 0.3]),
    lambda: metrics.roc_auc([0, 0.5, 1], [0.1, 0.2, 0.3]),
    lambda: metrics.roc_auc([0, 1], [0.1, np.nan]),
    lambda: metrics.roc_curve([0, 0], [0.1, 0.2]),
    lambda: metrics.auc_bootstrap_ci([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], n_boot=0),
    lambda: metrics.auc_bootstrap_ci([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], alpha=1.5),
    lambda: metrics.sensitivity([0, 0], [0.1, 0.9]),
    lambda: metrics.specificity([1, 1], [0.1, 0.9]),
    lambda: metrics.brier([0, 1], [0.2, 1.2]),
    lambda: metrics.calibration_bins([0, 1], [-0.1, 0.5]),
    lambda: metrics.calibration_bins([0, 1], [0.1, 0.5], n_bins=0),
    lambda: metrics.classification_report([1, 1, 1], [0.1, 0.5, 0.9]),
    lambda: metrics.confusion_matrix([0, 1, 2], [0, 1, 2], n_classes=2),
    lambda: metrics.macro_f1([-1, 0], [0, 0]),
    lambda: metrics.dice(np.zeros((3, 4)), np.zeros((4, 3))),
    lambda: metrics.abc2(np.ones((4, 4, 4))),
    lambda: metrics.abc2(np.ones((4, 4)), spacing=(1, 1, 1)),
    lambda: metrics.abc2(np.ones((4, 4, 4)), spacing=(1, 0, 1)),
    lambda: metrics.abc2(ichkit.Volume(np.ones((4, 4, 4), np.uint8)), spacing=(1, 1, 1)),
])
def test_invalid_input_raises_value_error(call):
    with pytest.raises(ichkit.InvalidArgument) as e:
        call()
    assert isinstance(e.value, ValueError)
    assert str(e.value)


def test_error_messages_name_the_problem():
    with pytest.raises(ValueError, match="differ in length"):
        metrics.mae([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="both classes"):
        metrics.roc_auc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"y_true\[1\] = 0.5"):
        metrics.roc_auc([0, 0.5, 1], [0.1, 0.2, 0.3])
