"""NIfTI IO against nibabel: identical arrays and affines, both directions, and typed errors."""
import csv
import gzip
import zlib
import os
import struct

import nibabel as nib
import numpy as np
import pytest

import ichkit

DTYPES = [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64, np.float32, np.float64]
EXC = {
    "FormatError": ichkit.FormatError,
    "GeometryError": ichkit.GeometryError,
    "ResourceError": ichkit.ResourceError,
    "IoError": ichkit.IoError,
}


@pytest.fixture(scope="module")
def phantom_case():
    return ichkit.phantom.make_case(shape=(96, 96, 12), spacing=(2.0, 2.0, 5.0), seed=3, tilt=12.0)


def random_affine(rng, flip=False, shear=False):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if (np.linalg.det(q) < 0) != flip:
        q[:, 0] *= -1
    m = q @ np.diag(rng.uniform(0.3, 5.0, 3))
    if shear:
        m[:, 2] += m[:, 1] * 0.3
    aff = np.eye(4)
    aff[:3, :3] = m
    aff[:3, 3] = rng.uniform(-150, 150, 3)
    return aff


def as_dtype(image, dtype):
    a = image.array
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.round(a), info.min, info.max).astype(dtype)
    return a.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("cls", [nib.Nifti1Image, nib.Nifti2Image], ids=["nifti1", "nifti2"])
@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_nibabel_written_phantoms_read_identically(tmp_path, phantom_case, dtype, cls, ext):
    data = as_dtype(phantom_case["image"], dtype)
    img = cls(data, phantom_case["image"].affine, dtype=dtype)
    p = str(tmp_path / ("x" + ext))
    nib.save(img, p)
    ref = nib.load(p)
    v = ichkit.read_nifti(p, dtype=None)
    assert v.dtype == ref.get_data_dtype()
    np.testing.assert_array_equal(v.array, np.asanyarray(ref.dataobj))
    np.testing.assert_array_equal(v.affine, ref.affine)
    f = ichkit.read_nifti(p, dtype=np.float64)
    np.testing.assert_array_equal(f.array, ref.get_fdata())


@pytest.mark.parametrize("endian", ["<", ">"])
def test_byte_order(tmp_path, endian):
    data = (np.arange(60).reshape(3, 4, 5) - 30).astype(endian + "i2")
    hdr = nib.Nifti1Header(endianness=endian)
    img = nib.Nifti1Image(data, np.diag([0.7, 0.8, 3.0, 1]), header=hdr)
    p = str(tmp_path / "e.nii")
    nib.save(img, p)
    assert nib.load(p).header.endianness == endian
    v = ichkit.read_nifti(p, dtype=None)
    np.testing.assert_array_equal(v.array, data.astype(np.int16))
    np.testing.assert_array_equal(v.affine, nib.load(p).affine)


def test_real_blast_ct_masks(data_dir):
    seg = data_dir / "nifti" / "blast-ct-lesions" / "scan_0_segmentation.nii.gz"
    head = data_dir / "nifti" / "blast-ct-lesions" / "scan_0_sampling_mask.nii.gz"
    for p in (seg, head):
        ref = nib.load(str(p))
        v = ichkit.read_nifti(str(p), dtype=None)
        np.testing.assert_array_equal(v.array, np.asanyarray(ref.dataobj))
        np.testing.assert_array_equal(v.affine, ref.affine)
        np.testing.assert_array_equal(ichkit.read_nifti(str(p), dtype=np.float64).array, ref.get_fdata())
    v = ichkit.read_nifti(str(seg), dtype=None)
    voxel_ml = abs(np.linalg.det(v.affine[:3, :3])) / 1000
    published = {1: 46.45, 2: 22.85, 3: 75.57, 4: 0.59}  # ../shared/data/README.md
    for label, ml in published.items():
        assert np.count_nonzero(v.array == label) * voxel_ml == pytest.approx(ml, abs=0.01)


def _save_with(tmp_path, name, data, qform=None, qcode=0, sform=None, scode=0, slope=None, inter=None):
    img = nib.Nifti1Image(data, None)
    hdr = img.header
    hdr.set_qform(qform, code=qcode)
    hdr.set_sform(sform, code=scode)
    p = str(tmp_path / name)
    nib.Nifti1Image(data, None, header=hdr).to_filename(p)
    if slope is not None:
        # nibabel chooses its own scaling on save: patch scl_slope/scl_inter into the bytes.
        opener = gzip.open if p.endswith(".gz") else open
        with opener(p, "rb") as fh:
            raw = bytearray(fh.read())
        raw[112:120] = struct.pack("<ff", slope, inter)
        with opener(p, "wb") as fh:
            fh.write(bytes(raw))
    return p


