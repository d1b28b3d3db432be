#!/usr/bin/env python3
"""Regenerate tests/data/malformed/dicom: small DICOM series (folders of 32x32 int16 slices) or
single files, each broken in one way, and expected.csv naming what reading each must do.

expected.csv columns: case, exception, what
  exception is the C++ class name of the error ichkit.io.read_dicom(case) must raise
  (FormatError, GeometryError, IoError, InvalidArgument, ResourceError; the Python tests map it
  to the Python exception), or
  - ``skipped``: the read succeeds and report["files_skipped"] >= 1 (the junk is skipped with a
    warning),
  - ``split``: one SeriesInstanceUID whose images disagree (matrix size or orientation):
    list_series gives >= 2 entries for the UID and read_dicom(case) succeeds on the larger part
    (4 images; the other part has 2) with a warning.

Every file is deterministic (UIDs derived from the case name, no timestamps), so re-running
rewrites identical bytes. Run with Debian's /usr/bin/python3 (numpy, pydicom).

Note: git does not keep empty folders; the tests create ``empty_folder`` when it is missing.
"""
import csv
import os
import shutil
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from phantom_to_dicom import uid_from, write_ct_series  # noqa: E402

OUT = os.path.normpath(os.path.join(HERE, "..", "tests", "data", "malformed", "dicom"))
N = 32          # matrix size
SPACING = 0.7   # mm in-plane
DZ = 5.0        # mm between slices


def base_volume(n=N, nk=4, seed=0):
    """A small head-like int16 HU volume: air, a skull ring, brain, deterministic noise."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(n) - (n - 1) / 2, np.arange(n) - (n - 1) / 2, indexing="ij")
    r = np.hypot(x, y) / (n / 2)
    sl = np.where(r < 0.75, 35.0, -1000.0)
    sl = np.where((r >= 0.75) & (r < 0.9), 1200.0, sl)
    vol = np.stack([sl + 10 * k for k in range(nk)], axis=2)
    return np.rint(vol + rng.normal(0, 3, vol.shape))


def lps_affine(n_spacing=SPACING, dz=DZ, z0=0.0):
    """RAS affine of a standard axial LPS series: i -> patient left, j -> posterior, k -> superior."""
    a = np.diag([-n_spacing, -n_spacing, dz, 1.0])
    a[:3, 3] = [n_spacing * (N - 1) / 2, n_spacing * (N - 1) / 2, z0]
    return a


def series(folder, case, nk=4, n=N, z0=0.0, uid=None, affine=None, **kw):
    """Write a valid series; returns the file paths sorted by k."""
    uid = uid or uid_from("ichkit-malformed", case)
    aff = lps_affine(z0=z0) if affine is None else affine
    vol = base_volume(n, nk)
    files = write_ct_series(folder, vol, aff, series_uid=uid, description=case, **kw)
    return [p for _, p in files]


def edit(path, fn):
    """Load, change with fn(ds), save without fixing anything up."""
    ds = pydicom.dcmread(path)
    fn(ds)
    ds.save_as(path, write_like_original=True)


def raw_replace(path, tag, vr, value_bytes):
    """Replace one element's value by raw bytes (to write values pydicom would refuse)."""
    ds = pydicom.dcmread(path)
    if len(value_bytes) % 2:
        value_bytes += b" "
    ds[tag] = pydicom.dataelem.RawDataElement(pydicom.tag.Tag(tag), vr, len(value_bytes), value_bytes, 0, False, True)
    ds.save_as(path, write_like_original=True)


