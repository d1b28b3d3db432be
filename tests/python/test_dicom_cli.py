"""The `ichkit` command on DICOM: info (text and JSON) and convert to NIfTI."""
import json
import re
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import ichkit

pydicom = pytest.importorskip("pydicom")


def run(cli, *args):
    return subprocess.run([cli, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def ge(data_dir):
    return data_dir / "dicom" / "ge-head-tilt"


@pytest.fixture(scope="module")
def ge_uid(ge):
    return str(pydicom.dcmread(str(ge / "01.dcm"), stop_before_pixels=True).SeriesInstanceUID)


def test_info_text(cli, ge, ge_uid):
    r = run(cli, "info", str(ge))
    assert r.returncode == 0, r.stderr
    assert ge_uid in r.stdout
    assert re.search(r"\b28\b", r.stdout)               # images
    assert re.search(r"18\.5", r.stdout)                # the tilt in the report
    assert "STD+" in r.stdout                           # kernel in the series list


def test_info_json(cli, ge, ge_uid):
    r = run(cli, "info", "--json", str(ge))
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert isinstance(j["series"], list) and isinstance(j["report"], dict)
    assert [s["series_uid"] for s in j["series"]] == [ge_uid]
    assert j["series"][0]["images"] == 28
    assert abs(j["report"]["tilt_deg"]) == pytest.approx(18.5, abs=0.1)
    assert j["report"]["series_uid"] == ge_uid
    assert j["report"]["spacing_max_mm"] == pytest.approx(6.9986, abs=0.01)


def test_convert_matches_read_dicom(cli, ge, tmp_path):
    out = tmp_path / "ge.nii.gz"
    r = run(cli, "convert", str(ge), str(out))
    assert r.returncode == 0, r.stderr
    img = nib.load(str(out))
    v, _ = ichkit.io.read_dicom(str(ge))
    assert img.shape == v.shape
    np.testing.assert_allclose(img.affine, np.asarray(v.affine, dtype=np.float32), atol=1e-4)
    np.testing.assert_allclose(img.get_fdata(dtype=np.float32), v.array, rtol=0, atol=1e-3)


def test_convert_unknown_series(cli, ge, tmp_path):
    out = tmp_path / "x.nii.gz"
    r = run(cli, "convert", str(ge), str(out), "--series", "1.2.3.4.5.not.there")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ichkit: error:")
    assert not Path(out).exists()


def test_info_malformed_one_line(cli, data_dir):
    r = run(cli, "info", str(data_dir / "malformed" / "dicom" / "missing_ipp"))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ichkit: error:")