@pytest.mark.parametrize("seed", range(6))
def test_qform_only_matches_nibabel(tmp_path, seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(-1000, 1000, size=(6, 7, 8)).astype(np.int16)
    aff = random_affine(rng, flip=bool(seed % 2))
    p = _save_with(tmp_path, "q.nii.gz", data, qform=aff, qcode=1, sform=None, scode=0)
    ref = nib.load(p)
    assert ref.header["sform_code"] == 0 and ref.header["qform_code"] == 1
    v = ichkit.read_nifti(p)
    np.testing.assert_array_equal(v.affine, ref.affine)
    np.testing.assert_allclose(v.affine, aff, atol=1e-4)


@pytest.mark.parametrize("seed", range(4))
def test_sform_only_and_disagreeing(tmp_path, seed):
    rng = np.random.default_rng(100 + seed)
    data = rng.integers(0, 3, size=(5, 6, 7)).astype(np.uint8)
    s_aff = random_affine(rng, shear=True)  # sheared: only an sform can hold it
    q_aff = random_affine(rng)
    p1 = _save_with(tmp_path, "s.nii", data, qform=None, qcode=0, sform=s_aff, scode=2)
    p2 = _save_with(tmp_path, "qs.nii", data, qform=q_aff, qcode=1, sform=s_aff, scode=4)
    for p in (p1, p2):
        ref = nib.load(p)
        v = ichkit.read_nifti(p, dtype=None)
        np.testing.assert_array_equal(v.affine, ref.affine)
        np.testing.assert_array_equal(v.array, np.asanyarray(ref.dataobj))
    h = ichkit.io.read_nifti_header(p2)
    np.testing.assert_array_equal(h["qform"], nib.load(p2).header.get_qform())
    np.testing.assert_array_equal(h["sform"], nib.load(p2).header.get_sform())


def test_no_transform_uses_nibabels_fallback(tmp_path):
    data = np.zeros((5, 6, 7), np.int16)
    img = nib.Nifti1Image(data, None)
    img.header.set_zooms((0.5, 0.75, 2.5))
    img.header.set_qform(None, code=0)
    img.header.set_sform(None, code=0)
    p = str(tmp_path / "none.nii")
    img.to_filename(p)
    ref = nib.load(p)
    np.testing.assert_array_equal(ichkit.read_nifti(p).affine, ref.affine)


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.int32, np.float32])
def test_scaling_matches_get_fdata(tmp_path, dtype):
    rng = np.random.default_rng(5)
    data = rng.integers(0, 120, size=(8, 9, 10)).astype(dtype)
    p = _save_with(tmp_path, "scl.nii.gz", data, sform=np.diag([0.5, 0.5, 5, 1]), scode=1, slope=0.37, inter=-1024.5)
    ref = nib.load(p)
    assert ref.dataobj.slope != 1
    np.testing.assert_array_equal(ichkit.read_nifti(p, dtype=np.float64).array, ref.get_fdata())
    np.testing.assert_array_equal(ichkit.read_nifti(p).array, ref.get_fdata().astype(np.float32))
    raw = ichkit.read_nifti(p, dtype=None)
    np.testing.assert_array_equal(raw.array, ref.dataobj.get_unscaled())


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_ichkit_written_files_read_by_nibabel(tmp_path, phantom_case, dtype, version, ext):
    src = ichkit.Volume(as_dtype(phantom_case["image"], dtype), phantom_case["image"].affine)
    p = str(tmp_path / ("w" + ext))
    ichkit.write_nifti(src, p, version=version)
    ref = nib.load(p)
    assert isinstance(ref, nib.Nifti1Image if version == 1 else nib.Nifti2Image)
    assert ref.get_data_dtype() == np.dtype(dtype)
    np.testing.assert_array_equal(np.asanyarray(ref.dataobj), src.array)
    back = ichkit.read_nifti(p, dtype=None)
    np.testing.assert_array_equal(ref.affine, back.affine)
    np.testing.assert_allclose(ref.affine, src.affine, atol=1e-4 if version == 1 else 1e-12)
    # The sheared (tilted) affine survives: the sform holds it exactly in float32.
    assert ref.header["sform_code"] == 1
    np.testing.assert_array_equal(back.array, src.array)
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]


