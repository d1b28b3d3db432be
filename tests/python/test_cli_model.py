"""`ichkit train`, `ichkit evaluate`, `ichkit predict`: files written, numbers consistent with
the Python API, exit codes (0 ok, 1 failure, 2 usage) and one-line errors."""
import csv
import json
import subprocess

import nibabel as nib
import numpy as np
import pytest

import ichkit

CONFIG = {
    "encoder": {"depth": 10, "width": 4},
    "heads": [{"name": "volume", "type": "regression", "target": "volume_ml", "params": {"transform": "log1p"}},
              {"name": "prognosis", "type": "classification", "target": "outcome", "params": {"classes": ["good", "poor"]}},
              {"name": "seg", "type": "segmentation", "target": "mask", "params": {"channels": 4}}],
    "pipeline": {"version": 1, "steps": [
        {"op": "reorient", "code": "RAS"}, {"op": "resample_to_spacing", "spacing": [6, 6, 20], "interp": "linear"},
        {"op": "center_crop_or_pad", "shape": [32, 32, 8], "fill": -1024}, {"op": "window"}]},
}


def run(cli, *args):
    return subprocess.run([cli, *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def work(cli, tmp_path_factory):
    d = tmp_path_factory.mktemp("clim")
    r = run(cli, "--quiet", "phantom", "--n", "10", "--out", str(d / "c"), "--seed", "2", "--shape", "64", "64", "8",
            "--spacing", "3.6", "3.6", "20", "--uncompressed")
    assert r.returncode == 0, r.stderr
    (d / "cfg.json").write_text(json.dumps(CONFIG))
    r = run(cli, "--quiet", "train", "--config", str(d / "cfg.json"), "--manifest", str(d / "c" / "manifest.csv"),
            "--out", str(d / "m.ichkit"), "--epochs", "2", "--seed", "1")
    assert r.returncode == 0, r.stderr
    return d


def test_train_writes_a_loadable_model(work):
    m = ichkit.model.Model.load(str(work / "m.ichkit"))
    assert m.head_names == ["volume", "prognosis", "seg"]
    assert len(m.metadata["training"]["history"]) == 2


def test_evaluate_writes_metrics_and_rows(cli, work):
    out = work / "ev"
    r = run(cli, "--quiet", "evaluate", "--model", str(work / "m.ichkit"), "--manifest", str(work / "c" / "manifest.csv"),
            "--out", str(out))
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    with (out / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10
    truth = np.array([float(x["volume_ml"]) for x in rows])
    pred = np.array([float(x["volume"]) for x in rows])
    assert metrics["volume"]["mae"] == pytest.approx(np.mean(np.abs(truth - pred)), rel=1e-6)
    # the same numbers as the Python API
    api_metrics, _ = ichkit.evaluate(ichkit.model.Model.load(str(work / "m.ichkit")), str(work / "c" / "manifest.csv"))
    assert api_metrics["volume"]["mae"] == pytest.approx(metrics["volume"]["mae"], rel=1e-12)


def test_predict_prints_writes_and_keeps_geometry(cli, work):
    img = work / "c" / "images" / "case_0003.nii"
    r = run(cli, "predict", "--model", str(work / "m.ichkit"), str(img), "--out", str(work / "pr"), "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    api = ichkit.model.Model.load(str(work / "m.ichkit")).predict(ichkit.read(str(img)))
    assert rows[0]["volume"] == pytest.approx(api["volume"]["value"], rel=1e-6)
    assert rows[0]["prognosis_p_poor"] == pytest.approx(api["prognosis"]["probability"]["poor"], rel=1e-6)
    mask = nib.load(rows[0]["seg_mask"])
    ref = nib.load(str(img))
    assert mask.shape == ref.shape
    np.testing.assert_allclose(mask.affine, ref.affine, atol=1e-5)
    assert json.loads((work / "pr" / "predictions.json").read_text())[0]["scan"] == str(img)
    r = run(cli, "predict", "--model", str(work / "m.ichkit"), str(img))
    assert r.returncode == 0 and "volume" in r.stdout


def test_predict_reports_a_bad_scan_and_goes_on(cli, work, tmp_path):
    good = work / "c" / "images" / "case_0003.nii"
    ref = nib.load(str(good))
    a = np.asarray(ref.dataobj, dtype=np.float32)
    a[1, 2, 3] = np.nan
    nan_scan = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(a, ref.affine), str(nan_scan))
    other = work / "c" / "images" / "case_0004.nii"
    r = run(cli, "predict", "--model", str(work / "m.ichkit"), str(nan_scan), str(good), str(other), "--batch-size", "2",
            "--out", str(tmp_path / "o"), "--json")
    assert r.returncode == 1  # one scan failed
    assert r.stderr.count("ichkit: error: " + str(nan_scan) + ": the scan holds 1 NaN") == 1
    rows = json.loads(r.stdout)
    assert [row["scan"] for row in rows] == [str(nan_scan), str(good), str(other)]
    assert "NaN" in rows[0]["error"] and "volume" not in rows[0]
    # the scans after it are predicted (one batch of two) as the API predicts each alone
    m = ichkit.model.Model.load(str(work / "m.ichkit"))
    for row, path in zip(rows[1:], (good, other)):
        api = m.predict(ichkit.read(str(path)))
        assert "error" not in row
        assert row["volume"] == pytest.approx(api["volume"]["value"], rel=1e-5)
        assert row["prognosis_p_poor"] == pytest.approx(api["prognosis"]["probability"]["poor"], rel=1e-5, abs=1e-6)
        assert nib.load(row["seg_mask"]).shape == nib.load(str(path)).shape
    assert json.loads((tmp_path / "o" / "predictions.json").read_text()) == rows
    with (tmp_path / "o" / "predictions.csv").open() as f:
        assert [row["error"] != "" for row in csv.DictReader(f)] == [True, False, False]
    # a file that cannot be read: its path once on the error line (the reader's message names it)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    r = run(cli, "predict", "--model", str(work / "m.ichkit"), str(broken), str(good))
    assert r.returncode == 1 and str(good) in r.stdout
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("ichkit: error:")]
    assert len(line) == 1 and line[0].count(str(broken)) == 1
    r = run(cli, "explain", "--model", str(work / "m.ichkit"), str(nan_scan), str(good), "--out", str(tmp_path / "e"), "--json")
    assert r.returncode == 1 and "ichkit: error: " + str(nan_scan) in r.stderr
    rows = json.loads(r.stdout)
    assert "NaN" in rows[0]["error"] and len(rows[1]["maps"]) >= 1


def test_errors_and_usage(cli, work, tmp_path):
    bad = tmp_path / "bad.ichkit"
    bad.write_bytes(b"ICHKITMF" + b"\1\0\0\0" + b"\0" * 8)
    r = run(cli, "predict", "--model", str(bad), str(work / "c" / "images" / "case_0000.nii"))
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "truncated" in r.stderr
    r = run(cli, "train", "--manifest", str(work / "c" / "manifest.csv"))  # --out missing
    assert r.returncode == 2
    r = run(cli, "train", "--manifest", str(work / "c" / "manifest.csv"), "--out", str(tmp_path / "x"), "--mode", "nope")
    assert r.returncode == 2
    for sub in ("train", "evaluate", "predict", "explain", "demo", "convert"):
        h = run(cli, sub, "--help")
        assert h.returncode == 0 and "Example" in h.stdout


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_equal_one_process_with_the_global_batch(cli, work, tmp_path):
    cfg = json.loads(json.dumps(CONFIG))
    cfg["encoder"]["norm"] = "group"  # BatchNorm statistics would be per process (no SyncBatchNorm)
    cfg["heads"] = cfg["heads"][:2]
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    manifest = str(work / "c" / "manifest.csv")
    common = ["--quiet", "train", "--config", str(tmp_path / "cfg.json"), "--manifest", manifest, "--val-fraction", "0.2",
              "--epochs", "2", "--batch-size", "4", "--seed", "3", "--lr", "0.003"]
    r = run(cli, *common, "--out", str(tmp_path / "one.ichkit"))
    assert r.returncode == 0, r.stderr
    port = str(free_port())
    procs = [subprocess.Popen([cli, *common, "--out", str(tmp_path / "ddp.ichkit"), "--world-size", "2", "--rank", str(k),
                               "--master-port", port], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in (0, 1)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    one = ichkit.model.Model.load(str(tmp_path / "one.ichkit")).state_dict()
    ddp = ichkit.model.Model.load(str(tmp_path / "ddp.ichkit")).state_dict()
    init = ichkit.model.Model(cfg, seed=3).state_dict()
    moved = 0
    for k, v in one.items():
        np.testing.assert_allclose(ddp[k], v, rtol=1e-4, atol=1e-5, err_msg=k)
        moved += not np.array_equal(v, init[k])
    assert moved > 10  # training really changed the weights
