"""ichkit.train / ichkit.evaluate from Python: a short run on a phantom cohort, the evaluation's
metrics recomputed independently (numpy / scikit-learn) from its per-case rows."""
import json

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, roc_auc_score

import ichkit


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp("cohort")
    ichkit.phantom.make_cohort(str(d), n=16, seed=9, shape=[64, 64, 8], spacing=[3.6, 3.6, 20.0], compress=False)
    return ichkit.model.Manifest.read(str(d / "manifest.csv"))


def config():
    p = ichkit.preprocess.Pipeline().reorient("RAS").resample_to_spacing([6.0, 6.0, 20.0]).center_crop_or_pad([32, 32, 8]).window()
    return {"encoder": {"depth": 10, "width": 4},
            "heads": [{"name": "volume", "type": "regression", "target": "volume_ml", "params": {"transform": "log1p"}},
                      {"name": "prognosis", "type": "classification", "target": "outcome", "params": {"classes": ["good", "poor"]}},
                      {"name": "seg", "type": "segmentation", "target": "mask", "weight": 0.5, "params": {"channels": 4}}],
            "pipeline": json.loads(p.to_json())}


def test_train_and_evaluate(cohort, tmp_path):
    assert len(cohort) == 16
    assert "volume_ml" in cohort.columns and "outcome" in cohort.columns
    folds = ichkit.model.patient_folds(cohort, 4, seed=1)
    assert sorted(i for f in folds for i in f) == list(range(16))
    test_idx = folds[0]
    train_idx = [i for f in folds[1:] for i in f]
    calls = []

    class Bar:
        def __init__(self, total=None, desc=None):
            self.total = total

        def update(self, n):
            calls.append(n)

        def set_description(self, s):
            pass

        def close(self):
            pass

    model, summary = ichkit.train(config(), cohort.subset(train_idx), cohort.subset(test_idx),
                                  {"epochs": 2, "batch_size": 4, "seed": 3, "augment": {"rotate_deg": 5}}, progress=Bar)
    assert len(summary["history"]) == 2
    assert sum(calls) == 2 * 3  # 12 training cases / batches of 4, two epochs
    assert model.metadata["training"]["n_train"] == 12
    model.save(str(tmp_path / "m.ichkit"))
    again = ichkit.model.Model.load(str(tmp_path / "m.ichkit"))
    assert again.metadata["training"]["history"] == summary["history"]

    metrics, rows = ichkit.evaluate(model, cohort.subset(test_idx))
    assert [r["id"] for r in rows] == cohort.subset(test_idx).ids
    truth = np.array([r["volume_ml"] for r in rows])
    pred = np.array([r["volume"] for r in rows])
    assert metrics["volume"]["mae"] == pytest.approx(mean_absolute_error(truth, pred), rel=1e-9)
    abc = np.array([r["abc2_true_mask_ml"] for r in rows])
    assert metrics["abc2_true_mask"]["mae"] == pytest.approx(mean_absolute_error(truth, abc), rel=1e-9)
    assert np.all(abc > 0) and np.all(abc < 3 * truth + 5)  # ABC/2 is a rough but real estimate
    y = np.array([r["outcome"] for r in rows])
    if 0 < y.sum() < len(y):
        score = np.array([r["prognosis_p_poor"] for r in rows])
        assert metrics["prognosis"]["auc"] == pytest.approx(roc_auc_score(y, score), rel=1e-9)
    assert 0 <= metrics["seg"]["dice_mean"] <= 1


def test_bad_options_are_refused(cohort):
    with pytest.raises(ichkit.InvalidArgument, match="unknown training option"):
        ichkit.train(config(), cohort, None, {"epochz": 1})
    with pytest.raises(ichkit.InvalidArgument, match="mode"):
        ichkit.train(config(), cohort, None, {"mode": "triple"})
