#!/usr/bin/env python3
"""Regenerate tests/data/malformed/nifti: small NIfTI files each broken in one way, and
expected.csv naming the exception each must raise (C++ class name; the Python tests map it
to the Python exception). Run with Debian's /usr/bin/python3 (needs numpy and nibabel)."""
import csv
import gzip
import os
import struct
import sys
import zlib

import nibabel as nib
import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "malformed", "nifti")


def base_n1(shape=(4, 5, 6), dtype=np.int16):
    data = (np.arange(np.prod(shape)) % 300 - 100).astype(dtype).reshape(shape)
    img = nib.Nifti1Image(data, np.diag([0.5, 0.5, 5.0, 1.0]))
    img.header.set_qform(img.affine, code=1)
    img.header.set_sform(img.affine, code=1)
    return bytearray(img.to_bytes())


def base_n2():
    data = np.zeros((4, 5, 6), np.int16)
    img = nib.Nifti2Image(data, np.eye(4))
    return bytearray(img.to_bytes())


def put(b, off, fmt, *vals):
    struct.pack_into("<" + fmt, b, off, *vals)
    return b


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    cases = []

    def add(name, content, exc, why, gz=False):
        path = os.path.join(OUT, name)
        data = bytes(content)
        if gz:
            data = gzip.compress(data, compresslevel=6, mtime=0)
        with open(path, "wb") as fh:
            fh.write(data)
        cases.append((name, exc, why))

    b = base_n1()
    add("empty.nii", b"", "FormatError", "zero-length file")
    add("truncated_header.nii", b[:200], "FormatError", "header cut at 200 bytes")
    add("truncated_data.nii", b[:352 + 100], "FormatError", "voxel block cut short")
    gz = gzip.compress(bytes(b), mtime=0)
    add("truncated_gzip.nii.gz", gz[: len(gz) // 2], "FormatError", "gzip stream cut in half", gz=False)
    bad = bytearray(gz)
    for i in range(40, min(len(bad) - 8, 120)):
        bad[i] ^= 0x5A
    add("corrupt_gzip.nii.gz", bad, "FormatError", "deflate stream bytes flipped")
    add("not_nifti.nii", b"this is a text file, not an image\n" * 20, "FormatError", "plain text")
    add("gzip_not_nifti.nii.gz", b"hello world, not NIfTI at all" * 30, "FormatError", "gzip of text", gz=True)
    add("bad_magic.nii", put(base_n1(), 344, "4s", b"xyz\0"), "FormatError", "magic is not n+1")
    add("analyze_no_magic.nii", put(base_n1(), 344, "4s", b"\0\0\0\0"), "FormatError", "ANALYZE 7.5 (no magic)")
    add("pair_magic_ni1.nii", put(base_n1(), 344, "4s", b"ni1\0"), "FormatError", ".hdr/.img pair header")
    add("dim0_zero.nii", put(base_n1(), 40, "h", 0), "FormatError", "dim[0] = 0")
    add("dim0_nine.nii", put(base_n1(), 40, "h", 9), "FormatError", "dim[0] = 9")
    add("dim_negative.nii", put(base_n1(), 42, "h", -4), "FormatError", "dim[1] = -4")
    add("dim_zero.nii", put(base_n1(), 44, "h", 0), "FormatError", "dim[2] = 0")
    add("dims_exceed_file.nii", put(base_n1(), 42, "3h", 400, 400, 60), "FormatError", "dims claim more than the file holds")
    add("dims_over_budget.nii", put(base_n1(), 42, "3h", 32000, 32000, 32000), "ResourceError",
        "dims claim ~65 TB: refused before allocation")
    n2 = base_n2()
    put(n2, 16 + 8, "3q", 2**40, 2**40, 2**40)
    add("dims_overflow_n2.nii", n2, "FormatError", "NIfTI-2 dims whose product overflows 64 bits")
    add("four_d.nii", put(put(base_n1(), 40, "h", 4), 48, "h", 3), "FormatError", "4D with 3 volumes")
    add("unknown_datatype.nii", put(base_n1(), 70, "h", 9999), "FormatError", "datatype 9999")
    add("complex_datatype.nii", put(put(base_n1(), 70, "h", 32), 72, "h", 64), "FormatError", "complex64 not supported")
    add("bitpix_mismatch.nii", put(base_n1(), 72, "h", 32), "FormatError", "bitpix 32 for int16")
    add("vox_offset_small.nii", put(base_n1(), 108, "f", 100.0), "FormatError", "vox_offset inside the header")
    add("vox_offset_nan.nii", put(base_n1(), 108, "f", float("nan")), "FormatError", "vox_offset NaN")
    add("vox_offset_fraction.nii", put(base_n1(), 108, "f", 352.5), "FormatError", "vox_offset not whole")
    add("vox_offset_past_end.nii", put(base_n1(), 108, "f", 1.0e6), "FormatError", "vox_offset past the end")
    add("slope_inf.nii", put(base_n1(), 112, "f", float("inf")), "FormatError", "scl_slope infinite")
    add("inter_nan.nii", put(put(base_n1(), 112, "f", 2.0), 116, "f", float("nan")), "FormatError",
        "valid slope, NaN intercept")
    add("slope_zero_with_inter.nii", put(put(base_n1(), 112, "f", 0.0), 116, "f", -1024.0), "FormatError",
        "slope 0 (no scaling) but intercept -1024")
    add("slope_nan_with_inter.nii", put(put(base_n1(), 112, "f", float("nan")), 116, "f", 5.0), "FormatError",
        "slope NaN (no scaling) but intercept 5")
    add("sform_nan.nii", put(base_n1(), 280, "f", float("nan")), "GeometryError", "NaN in srow_x")
    add("sform_singular.nii", put(base_n1(), 280, "12f", *([0.0] * 12)), "GeometryError", "all-zero sform")
    q = put(put(base_n1(), 254, "h", 0), 80, "f", 0.0)  # qform only, pixdim[1] = 0
    add("qform_zero_pixdim.nii", q, "GeometryError", "qform-only with pixdim[1] = 0")
    q = put(put(base_n1(), 254, "h", 0), 256, "3f", 0.9, 0.9, 0.9)
    add("qform_bad_quaternion.nii", q, "FormatError", "quaternion b^2+c^2+d^2 > 1")
    n2 = base_n2()
    n2[4:12] = b"n+2\0abcd"
    add("n2_bad_magic.nii", n2, "FormatError", "NIfTI-2 magic corrupted")
    add("sizeof_hdr_wrong.nii", put(base_n1(), 0, "i", 1234), "FormatError", "sizeof_hdr 1234")
    add("truncated_data.nii.gz", bytes(b[:352 + 60]), "FormatError", "gzip of a truncated file", gz=True)
    with open(os.path.join(OUT, "expected.csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "exception", "what"])
        w.writerows(cases)
    print(f"wrote {len(cases)} malformed files to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    sys.exit(main())