def test_multi_member_gzip_is_standard(tmp_path, phantom_case):
    v = ichkit.Volume(as_dtype(phantom_case["image"], np.int16), phantom_case["image"].affine)
    p = str(tmp_path / "m.nii.gz")
    ichkit.write_nifti(v, p)
    with gzip.open(p, "rb") as fh:  # Python's gzip reads every member
        raw = fh.read()
    assert len(raw) == 352 + v.array.nbytes


def _gzip_members(raw):
    """The members of a gzip file, each decompressed on its own (zlib checks each CRC-32 and length)."""
    members = []
    while raw:
        d = zlib.decompressobj(wbits=31)
        members.append(d.decompress(raw) + d.flush())
        assert d.eof, "truncated gzip member"
        raw = d.unused_data
    return members


@pytest.mark.parametrize("level", [0, 1, 2, 3, 4, 6, 12])
def test_every_compression_level_round_trips(tmp_path, phantom_case, level):
    # 1-3 go through ISA-L igzip, 0 and 4-12 through libdeflate: both must give standard
    # multi-member gzip that zlib and nibabel read back exactly, for a compressible CT and for
    # incompressible float noise (igzip's output buffer then has to grow while it compresses).
    ct = ichkit.Volume(np.tile(as_dtype(phantom_case["image"], np.int16), (3, 3, 3)), phantom_case["image"].affine)
    noise = ichkit.Volume(np.random.default_rng(level).random((128, 128, 64), dtype=np.float32), np.diag([0.5, 0.5, 2.0, 1.0]))
    for name, v in (("ct", ct), ("noise", noise)):
        p = tmp_path / f"{name}.nii.gz"
        ichkit.write_nifti(v, str(p), compression_level=level)
        members = _gzip_members(p.read_bytes())
        assert len(members) >= 2  # > 1 MiB: compressed in parallel, as independent members
        assert sum(len(m) for m in members) == 352 + v.array.nbytes
        np.testing.assert_array_equal(np.asanyarray(nib.load(str(p)).dataobj), v.array)
        size, raw_size = p.stat().st_size, 352 + v.array.nbytes
        if level == 0:
            assert size > raw_size  # stored blocks
        elif name == "ct":
            assert size < 0.7 * raw_size
        else:
            assert size < 1.01 * raw_size  # noise: no gain, but stored blocks, not blow-up


def test_compression_level_out_of_range(tmp_path, phantom_case):
    v = ichkit.Volume(as_dtype(phantom_case["image"], np.int16), phantom_case["image"].affine)
    for level in (-1, 13):
        with pytest.raises(ichkit.InvalidArgument, match="0..12"):
            ichkit.write_nifti(v, str(tmp_path / "x.nii.gz"), compression_level=level)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_malformed_corpus(data_dir):
    folder = data_dir / "malformed" / "nifti"
    with open(folder / "expected.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) >= 15
    for row in rows:
        with pytest.raises(EXC[row["exception"]]) as info:
            ichkit.read_nifti(str(folder / row["file"]))
        assert row["file"] in str(info.value), "the message names the file"


def test_missing_and_non_files(tmp_path):
    with pytest.raises(ichkit.IoError):
        ichkit.read_nifti(str(tmp_path / "nope.nii"))
    with pytest.raises(OSError):
        ichkit.read_nifti(str(tmp_path))
    with pytest.raises(ichkit.InvalidArgument):
        ichkit.write_nifti(ichkit.Volume(np.zeros((2, 2, 2))), str(tmp_path / "x.png"))


def test_memory_budget(data_dir):
    p = str(data_dir / "nifti" / "blast-ct-lesions" / "scan_0_segmentation.nii.gz")
    with pytest.raises(ichkit.ResourceError):
        ichkit.read_nifti(p, max_bytes=1000)


def test_read_dispatches_by_content(tmp_path):
    v = ichkit.Volume(np.ones((3, 3, 3), np.int16))
    p = tmp_path / "a.nii.gz"
    ichkit.write_nifti(v, str(p))
    os.rename(p, tmp_path / "scan.bin")
    assert ichkit.io.detect_format(str(tmp_path / "scan.bin")) == "nifti"
    assert ichkit.read(str(tmp_path / "scan.bin")).array.dtype == np.float32
    (tmp_path / "t.nii").write_text("hello")
    with pytest.raises(ichkit.FormatError):
        ichkit.read(str(tmp_path / "t.nii"))
