"""DICOM CT series reading (issue 3) against independent references.

References:
  * pixel values: pydicom 2.x decoding with its GDCM handler (python3-pydicom, python3-gdcm).
    pydicom's GDCM handler cannot decode the 12-bit lossy JPEG copies (transfer syntaxes
    1.2.840.10008.1.2.4.53 "process 6-8" and .55 "process 10-12": "Unsupported JPEG data
    precision 12") although the GDCM library itself can: for those two the reference is
    `gdcmconv --raw in out` (Debian libgdcm-tools) and pydicom on the uncompressed output
    (python-gdcm's ImageReader when gdcmconv is absent). Where both references decode a file
    they agree exactly (checked when these tests were written).
  * geometry: ImagePositionPatient / ImageOrientationPatient / PixelSpacing (LPS) turned into a
    RAS affine in numpy; resampling is checked by sampling ichkit's output with
    scipy.ndimage.map_coordinates(order=1) at the world position of every original pixel.
  * phantoms: ichkit.phantom.make_case written as DICOM by scripts/phantom_to_dicom.py.

HU expected from a file = stored * RescaleSlope + RescaleIntercept (per frame), with pixels equal
to PixelPaddingValue replaced by the reader's fill value (-1024, DicomReadOptions::fill_hu).
Arrays are (columns, rows, slices): ichkit's array[:, :, k] is pydicom's pixel_array.T.
"""
import contextlib
import csv
import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import ichkit

pydicom = pytest.importorskip("pydicom")
ndimage = pytest.importorskip("scipy.ndimage")
from pydicom.pixel_data_handlers import gdcm_handler, numpy_handler, rle_handler  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
DICOM = DATA / "dicom"
GE = DICOM / "ge-head-tilt"
SLICER = DICOM / "slicer-ctheadaxial"
TS_DIR = DICOM / "transfer-syntaxes"
SINGLE = DICOM / "single-slices"
MALFORMED = DATA / "malformed" / "dicom"
FILL = -1024.0
EXC = {
    "FormatError": ichkit.FormatError,
    "GeometryError": ichkit.GeometryError,
    "IoError": ichkit.IoError,
    "InvalidArgument": ichkit.InvalidArgument,
    "ResourceError": ichkit.ResourceError,
}
LOSSLESS_TS = {
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.90",
}
LOSSY_TS = {  # JPEG baseline, extended 12-bit (3 processes), JPEG-LS near-lossless, JPEG 2000
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.53", "1.2.840.10008.1.2.4.55",
    "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91",
}
PYDICOM_CANNOT = {"1.2.840.10008.1.2.4.53", "1.2.840.10008.1.2.4.55"}  # reference: gdcmconv --raw

_spec = importlib.util.spec_from_file_location("phantom_to_dicom", ROOT / "scripts" / "phantom_to_dicom.py")
p2d = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(p2d)


# ----------------------------------------------------------------------------------------------
# references (pydicom, numpy)
# ----------------------------------------------------------------------------------------------
def ras(v):
    """LPS point or vector -> RAS."""
    v = np.asarray(v, dtype=np.float64)
    return np.array([-v[0], -v[1], v[2]])


def single_files():
    files = sorted(p for p in TS_DIR.iterdir() if p.name != "LICENSE")
    files += sorted(SINGLE.glob("*.dcm"))
    return files


@contextlib.contextmanager
def gdcm_decoding():
    """pydicom decodes with numpy (uncompressed), its own RLE decoder (its GDCM handler does not
    take RLE; gdcmconv --raw gives the same values) or GDCM (everything else), nothing else."""
    if not gdcm_handler.is_available():
        pytest.skip("pydicom's GDCM handler (python3-gdcm) is not available")
    old = pydicom.config.pixel_data_handlers
    pydicom.config.pixel_data_handlers = [numpy_handler, rle_handler, gdcm_handler]
    try:
        yield
    finally:
        pydicom.config.pixel_data_handlers = old