def meta(sop_class, sop_uid, ts=ExplicitVRLittleEndian):
    m = FileMetaDataset()
    m.MediaStorageSOPClassUID = sop_class
    m.MediaStorageSOPInstanceUID = sop_uid
    m.TransferSyntaxUID = ts
    m.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return m


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    cases = []

    def add(case, exc, what):
        assert os.path.exists(os.path.join(OUT, case)), case
        cases.append((case, exc, what))

    def folder(case):
        p = os.path.join(OUT, case)
        os.makedirs(p, exist_ok=True)
        return p

    # --- geometry -------------------------------------------------------------------------
    c = "missing_ipp"
    for f in series(folder(c), c):
        edit(f, lambda ds: delattr(ds, "ImagePositionPatient"))
    add(c, "GeometryError", "no ImagePositionPatient in any slice")

    c = "missing_iop"
    for f in series(folder(c), c):
        edit(f, lambda ds: delattr(ds, "ImageOrientationPatient"))
    add(c, "GeometryError", "no ImageOrientationPatient in any slice")

    c = "zero_pixel_spacing"
    for f in series(folder(c), c):
        edit(f, lambda ds: setattr(ds, "PixelSpacing", ["0", "0.7"]))
    add(c, "GeometryError", "PixelSpacing 0\\0.7")

    c = "negative_pixel_spacing"
    for f in series(folder(c), c):
        edit(f, lambda ds: setattr(ds, "PixelSpacing", ["-0.7", "0.7"]))
    add(c, "GeometryError", "PixelSpacing -0.7\\0.7")

    c = "zero_length_iop"
    for f in series(folder(c), c):
        edit(f, lambda ds: setattr(ds, "ImageOrientationPatient", ["0", "0", "0", "0", "1", "0"]))
    add(c, "GeometryError", "row cosine of ImageOrientationPatient is 0\\0\\0")

    c = "non_orthogonal_iop"
    for f in series(folder(c), c):
        edit(f, lambda ds: setattr(ds, "ImageOrientationPatient",
                                   ["1", "0", "0", "0.70710678", "0.70710678", "0"]))
    add(c, "GeometryError", "row and column cosines 45 degrees apart")

    c = "nan_ipp"
    for f in series(folder(c), c):
        raw_replace(f, 0x00200032, "DS", b"NaN\\NaN\\NaN")
    add(c, "GeometryError", "ImagePositionPatient NaN\\NaN\\NaN")

    c = "garbage_ipp"
    for f in series(folder(c), c):
        raw_replace(f, 0x00200032, "DS", b"abc\\1.0\\x7")
    add(c, "GeometryError", "ImagePositionPatient 'abc\\1.0\\x7' (not numbers)")

    c = "ipp_two_values"
    for f in series(folder(c), c):
        raw_replace(f, 0x00200032, "DS", b"-10.5\\-10.5")
    add(c, "GeometryError", "ImagePositionPatient with 2 values")

    c = "all_same_position"
    for f in series(folder(c), c):
        edit(f, lambda ds: setattr(ds, "ImagePositionPatient", ["-10.85", "-10.85", "0"]))
    add(c, "GeometryError", "4 slices (distinct SOPInstanceUIDs) at one position: 1 left after duplicates")

    # --- series that must be split --------------------------------------------------------
    c = "mixed_matrix_sizes"
    uid = uid_from("ichkit-malformed", c)
    d = folder(c)
    series(d, c, nk=4, uid=uid)
    small = write_ct_series(os.path.join(d, "small"), base_volume(24, 2), lps_affine(z0=40.0), series_uid=uid,
                            description=c)
    # same UID, other SOPInstanceUIDs than the 32x32 part
    for i, (_, p) in enumerate(small):
        edit(p, lambda ds, i=i: setattr(ds, "SOPInstanceUID", uid_from(c, "small", i)))
    add(c, "split", "one SeriesInstanceUID: 4 slices 32x32 + 2 slices 24x24 (read: the 4)")

    c = "inconsistent_orientation"
    uid = uid_from("ichkit-malformed", c)
    d = folder(c)
    series(d, c, nk=4, uid=uid)
    t = np.radians(10.0)
    rot = lps_affine(z0=40.0)
    rot[:3, 1] = SPACING * np.array([0.0, -np.cos(t), -np.sin(t)])  # column cosine tilted 10 degrees
    other = write_ct_series(os.path.join(d, "tilted"), base_volume(N, 2), rot, series_uid=uid, description=c)
    for i, (_, p) in enumerate(other):
        edit(p, lambda ds, i=i: setattr(ds, "SOPInstanceUID", uid_from(c, "tilted", i)))
    add(c, "split", "one SeriesInstanceUID: 4 axial slices + 2 with the IOP 10 degrees off (read: the 4)")

    # --- pixel data -----------------------------------------------------------------------
    c = "truncated_pixel_data"
    files = series(folder(c), c)
    with open(files[2], "rb") as fh:
        b = fh.read()
    with open(files[2], "wb") as fh:
        fh.write(b[: len(b) - N * N])  # half of the 2048 pixel bytes missing
    add(c, "FormatError", "third slice of 4 cut in the middle of its PixelData")

    c = "truncated_single.dcm"
    tmp = series(os.path.join(OUT, "_tmp"), c, nk=1)[0]
    with open(tmp, "rb") as fh:
        b = fh.read()
    with open(os.path.join(OUT, c), "wb") as fh:
        fh.write(b[: len(b) - 100])
    shutil.rmtree(os.path.join(OUT, "_tmp"))
    add(c, "FormatError", "single file, last 100 bytes of PixelData missing")

    # --- hostile lengths: GDCM would allocate what a data element declares before reading it
    def one_file(c, what, prepare, patch):
        """One slice, changed with prepare(ds) (pydicom), then patch(bytearray) -> its bytes."""
        tmp = series(os.path.join(OUT, "_tmp"), c, nk=1)[0]
        if prepare:
            edit(tmp, prepare)
        with open(tmp, "rb") as fh:
            b = patch(bytearray(fh.read()))
        with open(os.path.join(OUT, c), "wb") as fh:
            fh.write(b)
        shutil.rmtree(os.path.join(OUT, "_tmp"))
        add(c, "FormatError", what)

    def length_bomb(c, marker, what, prepare=None):
        """One slice whose 4-byte length after `marker` (tag, VR, 2 reserved bytes) says 2 GiB."""
        def patch(b):
            at = b.rfind(marker)
            assert at > 0
            b[at + 8:at + 12] = (0x7FFFFFF0).to_bytes(4, "little")
            return b
        one_file(c, what, prepare, patch)

    def with_content_sequence(ds):
        item = Dataset()
        item.TextValue = "x" * 8
        ds.ContentSequence = [item]

    length_bomb("pixel_length_bomb.dcm", b"\xe0\x7f\x10\x00OW\x00\x00",  # (7FE0,0010) OW
                "PixelData declares 2 GiB in a 3 kB file (refused before allocation)")
    length_bomb("sequence_length_bomb.dcm", b"\x40\x00\x60\xa1UT\x00\x00",  # (0040,A160) UT in the item
                "an element inside a sequence item declares 2 GiB (refused before allocation)", with_content_sequence)

    c = "pixel_length_mismatch"
    for f in series(folder(c), c):
        edit(f, lambda ds: setattr(ds, "PixelData", ds.PixelData[: N * N * 2 - 200]))
    add(c, "FormatError", "PixelData element complete but 200 bytes shorter than Rows*Columns*2")

    c = "rows_zero"
    for f in series(folder(c), c):
        edit(f, lambda ds: setattr(ds, "Rows", 0))
    add(c, "FormatError", "Rows = 0")

    c = "bits_allocated_12"

    def pack12(ds):
        v = np.frombuffer(ds.PixelData, "<i2").astype(np.int32) + 1024
        v = np.clip(v, 0, 4095).astype(np.uint16)
        a, b_ = v[0::2], v[1::2]
        packed = np.stack([(a & 0xFF), ((a >> 8) | ((b_ & 0x0F) << 4)), (b_ >> 4)], axis=1).astype(np.uint8)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 12, 11, 0
        ds.PixelData = packed.tobytes()
        ds.RescaleIntercept = "-1024"
    for f in series(folder(c), c):
        edit(f, pack12)
    add(c, "FormatError", "BitsAllocated 12 (packed 12-bit pixels) is not supported")

    c = "iop_wrong_vr"

    def iop_as_lo(ds):  # the same six numbers, but as LO: GDCM's image reader asserts on it
        iop = "\\".join(str(float(x)) for x in ds.ImageOrientationPatient)
        del ds[0x00200037]
        ds.add_new(0x00200037, "LO", iop)
    for f in series(folder(c), c):
        edit(f, iop_as_lo)
    add(c, "FormatError", "ImageOrientationPatient stored with VR LO instead of DS (found by fuzz_dicom)")

    c = "recognition_code_not_acr_nema"

    def recognition_code(ds):  # retired ACR-NEMA mark; GDCM's image reader asserts on any other value
        ds.add_new(0x00080010, "SH", "CT01_OC0")
    for f in series(folder(c), c):
        edit(f, recognition_code)
    add(c, "FormatError", "Recognition Code (0008,0010) 'CT01_OC0', not ACR-NEMA (found by fuzz_dicom_folder)")

    # the last element is a sequence of undefined length whose undefined-length item ends with
    # the file, without its item delimiter: GDCM asserts (found by fuzz_dicom_folder)
    one_file("item_without_delimiter.dcm",
             "an undefined-length item that ends with the file, without its delimiter (found by fuzz_dicom_folder)",
             lambda ds: delattr(ds, "PixelData"),
             lambda b: b + (b"\x40\x00\x30\xa7SQ\x00\x00\xff\xff\xff\xff"  # (0040,A730) SQ, undefined length
                            b"\xfe\xff\x00\xe0\xff\xff\xff\xff"              # item, undefined length
                            b"\x40\x00\x60\xa1UT\x00\x00\x04\x00\x00\x00abcd"))  # (0040,A160) UT, then the file ends

    # (7FE0,0010) with VR SQ, undefined length, one empty item: GDCM asserts (found by fuzz_dicom)
    one_file("pixel_data_as_sequence.dcm", "Pixel Data stored as a sequence (VR SQ) (found by fuzz_dicom)",
             lambda ds: delattr(ds, "PixelData"),
             lambda b: b + (b"\xe0\x7f\x10\x00SQ\x00\x00\xff\xff\xff\xff"  # (7FE0,0010) SQ, undefined length
                            b"\xfe\xff\x00\xe0\x00\x00\x00\x00"              # an empty item
                            b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"))            # sequence delimiter

    c = "rescale_slope_zero"
    for f in series(folder(c), c):
        edit(f, lambda ds: setattr(ds, "RescaleSlope", "0"))
    add(c, "FormatError", "RescaleSlope 0")

    c = "rgb_ct"

    def to_rgb(ds):
        v = np.frombuffer(ds.PixelData, "<i2").astype(np.int32)
        g = np.clip((v + 1024) // 16, 0, 255).astype(np.uint8)
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = np.repeat(g, 3).tobytes()
        ds["PixelData"].VR = "OB"
    for f in series(folder(c), c):
        edit(f, to_rgb)
    add(c, "FormatError", "CT slices stored as RGB (SamplesPerPixel 3): not grayscale")

    # --- transfer syntaxes ----------------------------------------------------------------
    def encapsulate(ts):
        def fn(ds):
            frag = b"\x00\x00\x01\xb3" + bytes(range(256)) * 4  # looks like an MPEG start code, then junk
            ds.file_meta.TransferSyntaxUID = ts
            ds.PixelData = pydicom.encaps.encapsulate([frag])
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
        return fn

    c = "unsupported_ts_mpeg2"
    for f in series(folder(c), c):
        edit(f, encapsulate("1.2.840.10008.1.2.4.100"))
    add(c, "FormatError", "transfer syntax 1.2.840.10008.1.2.4.100 (MPEG2 video)")

    c = "unknown_ts"
    for f in series(folder(c), c):
        edit(f, encapsulate("1.2.3.4.5.6.7.8.9"))
    add(c, "FormatError", "made-up transfer syntax UID 1.2.3.4.5.6.7.8.9, encapsulated pixel data")

    # the pixel data's sequence delimiter (FFFE,E0DD) declares 2 GiB: GDCM allocates it (found
    # by fuzz_dicom); a delimiter's length must be 0
    def delimiter_bomb(b):
        at = b.rfind(b"\xfe\xff\xdd\xe0")
        assert at > 0 and b[at + 4:at + 8] == bytes(4)
        b[at + 4:at + 8] = (0x7FFFFFF0).to_bytes(4, "little")
        return b
    one_file("fragment_delimiter_length_bomb.dcm",
             "the encapsulated pixel data's sequence delimiter declares 2 GiB (found by fuzz_dicom)",
             encapsulate("1.2.840.10008.1.2.4.100"), delimiter_bomb)

    # --- folders without a usable image series --------------------------------------------
    c = "empty_folder"
    folder(c)
    add(c, "FormatError", "empty folder (git drops it: the tests create it)")

    c = "only_non_dicom"
    d = folder(c)
    with open(os.path.join(d, "README.txt"), "w") as fh:
        fh.write("These are not the images you are looking for.\n" * 5)
    with open(os.path.join(d, "image.png"), "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + bytes(200))
    with open(os.path.join(d, "IM0001"), "wb") as fh:  # DICOM-like name, random bytes
        fh.write(np.random.default_rng(1).integers(0, 256, 600, dtype=np.uint8).tobytes())
    open(os.path.join(d, "empty.dcm"), "wb").close()
    add(c, "FormatError", "a text file, a PNG, random bytes and an empty .dcm: no DICOM at all")

    c = "non_image_dicom"
    d = folder(c)
    for i in range(2):
        sop = uid_from(c, i)
        ds = FileDataset(os.path.join(d, f"SR{i}.dcm"), {}, file_meta=meta("1.2.840.10008.5.1.4.1.1.88.11", sop),
                         preamble=b"\0" * 128)
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
        ds.SOPInstanceUID = sop
        ds.Modality = "SR"
        ds.PatientName, ds.PatientID = "Phantom^ichkit", "PHANTOM"
        ds.StudyInstanceUID = uid_from(c, "study")
        ds.SeriesInstanceUID = uid_from(c, "series")
        ds.InstanceNumber = i + 1
        ds.ValueType = "CONTAINER"
        ds.ContinuityOfContent = "SEPARATE"
        item = Dataset()
        item.RelationshipType, item.ValueType, item.TextValue = "CONTAINS", "TEXT", "No hemorrhage."
        ds.ContentSequence = [item]
        ds.save_as(os.path.join(d, f"SR{i}.dcm"), write_like_original=False)
    add(c, "FormatError", "two Basic Text SR documents (DICOM, no PixelData)")

    c = "dicm_then_garbage"
    d = folder(c)
    with open(os.path.join(d, "IM0001.dcm"), "wb") as fh:
        fh.write(b"\0" * 128 + b"DICM" + np.random.default_rng(2).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    add(c, "FormatError", "one file: 128-byte preamble, 'DICM', then 2000 random bytes")

    c = "non_dicom_mixed"
    d = folder(c)
    series(d, c)
    with open(os.path.join(d, "notes.txt"), "w") as fh:
        fh.write("scanned on the old machine\n")
    with open(os.path.join(d, "Thumbs.db"), "wb") as fh:
        fh.write(np.random.default_rng(3).integers(0, 256, 300, dtype=np.uint8).tobytes())
    open(os.path.join(d, "IM9999"), "wb").close()
    sr = pydicom.dcmread(os.path.join(OUT, "non_image_dicom", "SR0.dcm"))
    sr.save_as(os.path.join(d, "report.dcm"), write_like_original=True)
    add(c, "skipped", "valid 4-slice series + a text file, random bytes, an empty file and an SR document")

    with open(os.path.join(OUT, "expected.csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case", "exception", "what"])
        w.writerows(cases)
    big = [(r, f, os.path.getsize(os.path.join(r, f))) for r, _, fs in os.walk(OUT) for f in fs]
    total = {}
    for r, f, s in big:
        top = os.path.relpath(os.path.join(r, f), OUT).split(os.sep)[0]
        total[top] = total.get(top, 0) + s
    over = {k: v for k, v in total.items() if v >= 50_000}
    assert not over, over
    print(f"wrote {len(cases)} malformed DICOM cases to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
