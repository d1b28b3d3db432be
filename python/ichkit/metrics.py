"""Evaluation metrics for hematoma volume, prognosis and segmentation, and the ABC/2 baseline.

Every function takes numpy arrays or sequences (sklearn's argument names ``y_true``, ``y_pred``,
``y_score``/``y_prob``), computes in C++ with the GIL released, and raises
``ichkit.InvalidArgument`` (a ``ValueError``) on empty input, length mismatch, NaN/inf, labels other
than 0/1 where binary labels are needed, probabilities outside [0, 1] and a single class where two
are needed. Results equal scikit-learn 1.2 / scipy to rounding (tests/python/test_metrics.py).

Regression (volume in mL)
    ``mae``, ``rmse``, ``r2`` (sklearn's r2_score), ``pearson_r`` (scipy's pearsonr statistic),
    ``icc(y_true, y_pred, kind="ICC(2,1)")`` or ``icc(ratings)`` for an (n targets, k raters) array
    with kind ICC(1,1), ICC(2,1) (absolute agreement) or ICC(3,1) (consistency) from the two-way
    ANOVA mean squares (Shrout & Fleiss 1979; ``icc_anova`` returns them),
    ``bland_altman`` -> {bias, sd, lower, upper} of d = y_pred - y_true (sd with ddof=1, limits
    bias +- 1.96 sd), ``regression_report`` -> dict of all of them (NaN where undefined, e.g. r of
    a constant prediction).

Binary classification (``y_score`` = probability of class 1; positive when ``y_score >= threshold``)
    ``roc_auc`` (exact Mann-Whitney, ties one half), ``roc_curve`` -> (fpr, tpr, thresholds) as
    sklearn's roc_curve with ``drop_intermediate=False`` by default and ``thresholds[0] = inf``,
    ``auc_bootstrap_ci(y_true, y_score, n_boot=2000, alpha=0.05, seed=0)`` -> {auc, lower, upper,
    alpha, n_boot, n_valid}: percentile bootstrap, deterministic by seed (std::mt19937_64),
    resamples with one class skipped; ``confusion_counts``, ``accuracy``, ``sensitivity``
    (= ``recall``), ``specificity``, ``precision`` (0 when nothing is predicted positive), ``f1``,
    ``brier``, ``calibration_bins(y_true, y_prob, n_bins=10)`` -> {prob_true, prob_pred, counts,
    bins, ece} as sklearn.calibration.calibration_curve(strategy="uniform") for the non-empty bins,
    ``classification_report`` -> dict of all of them.

Multi-class (integer labels 0..K-1)
    ``accuracy(y_true, y_pred)`` when ``y_pred`` has an integer or bool dtype, ``confusion_matrix``
    (rows = true class), ``macro_f1`` (classes present in y_true or y_pred, or all of 0..K-1 with
    ``n_classes=K``).

Segmentation and volume
    ``dice(a, b)`` of two masks of one shape (non-zero = foreground; 1 when both are empty).
    ``abc2(mask, spacing=None, weighted=True)`` -> {volume_ml, a_mm, b_mm, c_mm, slice,
    area_voxels, slices} and ``abc2_ml``: Kothari's ABC/2 on the axial slices k of an
    ``ichkit.Volume`` (its spacing) or a (ni, nj, nk) array with ``spacing=(si, sj, sk)`` mm. A is the
    largest diameter of the largest slice, B the extent across it, C the slice count times the
    slice thickness, with Kothari's weights (>= 75 % of the largest area: 1, 25-75 %: 0.5,
    < 25 %: 0) unless ``weighted=False``.
"""
from ._core.metrics import (  # noqa: F401
    abc2,
    abc2_ml,
    accuracy,
    auc_bootstrap_ci,
    bland_altman,
    brier,
    calibration_bins,
    classification_report,
    confusion_counts,
    confusion_matrix,
    dice,
    f1,
    icc,
    icc_anova,
    macro_f1,
    mae,
    pearson_r,
    precision,
    r2,
    recall,
    regression_report,
    rmse,
    roc_auc,
    roc_curve,
    sensitivity,
    specificity,
)

__all__ = ["abc2", "abc2_ml", "accuracy", "auc_bootstrap_ci", "bland_altman", "brier", "calibration_bins",
           "classification_report", "confusion_counts", "confusion_matrix", "dice", "f1", "icc", "icc_anova", "macro_f1",
           "mae", "pearson_r", "precision", "r2", "recall", "regression_report", "rmse", "roc_auc", "roc_curve",
           "sensitivity", "specificity"]