def gdcm_raw_pixels(path, tmp_dir):
    """Stored values decoded by the GDCM library: gdcmconv --raw, then pydicom's numpy handler."""
    out = Path(tmp_dir) / (Path(path).name + ".raw.dcm")
    if shutil.which("gdcmconv"):
        r = subprocess.run(["gdcmconv", "--raw", str(path), str(out)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return pydicom.dcmread(out).pixel_array
    gdcm = pytest.importorskip("gdcm")
    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    assert reader.Read()
    image = reader.GetImage()
    pf = image.GetPixelFormat()
    dtype = {gdcm.PixelFormat.INT16: np.int16, gdcm.PixelFormat.UINT16: np.uint16, gdcm.PixelFormat.UINT8: np.uint8,
             gdcm.PixelFormat.INT8: np.int8}[pf.GetScalarType()]
    buf = image.GetBuffer().encode("utf-8", "surrogateescape")
    dims = image.GetDimensions()
    return np.frombuffer(buf, dtype).reshape(dims[1], dims[0]) if len(dims) == 2 or dims[2] == 1 else \
        np.frombuffer(buf, dtype).reshape(dims[2], dims[1], dims[0])


def frame_info(ds):
    """Per-frame geometry and rescale: (ipps (n,3) LPS, iop (6,), pixel_spacing (2,), slopes, intercepts)."""
    n = int(ds.get("NumberOfFrames", 1) or 1)
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
    per = ds.PerFrameFunctionalGroupsSequence if "PerFrameFunctionalGroupsSequence" in ds else None

    def find(keyword_seq, keyword, frame):
        for grp in ([per[frame]] if per is not None else []) + ([shared] if shared is not None else []):
            if keyword_seq in grp:
                item = getattr(grp, keyword_seq)[0]
                if keyword in item:
                    return getattr(item, keyword)
        return ds.get(keyword)

    ipps = np.array([find("PlanePositionSequence", "ImagePositionPatient", f) for f in range(n)], dtype=np.float64)
    iop = np.array(find("PlaneOrientationSequence", "ImageOrientationPatient", 0), dtype=np.float64)
    ps = np.array(find("PixelMeasuresSequence", "PixelSpacing", 0), dtype=np.float64)
    slopes = np.array([float(find("PixelValueTransformationSequence", "RescaleSlope", f) or 1.0) for f in range(n)])
    inters = np.array([float(find("PixelValueTransformationSequence", "RescaleIntercept", f) or 0.0)
                       for f in range(n)])
    return ipps, iop, ps, slopes, inters


def reference_hu(path, tmp_dir):
    """(hu (n, rows, cols) float64 with padding -> FILL, stored (n, rows, cols), dataset)."""
    ds = pydicom.dcmread(str(path))
    ts = str(ds.file_meta.TransferSyntaxUID)
    with gdcm_decoding():
        stored = gdcm_raw_pixels(path, tmp_dir) if ts in PYDICOM_CANNOT else ds.pixel_array
    stored = np.asarray(stored).astype(np.int64)
    if stored.ndim == 2:
        stored = stored[None]
    _, _, _, slopes, inters = frame_info(ds)
    hu = stored * slopes[:, None, None] + inters[:, None, None]
    if "PixelPaddingValue" in ds:
        hu = np.where(stored == int(ds.PixelPaddingValue), FILL, hu)
    return hu, stored, ds


def assert_frames_placed(vol, frames_hu, ipps, iop, ps):
    """Every frame lies on a k-plane of the volume with its own HU, in-plane axes as DICOM's."""
    a = np.asarray(vol.affine, dtype=np.float64)
    row, col = iop[:3], iop[3:]
    np.testing.assert_allclose(a[:3, 0], ras(row) * ps[1], atol=1e-4)  # cosines may be renormalised
    np.testing.assert_allclose(a[:3, 1], ras(col) * ps[0], atol=1e-4)
    inv = np.linalg.inv(a)
    ks = []
    for f, ipp in enumerate(ipps):
        ijk = inv @ np.r_[ras(ipp), 1.0]
        k = int(round(ijk[2]))
        assert abs(ijk[0]) < 1e-3 and abs(ijk[1]) < 1e-3 and abs(ijk[2] - k) < 1e-3, (f, ijk)
        assert 0 <= k < vol.shape[2]
        ks.append(k)
        np.testing.assert_allclose(vol.array[:, :, k], frames_hu[f].T, rtol=0, atol=1e-3, err_msg=f"frame {f}")
    assert len(set(ks)) == len(ks)


def load_series(folder):
    """pydicom reference of a series folder: HU (n, rows, cols) sorted along the slice normal,
    padding -> FILL, LPS positions, iop, pixel spacing, padding mask."""
    dss = []
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file():
            try:
                ds = pydicom.dcmread(str(p))
            except pydicom.errors.InvalidDicomError:
                continue
            if "PixelData" in ds:
                dss.append(ds)
    iop = np.array(dss[0].ImageOrientationPatient, dtype=np.float64)
    normal = np.cross(iop[:3], iop[3:])
    ipps = np.array([d.ImagePositionPatient for d in dss], dtype=np.float64)
    order = np.argsort(ipps @ normal, kind="stable")
    dss = [dss[i] for i in order]
    stored = np.stack([d.pixel_array.astype(np.int64) for d in dss])
    slope = np.array([float(d.get("RescaleSlope", 1)) for d in dss])[:, None, None]
    inter = np.array([float(d.get("RescaleIntercept", 0)) for d in dss])[:, None, None]
    hu = stored * slope + inter
    pad = np.zeros(stored.shape, bool)
    if "PixelPaddingValue" in dss[0]:
        pad = stored == int(dss[0].PixelPaddingValue)
        hu = np.where(pad, FILL, hu)
    return {"hu": hu, "ipp": ipps[order], "iop": iop, "normal": normal,
            "ps": np.array(dss[0].PixelSpacing, dtype=np.float64), "pad": pad, "datasets": dss,
            "uid": str(dss[0].SeriesInstanceUID)}


def pixel_world_ras(ref, slices, rows, cols):
    """RAS positions of pixels (slice s, row r, column c) of a reference series, (3, n)."""
    row, col = ref["iop"][:3], ref["iop"][3:]
    ipp = ref["ipp"][slices]
    lps = ipp + (cols * ref["ps"][1])[:, None] * row + (rows * ref["ps"][0])[:, None] * col
    return np.stack([-lps[:, 0], -lps[:, 1], lps[:, 2]])


def sample(vol, world_ras):
    """Trilinear samples of vol at RAS points (3, n); NaN for points outside (more than half a
    voxel beyond the grid)."""
    inv = np.linalg.inv(np.asarray(vol.affine, dtype=np.float64))
    ijk = inv[:3, :3] @ world_ras + inv[:3, 3:4]
    shape = np.array(vol.shape)[:, None]
    inside = np.all((ijk >= -0.5) & (ijk <= shape - 0.5), axis=0)
    vals = ndimage.map_coordinates(np.asarray(vol.array, dtype=np.float32), ijk, order=1, mode="nearest")
    return np.where(inside, vals, np.nan)


def column_angles_deg(a):
    m = np.asarray(a, dtype=np.float64)[:3, :3]
    u = m / np.linalg.norm(m, axis=0)
    return [np.degrees(np.arccos(np.clip(abs(u[:, p] @ u[:, q]), 0, 1))) for p, q in ((0, 1), (0, 2), (1, 2))]


def is_orthogonal(a, tol=1e-6):
    m = np.asarray(a, dtype=np.float64)[:3, :3]
    u = m / np.linalg.norm(m, axis=0)
    return np.allclose(u.T @ u, np.eye(3), atol=tol)


def shear_angle_deg(a):
    """Angle between the k column and the normal of the (i, j) plane."""
    m = np.asarray(a, dtype=np.float64)[:3, :3]
    n = np.cross(m[:, 0], m[:, 1])
    return np.degrees(np.arccos(abs(n @ m[:, 2]) / (np.linalg.norm(n) * np.linalg.norm(m[:, 2]))))


# ----------------------------------------------------------------------------------------------
# 1. transfer syntaxes and single slices
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("gdcm_raw")


@pytest.fixture(scope="module")
def lossless_reference():
    v = ichkit.read(str(TS_DIR / "CTImage.dcm"))
    return np.array(v.array), np.array(v.affine)


@pytest.mark.parametrize("path", single_files(), ids=lambda p: p.name[:60])
def test_single_file_decodes_like_pydicom(path, raw_dir):
    hu, _, ds = reference_hu(path, raw_dir)
    v = ichkit.read(str(path))
    assert isinstance(v, ichkit.Volume)
    assert v.dtype == np.float32
    n = hu.shape[0]
    assert v.shape == (int(ds.Columns), int(ds.Rows), n)
    ipps, iop, ps, _, _ = frame_info(ds)
    assert_frames_placed(v, hu, ipps, iop, ps)
    a = np.asarray(v.affine, dtype=np.float64)
    normal = ras(np.cross(iop[:3], iop[3:]))
    kcol = a[:3, 2]
    assert np.linalg.norm(kcol) > 0
    # the k axis is along the slice normal (these files have no tilt between frames); the
    # Hitachi file's IOP has 4 decimals (|column cosine| = 1.000012), hence the tolerance
    cos = abs(kcol @ normal) / (np.linalg.norm(kcol) * np.linalg.norm(normal))
    assert cos > np.cos(np.radians(0.01))


def test_multiframe_enhanced_ct(raw_dir):
    """CT0012: Enhanced CT Image Storage, 2 frames of fragmented JPEG baseline (12-bit, no basic
    offset table). Geometry and rescale live only in the functional groups: shared IOP
    -1\\0\\0\\0\\1\\0 (normal LPS (0, 0, -1)), PixelSpacing 0.388672, RescaleSlope 1 / Intercept
    -1024; per-frame IPP z = -159 (frame 1) and -149 (frame 2): the frames are 10 mm apart and,
    along the normal, frame 2 comes first."""
    path = TS_DIR / "CT0012.fragmented_no_bot_jpeg_baseline.51.dcm"
    hu, stored, ds = reference_hu(path, raw_dir)
    ipps, iop, ps, slopes, inters = frame_info(ds)
    np.testing.assert_allclose(ipps, [[99.5, -301.5, -159.0], [99.5, -301.5, -149.0]])
    np.testing.assert_allclose(iop, [-1, 0, 0, 0, 1, 0])
    assert list(slopes) == [1.0, 1.0] and list(inters) == [-1024.0, -1024.0]
    assert "RescaleIntercept" not in ds  # only in SharedFunctionalGroupsSequence
    v, rep = ichkit.io.read_dicom(str(path))
    assert v.shape == (512, 512, 2)
    assert_frames_placed(v, hu, ipps, iop, ps)
    assert np.linalg.norm(np.asarray(v.affine)[:3, 2]) == pytest.approx(10.0, abs=1e-4)
    assert rep["images"] == 2
    assert rep["transfer_syntaxes"] == ["1.2.840.10008.1.2.4.51"]
    assert rep["tilt_deg"] == pytest.approx(0.0, abs=1e-3)
    assert rep["duplicates"] == 0 and rep["gaps"] == []


def test_lossless_copies_identical(lossless_reference):
    ref, ref_affine = lossless_reference
    n = 0
    for path in single_files():
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        if not path.name.startswith("CTImage") or str(ds.file_meta.TransferSyntaxUID) not in LOSSLESS_TS:
            continue
        v = ichkit.read(str(path))
        np.testing.assert_array_equal(v.array, ref, err_msg=path.name)
        np.testing.assert_allclose(v.affine, ref_affine, atol=1e-6)
        n += 1
    assert n == 10  # CTImage.dcm itself + 9 lossless copies


def test_lossy_copies_close(lossless_reference):
    ref, _ = lossless_reference
    seen = {}
    for path in single_files():
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        ts = str(ds.file_meta.TransferSyntaxUID)
        if not path.name.startswith("CTImage") or ts not in LOSSY_TS:
            continue
        d = np.abs(ichkit.read(str(path)).array.astype(np.float64) - ref)
        seen[ts] = float(d.max())
        assert 0 < d.max() < 100, (path.name, d.max())
    assert set(seen) == LOSSY_TS
    # observed with pydicom/gdcmconv: baseline 8-bit 64.2, 12-bit extended 35.6, JPEG-LS near 1, J2K 5
    assert seen["1.2.840.10008.1.2.4.50"] == pytest.approx(64.2192, abs=0.01)
    for ts in ("1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.53", "1.2.840.10008.1.2.4.55"):
        assert seen[ts] == pytest.approx(35.6278, abs=0.01)  # the same 12-bit data in all three
    assert seen["1.2.840.10008.1.2.4.81"] == pytest.approx(1.0, abs=1e-3)
    assert seen["1.2.840.10008.1.2.4.91"] == pytest.approx(5.0, abs=1e-3)


def test_pixel_representation_mismatch(raw_dir):
    """J2K_pixelrep_mismatch: BitsStored 13, PixelRepresentation 1, but the JPEG 2000 stream is
    unsigned. The GDCM library alone (gdcmconv --raw) returns 0..8191; the values must be sign
    extended from bit 12 to give pydicom's -2000..1896."""
    path = SINGLE / "J2K_pixelrep_mismatch.dcm"
    hu, _, ds = reference_hu(path, raw_dir)
    assert (hu.min(), hu.max()) == (-2000, 1896)
    v = ichkit.read(str(path))
    assert (float(v.array.min()), float(v.array.max())) == (-2000.0, 1896.0)
    np.testing.assert_array_equal(v.array[:, :, 0], hu[0].T.astype(np.float32))
    raw = np.asarray(gdcm_raw_pixels(path, raw_dir)).astype(np.int64)
    np.testing.assert_array_equal(np.where(raw >= 4096, raw - 8192, raw), hu[0])


def test_padding_replaced_and_counted(raw_dir):
    """CT1_J2KR: PixelPaddingValue -2000 on 55772 pixels -> fill value -1024, counted in the report.
    CTImage.dcm declares -32768 (never present) and keeps its -2000 -> -3024 HU."""
    v, rep = ichkit.io.read_dicom(str(TS_DIR / "CT1_J2KR"))
    assert rep["padding_voxels"] == 55772
    assert int(np.count_nonzero(v.array == FILL)) >= 55772
    v2, rep2 = ichkit.io.read_dicom(str(TS_DIR / "CTImage.dcm"))
    assert rep2["padding_voxels"] == 0
    assert float(v2.array.min()) == -3024.0
    assert v2.orientation == "LPS"


# ----------------------------------------------------------------------------------------------
# 2. GE head CT: gantry tilt 18.5 degrees and two slice spacings
# ----------------------------------------------------------------------------------------------
# Along the slice normal (IOP 1\0\0\0\0.9483237\-0.3173047, normal (0, 0.3173, 0.9483) LPS) the 28
# slices sit at -33.6655 ... 18.3595 (14 slices, steps 4.0019), then 19.4406 (a 1.0811 step: the
# last 4 mm slice and the first 7 mm slice overlap), then ... 110.4228 (14 slices, steps 6.9986).
# Along the table (LPS z) the steps are 4.22, 1.14 and 7.38 mm.
GE_STEPS = [4.0019] * 13 + [1.0811] + [6.9986] * 13


@pytest.fixture(scope="module")
def ge_ref():
    ref = load_series(GE)
    assert len(ref["datasets"]) == 28
    return ref


@pytest.fixture(scope="module")
def ge_resampled():
    return ichkit.io.read_dicom(str(GE))


@pytest.fixture(scope="module")
def ge_keep():
    return ichkit.io.read_dicom(str(GE), tilt="keep")


def test_ge_reference_geometry(ge_ref):
    pos = ge_ref["ipp"] @ ge_ref["normal"]
    steps = np.diff(pos)
    np.testing.assert_allclose(steps, GE_STEPS, atol=2e-4)
    assert pos[0] == pytest.approx(-33.6655, abs=1e-3) and pos[-1] == pytest.approx(110.4228, abs=1e-3)
    tilt = np.degrees(np.arccos(ge_ref["normal"] @ np.array([0, 0, 1.0])))
    assert tilt == pytest.approx(18.5, abs=0.01)


def test_ge_report(ge_resampled, ge_ref):
    v, rep = ge_resampled
    assert rep["series_uid"] == ge_ref["uid"]
    assert rep["modality"] == "CT" and rep["kernel"] == "STD+"
    assert rep["transfer_syntaxes"] == ["1.2.840.10008.1.2.1"]
    assert rep["images"] == 28 and rep["duplicates"] == 0
    assert rep["files_skipped"] == 1  # LICENSE
    assert abs(rep["tilt_deg"]) == pytest.approx(18.5, abs=0.1)
    # spacings along the normal: 1.08 (block step), 4.0 (14 slices), 7.0 (14 slices)
    assert rep["spacing_min_mm"] == pytest.approx(1.0811, abs=0.01)
    assert rep["spacing_median_mm"] == pytest.approx(4.0019, abs=0.01)
    assert rep["spacing_max_mm"] == pytest.approx(6.9986, abs=0.01)
    assert rep["uniform_spacing"] is False
    assert rep["inconsistent_orientation"] is False
    assert rep["non_hu"] is False
    assert rep["padding_voxels"] == 28 * 62180  # PixelPaddingValue -1500
    assert rep["resampled"] is True and rep["orthogonal"] is True
    assert rep["actions"] and rep["warnings"]
    # The series is two blocks - 14 slices at 4.0 mm, 14 at 7.0 mm - joined by one 1.08 mm step:
    # the report names both spacings as runs, and finds no missing slice (a step is a gap only
    # when it is > 1.5x the steps around it, so the 7 mm block is not "missing slices").
    runs = [(r["spacing_mm"], r["steps"]) for r in rep["spacing_runs"]]
    assert len(runs) == 3
    assert runs[0][0] == pytest.approx(4.0019, abs=0.01) and runs[0][1] == 13
    assert runs[1][0] == pytest.approx(1.0811, abs=0.01) and runs[1][1] == 1
    assert runs[2][0] == pytest.approx(6.9986, abs=0.01) and runs[2][1] == 13
    pos = ge_ref["ipp"] @ ge_ref["normal"]
    np.testing.assert_allclose(sorted({round(float(x), 1) for x in np.diff(np.sort(pos))}), [1.1, 4.0, 7.0], atol=0.05)
    assert rep["gaps"] == []


def test_ge_resampled_geometry(ge_resampled):
    v, rep = ge_resampled
    a = np.asarray(v.affine, dtype=np.float64)
    assert is_orthogonal(a), column_angles_deg(a)
    assert v.orientation == "LPS"
    np.testing.assert_allclose(rep["output_spacing"], v.spacing, atol=1e-5)
    np.testing.assert_allclose(v.spacing[:2], [0.4882812, 0.4882812], atol=1e-5)
    # default output slice spacing: the smallest spacing that repeats (4.0 mm; the lone 1.08 mm
    # step between the two blocks would otherwise give 134 slices)
    assert v.spacing[2] == pytest.approx(4.0019, abs=1e-3)
    extent = 110.4228 + 33.6655  # along the normal
    assert (v.shape[2] - 1) * v.spacing[2] >= extent - v.spacing[2]


def test_ge_resampling_reproduces_original(ge_resampled, ge_ref):
    v, _ = ge_resampled
    hu = ge_ref["hu"]
    s, r, c = np.nonzero((hu > -500) & ~ge_ref["pad"])
    keep = (r % 2 == 0) & (c % 2 == 0)  # every 4th pixel is plenty
    s, r, c = s[keep], r[keep], c[keep]
    got = sample(v, pixel_world_ras(ge_ref, s, r, c))
    inside = np.isfinite(got)
    assert inside.mean() > 0.99
    diff = np.abs(got[inside] - hu[s, r, c][inside])
    assert np.median(diff) < 20, np.median(diff)


def test_ge_keep_tilt(ge_keep, ge_ref):
    v, rep = ge_keep
    a = np.asarray(v.affine, dtype=np.float64)
    assert not is_orthogonal(a)
    assert shear_angle_deg(a) == pytest.approx(18.5, abs=0.1)
    assert rep["orthogonal"] is False
    assert abs(rep["tilt_deg"]) == pytest.approx(18.5, abs=0.1)
    assert v.orientation == "LPS"
    # in-plane axes are the DICOM ones, the origin is the first slice's first pixel
    np.testing.assert_allclose(a[:3, 0], ras(ge_ref["iop"][:3]) * ge_ref["ps"][1], atol=1e-5)
    np.testing.assert_allclose(a[:3, 1], ras(ge_ref["iop"][3:]) * ge_ref["ps"][0], atol=1e-5)
    np.testing.assert_allclose(a[:3, 3], ras(ge_ref["ipp"][0]), atol=1e-3)
    hu = ge_ref["hu"]
    s, r, c = np.nonzero((hu > -500) & ~ge_ref["pad"])
    keep = (r % 2 == 0) & (c % 2 == 0)
    s, r, c = s[keep], r[keep], c[keep]
    got = sample(v, pixel_world_ras(ge_ref, s, r, c))
    inside = np.isfinite(got)
    assert inside.mean() > 0.99
    assert np.median(np.abs(got[inside] - hu[s, r, c][inside])) < 20


def test_ge_spacing_refuse():
    with pytest.raises(ichkit.GeometryError):
        ichkit.io.read_dicom(str(GE), spacing="refuse")
    with pytest.raises(ichkit.GeometryError):
        ichkit.io.read_dicom(str(GE), tilt="keep", spacing="refuse")


def test_ge_slice_spacing_option():
    v, rep = ichkit.io.read_dicom(str(GE), slice_spacing=4.0)
    assert v.spacing[2] == pytest.approx(4.0, abs=1e-4)
    assert rep["output_spacing"][2] == pytest.approx(4.0, abs=1e-4)
    assert abs((v.shape[2] - 1) * 4.0 - 144.09) <= 8.0
    assert is_orthogonal(v.affine)


def test_bad_options():
    with pytest.raises(ichkit.InvalidArgument):
        ichkit.io.read_dicom(str(SLICER), tilt="straighten")
    with pytest.raises(ichkit.InvalidArgument):
        ichkit.io.read_dicom(str(SLICER), spacing="whatever")
    with pytest.raises(ichkit.InvalidArgument):
        ichkit.io.read_dicom(str(SLICER), slice_spacing=-1.0)
    with pytest.raises(ichkit.IoError):
        ichkit.io.read_dicom(str(DICOM / "does-not-exist"))


# ----------------------------------------------------------------------------------------------
# 3. phantom -> DICOM -> ichkit round trips
# ----------------------------------------------------------------------------------------------
TILT = 15.0
DROP, DUP = 3, 12


def flip_to_lps(arr, affine):
    """The same volume indexed so that i goes to patient left and j posterior (standard DICOM)."""
    arr = np.asarray(arr)
    ni, nj = arr.shape[:2]
    flip = np.array([[-1.0, 0, 0, ni - 1], [0, -1, 0, nj - 1], [0, 0, 1, 0], [0, 0, 0, 1]])
    return np.ascontiguousarray(arr[::-1, ::-1, :]), np.asarray(affine, dtype=np.float64) @ flip


@pytest.fixture(scope="module")
def phantom():
    case = ichkit.phantom.make_case(shape=(192, 192, 24), spacing=(1.2, 1.2, 5.0), tilt=TILT, seed=5, volume_ml=25,
                                    location="basal_ganglia")
    a = np.asarray(case["image"].affine, dtype=np.float64)
    t = np.radians(TILT)
    np.testing.assert_allclose(a[:3, 1], 1.2 * np.array([0, np.cos(t), np.sin(t)]), atol=1e-6)
    np.testing.assert_allclose(a[:3, 2], [0, 0, 5.0], atol=1e-6)
    hu, aff = flip_to_lps(case["image"].array, a)
    mask, _ = flip_to_lps(case["mask"].array, a)
    brain, _ = flip_to_lps(case["brain"].array, a)
    assert not mask[:, :, DROP].any()  # the dropped slice is away from the hematoma
    return {"hu": hu.astype(np.float64), "mask": mask, "brain": brain, "affine": aff,
            "volume_ml": float(case["volume_ml"])}


@pytest.fixture(scope="module")
def phantom_dir(phantom, tmp_path_factory):
    d = tmp_path_factory.mktemp("phantom_dicom")
    files = p2d.write_ct_series(str(d), phantom["hu"], phantom["affine"], series_uid=p2d.uid_from("test", "phantom"),
                                shuffle_seed=11, drop_slices=(DROP,), duplicate_slices=(DUP,))
    assert len(files) == 24
    return d


@pytest.fixture(scope="module")
def phantom_keep(phantom_dir):
    return ichkit.io.read_dicom(str(phantom_dir), tilt="keep")


@pytest.fixture(scope="module")
def phantom_resampled(phantom_dir):
    return ichkit.io.read_dicom(str(phantom_dir))


def test_phantom_writer(phantom, phantom_dir):
    """The test's own writer: shuffled, one slice missing, one duplicated, geometry exact."""
    ref = load_series(phantom_dir)
    dss = ref["datasets"]
    assert len(dss) == 24
    names = [Path(d.filename).name for d in dss]
    numbers = [int(d.InstanceNumber) for d in dss]
    assert names != sorted(names) and numbers != sorted(numbers) and sorted(numbers) == list(range(1, 25))
    assert len({d.SOPInstanceUID for d in dss}) == 24
    geo = p2d.series_geometry(phantom["affine"])
    pos = ref["ipp"] @ geo["normal"]
    ks = np.rint((pos - pos[0]) / geo["slice_spacing"]).astype(int)
    assert sorted(set(ks)) == [k for k in range(24) if k != DROP]
    np.testing.assert_allclose(ref["iop"], np.r_[geo["row_cosine"], geo["col_cosine"]], atol=1e-9)
    np.testing.assert_allclose(ref["iop"][3:], [0, np.cos(np.radians(TILT)), -np.sin(np.radians(TILT))], atol=1e-9)
    assert float(dss[0].GantryDetectorTilt) == pytest.approx(TILT)
    for d, k in zip(dss, ks):
        np.testing.assert_allclose(ras(d.ImagePositionPatient), (phantom["affine"] @ [0, 0, k, 1])[:3], atol=1e-6)
        np.testing.assert_allclose(d.pixel_array.T - 1024.0, phantom["hu"][:, :, k], atol=0.5 + 1e-3)


def test_phantom_keep_tilt_same_grid(phantom, phantom_keep):
    v, rep = phantom_keep
    geo = p2d.series_geometry(phantom["affine"])
    assert v.shape == (192, 192, 24)
    np.testing.assert_allclose(v.affine, phantom["affine"], atol=1e-3)
    assert v.orientation == "LPS"
    assert rep["images"] == 23 and rep["duplicates"] == 1 and rep["files_skipped"] == 0
    assert abs(rep["tilt_deg"]) == pytest.approx(TILT, abs=0.1)
    assert rep["orthogonal"] is False and rep["resampled"] is True
    dn = geo["slice_spacing"]  # 5 cos 15 = 4.83 mm along the normal
    assert rep["spacing_min_mm"] == pytest.approx(dn, abs=1e-3)
    assert rep["spacing_median_mm"] == pytest.approx(dn, abs=1e-3)
    assert rep["spacing_max_mm"] == pytest.approx(2 * dn, abs=1e-3)
    assert rep["uniform_spacing"] is False
    assert len(rep["gaps"]) == 1
    gap = rep["gaps"][0]
    assert gap["size_mm"] == pytest.approx(2 * dn, abs=0.01)
    before_lps = ras((phantom["affine"] @ [0, 0, DROP - 1, 1])[:3])  # RAS <-> LPS is the same flip
    assert gap["position_mm"] == pytest.approx(float(before_lps @ geo["normal"]), abs=0.01)
    for k in range(24):
        if k != DROP:
            np.testing.assert_allclose(v.array[:, :, k], phantom["hu"][:, :, k], atol=1.0, err_msg=f"slice {k}")
    # the missing slice is interpolated halfway between its neighbours (along the stack)
    mid = 0.5 * (phantom["hu"][:, :, DROP - 1] + phantom["hu"][:, :, DROP + 1])
    np.testing.assert_allclose(v.array[:, :, DROP], mid, atol=1.0)


def test_phantom_refuse_missing_slice(phantom_dir):
    with pytest.raises(ichkit.GeometryError):
        ichkit.io.read_dicom(str(phantom_dir), tilt="keep", spacing="refuse")


def test_phantom_resampled_matches_world(phantom, phantom_resampled):
    v, rep = phantom_resampled
    assert is_orthogonal(v.affine)
    assert rep["orthogonal"] is True and rep["resampled"] is True
    assert abs(rep["tilt_deg"]) == pytest.approx(TILT, abs=0.1)
    i, j, k = np.nonzero(phantom["brain"])
    world = phantom["affine"][:3, :3] @ np.stack([i, j, k]).astype(np.float64) + phantom["affine"][:3, 3:4]
    got = sample(v, world)
    inside = np.isfinite(got)
    assert inside.mean() > 0.99
    diff = np.abs(got[inside] - phantom["hu"][i, j, k][inside])
    assert np.median(diff) < 20, np.median(diff)


def test_phantom_mask_volume_preserved(phantom, tmp_path):
    """Mask 0/1 as int16 (slope 1, intercept 0), tilted, read with tilt="resample", threshold 0.5.
    Simulated in numpy when written: linear interpolation onto the slice-aligned orthogonal grid
    (spacing 5 cos 15 = 4.83 mm along the normal) keeps the count exactly; onto world-aligned axes
    it is 0.6 % off; resampling to 5.0 mm along the normal would lose 2.6 %."""
    p2d.write_ct_series(str(tmp_path), phantom["mask"].astype(np.float64), phantom["affine"],
                        series_uid=p2d.uid_from("test", "phantom-mask"), rescale=(1.0, 0.0), description="mask")
    v, rep = ichkit.io.read_dicom(str(tmp_path))
    assert rep["orthogonal"] is True
    assert float(v.array.max()) <= 1 + 1e-3  # (outside the acquired slab the reader writes fill_hu)
    ml = np.count_nonzero(v.array >= 0.5) * abs(np.linalg.det(np.asarray(v.affine)[:3, :3])) / 1000.0
    assert ml == pytest.approx(phantom["volume_ml"], rel=0.01)


# ----------------------------------------------------------------------------------------------
# 4. malformed inputs
# ----------------------------------------------------------------------------------------------
def malformed_cases():
    with open(MALFORMED / "expected.csv", newline="") as fh:
        return [(r["case"], r["exception"], r["what"]) for r in csv.DictReader(fh)]


def malformed_path(case, tmp_path):
    if case == "empty_folder":  # git does not keep empty folders
        p = tmp_path / "empty_folder"
        p.mkdir()
        return p
    return MALFORMED / case


def test_malformed_corpus_size():
    cases = malformed_cases()
    assert len(cases) >= 18
    kinds = {c[1] for c in cases}
    assert {"FormatError", "GeometryError", "split", "skipped"} <= kinds
    assert kinds <= set(EXC) | {"split", "skipped"}


def test_a_folder_of_corrupt_files_says_why():
    # GDCM's image reader asserts (aborts the process) on geometry stored with another VR; the
    # walk over element headers refuses it first, and a folder's error names the first reason
    with pytest.raises(ichkit.FormatError, match=r"4 file\(s\) are not DICOM images; the first corrupt one: .*"
                       r"\(0020,0037\) has VR LO; GDCM's image reader needs DS"):
        ichkit.io.read_dicom(str(MALFORMED / "iop_wrong_vr"))


@pytest.mark.parametrize("case", [c[0] for c in malformed_cases() if "length_bomb" in c[0]])
def test_length_bombs_are_refused_before_gdcm_allocates(case):
    # GDCM allocates a declared length before reading it; the walk over element headers refuses
    # the file first and says which length (GDCM's own failure, after allocating, would not)
    with pytest.raises(ichkit.FormatError, match=r"declares \d+ bytes"):
        ichkit.io.read_dicom(str(MALFORMED / case))


@pytest.mark.parametrize("case,exception,what", malformed_cases(), ids=[c[0] for c in malformed_cases()])
def test_malformed(case, exception, what, tmp_path):
    path = str(malformed_path(case, tmp_path))
    try:  # listing never crashes: a list, or a typed error
        listed = ichkit.io.list_series(path)
        assert isinstance(listed, list)
    except ichkit.Error:
        listed = None
    if exception in EXC:
        with pytest.raises(EXC[exception]) as e:
            ichkit.io.read_dicom(path)
        assert len(str(e.value)) > 10
        with pytest.raises(EXC[exception]):
            ichkit.read(path)
    elif exception == "skipped":
        v, rep = ichkit.io.read_dicom(path)
        assert rep["files_skipped"] >= 1 and rep["warnings"]
        ref = load_series(path)
        assert v.shape == (32, 32, 4)
        np.testing.assert_allclose(v.array, ref["hu"].transpose(2, 1, 0), atol=1e-3)
    elif exception == "split":
        uid = str(pydicom.dcmread(str(next(Path(path).glob("*.dcm"))), stop_before_pixels=True).SeriesInstanceUID)
        parts = [s for s in listed if s["series_uid"] == uid]
        assert len(parts) >= 2, what
        keys = [s["key"] for s in parts]
        assert len(set(keys)) == len(keys) and all(k.startswith(uid) for k in keys)
        assert sorted(s["images"] for s in parts) == [2, 4]
        v, rep = ichkit.io.read_dicom(path)
        assert rep["warnings"], what
        assert rep["images"] == 4 and v.shape == (32, 32, 4)
        small = next(s for s in parts if s["images"] == 2)
        v2, rep2 = ichkit.io.read_dicom(path, series=small["key"], tilt="keep")  # the 10-degree part is tilted
        assert rep2["images"] == 2
        assert v2.shape == ((24, 24, 2) if case == "mixed_matrix_sizes" else (32, 32, 2))
    else:
        pytest.fail(f"unknown expectation {exception!r} for {case}")


# ----------------------------------------------------------------------------------------------
# 5. series listing and choice, non-HU data, ichkit.read dispatch
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def all_series():
    return ichkit.io.list_series(str(DICOM))


def test_list_series_tree(all_series):
    expected_uids = set()
    for p in DICOM.rglob("*"):
        if p.is_file() and p.name != "LICENSE":
            expected_uids.add(str(pydicom.dcmread(str(p), stop_before_pixels=True).SeriesInstanceUID))
    assert len(expected_uids) == 7
    assert {s["series_uid"] for s in all_series} == expected_uids
    keys = [s["key"] for s in all_series]
    assert len(set(keys)) == len(keys)
    for s in all_series:
        assert set(s) >= {"key", "series_uid", "study_uid", "description", "modality", "kernel", "kind", "orientation",
                          "rows", "columns", "images", "files"}
    ge_uid = str(pydicom.dcmread(str(GE / "01.dcm"), stop_before_pixels=True).SeriesInstanceUID)
    ge = [s for s in all_series if s["series_uid"] == ge_uid]
    assert len(ge) == 1
    ge = ge[0]
    assert ge["key"] == ge_uid
    assert ge["images"] == 28 and ge["kind"] == "axial_ct" and ge["orientation"] == "axial"
    assert (ge["rows"], ge["columns"]) == (512, 512) and ge["kernel"] == "STD+" and ge["modality"] == "CT"
    assert sorted(Path(f).name for f in ge["files"]) == [f"{i:02d}.dcm" for i in range(1, 29)]
    sl_uid = str(pydicom.dcmread(str(SLICER / "CTHead1.dcm"), stop_before_pixels=True).SeriesInstanceUID)
    sl = [s for s in all_series if s["series_uid"] == sl_uid]
    assert len(sl) == 1 and sl[0]["images"] == 93 and sl[0]["kind"] == "axial_ct"
    assert (sl[0]["rows"], sl[0]["columns"]) == (64, 64)
    # CTImage.dcm and its 15 copies share one SeriesInstanceUID (and one position)
    ct_uid = str(pydicom.dcmread(str(TS_DIR / "CTImage.dcm"), stop_before_pixels=True).SeriesInstanceUID)
    assert sum(s["images"] for s in all_series if s["series_uid"] == ct_uid) == 16
    mf_uid = str(pydicom.dcmread(str(TS_DIR / "CT0012.fragmented_no_bot_jpeg_baseline.51.dcm"),
                                 stop_before_pixels=True).SeriesInstanceUID)
    assert sum(s["images"] for s in all_series if s["series_uid"] == mf_uid) == 2  # frames count


def test_choose_series_by_uid(ge_ref):
    v, rep = ichkit.io.read_dicom(str(DICOM), series=ge_ref["uid"], slice_spacing=4.0)
    assert rep["series_uid"] == ge_ref["uid"] and rep["series_key"] == ge_ref["uid"]
    assert rep["images"] == 28
    assert abs(rep["tilt_deg"]) == pytest.approx(18.5, abs=0.1)
    with pytest.raises(ichkit.InvalidArgument):
        ichkit.io.read_dicom(str(DICOM), series="1.2.3.4.5.does.not.exist")


def test_slicer_not_hu():
    ref = load_series(SLICER)
    v, rep = ichkit.io.read_dicom(str(SLICER))
    assert rep["non_hu"] is True and len(rep["non_hu_reason"]) > 5
    assert rep["images"] == 93 and rep["files_skipped"] == 1  # LICENSE
    assert rep["resampled"] is False and rep["uniform_spacing"] is True and rep["gaps"] == []
    assert rep["tilt_deg"] == pytest.approx(0.0, abs=1e-6)
    assert rep["spacing_min_mm"] == pytest.approx(1.5) and rep["spacing_max_mm"] == pytest.approx(1.5)
    assert v.shape == (64, 64, 93)
    assert v.orientation == "LPS"
    np.testing.assert_allclose(v.spacing, (3.2, 3.2, 1.5), atol=1e-6)
    np.testing.assert_allclose(v.affine, [[-3.2, 0, 0, 0], [0, -3.2, 0, 0], [0, 0, 1.5, 0], [0, 0, 0, 1]], atol=1e-6)
    np.testing.assert_array_equal(v.array, ref["hu"].transpose(2, 1, 0).astype(np.float32))


def test_read_dispatch():
    folder = ichkit.read(str(SLICER))
    assert isinstance(folder, ichkit.Volume) and folder.dtype == np.float32 and folder.shape == (64, 64, 93)
    v, _ = ichkit.io.read_dicom(str(SLICER))
    np.testing.assert_array_equal(folder.array, v.array)
    one = ichkit.read(str(SINGLE / "CT_small.dcm"))
    assert isinstance(one, ichkit.Volume) and one.dtype == np.float32 and one.shape == (128, 128, 1)
    assert ichkit.read(str(GE / "01.dcm")).shape == (512, 512, 1)  # a file of a series: that file only
    nii = ichkit.read(str(DATA / "nifti" / "blast-ct-lesions" / "scan_0_segmentation.nii.gz"))
    assert isinstance(nii, ichkit.Volume) and nii.dtype == np.float32 and nii.shape == (201, 201, 149)


def test_detect_format_and_is_dicom(tmp_path):
    assert ichkit.io.detect_format(str(GE / "01.dcm")) == "dicom"
    assert ichkit.io.detect_format(str(GE)) == "dicom_folder"
    assert ichkit.io.detect_format(str(DATA / "nifti" / "blast-ct-lesions" / "scan_0_segmentation.nii.gz")) == "nifti"
    assert ichkit.io.is_dicom(str(TS_DIR / "CT1_J2KR"))  # no extension
    assert not ichkit.io.is_dicom(str(GE / "LICENSE"))
    assert not ichkit.io.is_dicom(str(DATA / "nifti" / "blast-ct-lesions" / "scan_0_segmentation.nii.gz"))
    # a bare implicit VR little endian dataset (no preamble, no "DICM", no file meta), as old
    # ACR-NEMA style exports write: "a plausible implicit-VR dataset" (dicom.h)
    ds = pydicom.dcmread(str(SINGLE / "CT_small.dcm"))
    bare = tmp_path / "IM0001"
    ds.is_implicit_VR, ds.is_little_endian = True, True
    ds.preamble = None
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.save_as(str(bare), write_like_original=True)
    with open(bare, "rb") as fh:
        head = fh.read(132)
    assert head[128:132] != b"DICM" and head[:4] == b"\x08\x00\x05\x00"  # starts with (0008,0005)
    assert ichkit.io.is_dicom(str(bare))
    np.testing.assert_array_equal(ichkit.read(str(bare)).array, ichkit.read(str(SINGLE / "CT_small.dcm")).array)


def test_fill_value_option():
    v, rep = ichkit.io.read_dicom(str(TS_DIR / "CT1_J2KR"), fill_hu=-1000.0)
    stored = pydicom.dcmread(str(TS_DIR / "CT1_J2KR")).pixel_array.T
    assert rep["padding_voxels"] == 55772
    np.testing.assert_array_equal(v.array[:, :, 0][stored == -2000], -1000.0)
