"""The `ichkit` command: info, phantom, exit codes, one-line errors."""
import csv
import json
import subprocess

import nibabel as nib
import numpy as np
import pytest


def run(cli, *args):
    return subprocess.run([cli, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def cohort(cli, tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    r = run(cli, "--quiet", "phantom", "--n", "2", "--out", str(out), "--seed", "4", "--shape", "128", "128", "16",
            "--spacing", "1.6", "1.6", "10")
    assert r.returncode == 0, r.stderr
    return out


def test_phantom_writes_manifest_and_images(cohort):
    with open(cohort / "manifest.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == ["case_0000", "case_0001"]
    assert list(rows[0].keys()) == ["id", "image", "mask", "volume_ml", "location", "ivh", "age", "gcs", "outcome",
                                    "outcome_probability"]
    for r in rows:
        mask = nib.load(str(cohort / r["mask"]))
        voxel_ml = abs(np.linalg.det(mask.affine[:3, :3])) / 1000
        assert np.count_nonzero(np.asanyarray(mask.dataobj)) * voxel_ml == pytest.approx(float(r["volume_ml"]), abs=1e-5)
        img = nib.load(str(cohort / r["image"]))
        assert img.shape == (128, 128, 16)
        np.testing.assert_array_equal(img.affine, mask.affine)


def test_info_text_and_json(cli, cohort):
    p = str(cohort / "images" / "case_0000.nii.gz")
    r = run(cli, "info", p)
    assert r.returncode == 0, r.stderr
    assert "128 x 128 x 16" in r.stdout and "RAS" in r.stdout
    r = run(cli, "info", "--json", p)
    assert r.returncode == 0
    j = json.loads(r.stdout)
    ref = nib.load(p)
    assert j["shape"] == [128, 128, 16]
    np.testing.assert_array_equal(np.array(j["affine"]), ref.affine)
    assert j["orientation"] == "".join(nib.aff2axcodes(ref.affine))
    data = ref.get_fdata()
    assert j["value_range"] == pytest.approx([data.min(), data.max()], abs=1e-3)
    assert j["voxel_volume_ml"] == pytest.approx(abs(np.linalg.det(ref.affine[:3, :3])) / 1000)
    assert j["nan_voxels"] == 0


def test_info_counts_nan_and_ranges_the_rest(cli, tmp_path):
    # float32 with NaN and -inf (the reader's zero-copy path) and a scaled int16 (its converted
    # path): nibabel's values give the expected range and count
    rng = np.random.default_rng(3)
    f = rng.normal(0, 300, (40, 30, 7)).astype(np.float32)
    f[1, 2, 3] = f[39, 29, 6] = np.nan
    f[5, 5, 5] = -np.inf
    i16 = rng.integers(-1000, 2000, (40, 30, 7), dtype=np.int16)
    scaled = nib.Nifti1Image(i16, np.eye(4))
    scaled.header.set_slope_inter(0.5, -1024)
    for name, img in (("f.nii.gz", nib.Nifti1Image(f, np.eye(4))), ("s.nii", scaled)):
        nib.save(img, str(tmp_path / name))
        data = nib.load(str(tmp_path / name)).get_fdata(dtype=np.float32)
        r = run(cli, "info", "--json", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
        j = json.loads(r.stdout)
        assert j["nan_voxels"] == int(np.isnan(data).sum())
        # JSON has no infinity: nlohmann writes it as null
        want = [float(v) if np.isfinite(v) else None for v in (np.nanmin(data), np.nanmax(data))]
        assert j["value_range"] == want


def test_exit_codes_and_errors(cli, tmp_path, data_dir):
    assert run(cli).returncode == 2                      # no subcommand: usage
    assert run(cli, "info").returncode == 2              # missing argument
    assert run(cli, "phantom", "--n", "0", "--out", str(tmp_path)).returncode == 2
    assert run(cli, "--threads", "100000", "info", str(tmp_path)).returncode == 2  # not 100000 threads started
    bad = data_dir / "malformed" / "nifti" / "truncated_data.nii"
    r = run(cli, "info", str(bad))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ichkit: error:") and "truncated" in lines[0]
    for sub in ("info", "phantom"):
        h = run(cli, sub, "--help")
        assert h.returncode == 0 and "Examples:" in h.stdout
    assert run(cli, "--version").stdout.startswith("ichkit ")
