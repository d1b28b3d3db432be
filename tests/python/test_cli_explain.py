"""`ichkit explain`: NIfTI maps that overlay the scan (nibabel), PNGs, explain.json consistent
with the Python API, localisation scores with --mask, exit codes and one-line errors."""
import json
import subprocess

import nibabel as nib
import numpy as np
import pytest

import ichkit

from test_cli_model import CONFIG


def run(cli, *args):
    return subprocess.run([cli, *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("clie")
    c = ichkit.phantom.make_case(shape=[64, 64, 8], spacing=[3.6, 3.6, 20], tilt=5, seed=4)
    ichkit.write_nifti(c["image"], str(d / "scan.nii.gz"))
    ichkit.write_nifti(c["mask"], str(d / "mask.nii.gz"))
    ichkit.model.Model(CONFIG, seed=3).save(str(d / "m.ichkit"))
    return d


def test_explain_writes_maps_pngs_and_json(cli, work):
    out = work / "out"
    r = run(cli, "explain", "--model", str(work / "m.ichkit"), str(work / "scan.nii.gz"), "--head", "prognosis", "--target", "1",
            "--head", "volume", "--mask", str(work / "mask.nii.gz"), "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert rows == json.loads((out / "explain.json").read_text())
    scan = nib.load(str(work / "scan.nii.gz"))
    m = ichkit.model.Model.load(str(work / "m.ichkit"))
    api = ichkit.explain.explain(m, ichkit.read(str(work / "scan.nii.gz")), [("prognosis", 1), "volume"])
    assert [j["head"] for j in rows[0]["maps"]] == ["prognosis", "volume"]
    for j, h in zip(rows[0]["maps"], api.maps):
        img = nib.load(j["heatmap"])
        assert img.shape == scan.shape
        np.testing.assert_allclose(img.affine, scan.affine, atol=1e-4)
        np.testing.assert_allclose(img.get_fdata(), h.normalized.array, atol=1e-5)
        raw = nib.load(j["raw"]).get_fdata()
        np.testing.assert_allclose(raw, h.raw.array, rtol=1e-5, atol=1e-6 * np.abs(raw).max())
        assert j["score"] == pytest.approx(h.score, rel=1e-5)
        assert tuple(j["peak_voxel"]) == tuple(h.peak)
        s = ichkit.explain.localisation(h, ichkit.read(str(work / "mask.nii.gz")), 10.0)
        assert j["scores"]["hit"] == s["hit"]
        assert j["scores"]["auc"] == pytest.approx(s["auc"], rel=1e-9)
        for png in j["png"]:
            with open(png, "rb") as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert rows[0]["maps"][0]["index"] == 1
    assert rows[0]["prediction"]["volume"] == pytest.approx(api.prediction["volume"]["value"], rel=1e-5)


def test_explain_defaults_and_human_output(cli, work):
    out = work / "out2"
    r = run(cli, "explain", "--model", str(work / "m.ichkit"), str(work / "scan.nii.gz"), "--out", str(out), "--no-png",
            "--method", "gradcam++", "--layer", "layer3", "--down")
    assert r.returncode == 0, r.stderr
    assert "gradcam++ volume[0] (down) at layer3" in r.stdout
    assert "prognosis" in r.stdout and "seg" not in r.stdout  # segmentation heads are not explained by default
    assert not list(out.glob("*.png"))


@pytest.mark.parametrize("args,code,message", [
    (["--layer", "layer7"], 1, "no encoder stage called 'layer7'"),
    (["--head", "bleed"], 1, "no head called 'bleed'"),
    (["--method", "lime"], 1, "unknown method 'lime'"),
    (["--bogus"], 2, ""),
])
def test_explain_errors(cli, work, args, code, message):
    r = run(cli, "explain", "--model", str(work / "m.ichkit"), str(work / "scan.nii.gz"), "--out", str(work / "bad"), *args)
    assert r.returncode == code
    if message:
        assert r.stderr.count("\n") == 1 and message in r.stderr


def test_predict_explain_writes_heatmaps_beside_predictions(cli, work):
    out = work / "pred"
    r = run(cli, "predict", "--model", str(work / "m.ichkit"), str(work / "scan.nii.gz"), "--explain", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)[0]
    scan = nib.load(str(work / "scan.nii.gz"))
    for head in ("volume", "prognosis"):
        img = nib.load(row[f"{head}_heatmap"])
        np.testing.assert_allclose(img.affine, scan.affine, atol=1e-4)
        assert (out / f"scan_{head}_montage.png").stat().st_size > 0 and (out / f"scan_{head}_ortho.png").stat().st_size > 0
    plain = json.loads(run(cli, "predict", "--model", str(work / "m.ichkit"), str(work / "scan.nii.gz"), "--json").stdout)[0]
    assert row["volume"] == pytest.approx(plain["volume"], rel=1e-5)  # the explained pass predicts the same
    r = run(cli, "predict", "--model", str(work / "m.ichkit"), str(work / "scan.nii.gz"), "--explain")
    assert r.returncode == 1 and "--explain needs --out" in r.stderr


def test_predict_uses_the_default_model(cli, work):
    import os

    env = dict(os.environ, ICHKIT_MODEL=str(work / "m.ichkit"))
    r = subprocess.run([cli, "predict", str(work / "scan.nii.gz"), "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    want = ichkit.model.Model.load(str(work / "m.ichkit")).predict(ichkit.read(str(work / "scan.nii.gz")))
    assert json.loads(r.stdout)[0]["volume"] == pytest.approx(want["volume"]["value"], rel=1e-5)
    # without $ICHKIT_MODEL: the model shipped with the package (installed beside the command)
    env.pop("ICHKIT_MODEL")
    r = subprocess.run([cli, "predict", str(work / "scan.nii.gz"), "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    shipped = ichkit.model.default_model()
    assert shipped.head_names == ["volume", "prognosis", "seg"]
    want = shipped.predict(ichkit.read(str(work / "scan.nii.gz")))
    assert json.loads(r.stdout)[0]["volume"] == pytest.approx(want["volume"]["value"], rel=1e-5)
    env["ICHKIT_MODEL"] = str(work / "missing.ichkit")  # a wrong override is an error, not a silent fallback
    r = subprocess.run([cli, "predict", str(work / "scan.nii.gz")], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 1 and "missing.ichkit" in r.stderr and "not a file" in r.stderr
