#!/usr/bin/env python3
"""The Python peers of the image IO benchmark (benchmarks/run.py --suite io): nibabel and
pydicom + numpy on the very files bench_io reads, in a process of their own that does not
import ichkit - ichkit's runtime set-up (its heap retention) would otherwise speed them up
(pydicom's series read: 322 ms stock, 48 ms beside ichkit on the 2-core VM).

    python benchmarks/io_peers.py --dir TMP --ge DIR --jpeg DIR --scan DIR [--repeats 7] --out peers.json

TMP holds ct.nii and ct.nii.gz (nibabel's own files, written by run.py).
"""
import argparse
import glob
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

from timing import timeit  # benchmarks/, this script's folder (standard library only)


def pydicom_series(folder):
    """What a researcher writes: dcmread every file, sort along the slice normal, rescale, stack."""
    dss = [pydicom.dcmread(f) for f in sorted(glob.glob(os.path.join(folder, "*.dcm")))]
    iop = np.array(dss[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    dss.sort(key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, dtype=float), normal)))
    return np.stack([d.pixel_array.astype(np.float32) * np.float32(d.RescaleSlope) + np.float32(d.RescaleIntercept)
                     for d in dss], axis=-1)


def pydicom_scan(folder):
    """Headers only, every file of a folder tree."""
    out = []
    for root, _, files in os.walk(folder):
        for f in files:
            ds = pydicom.dcmread(os.path.join(root, f), stop_before_pixels=True)
            out.append((ds.SeriesInstanceUID, ds.ImagePositionPatient))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--ge", required=True, help="the GE series as stored")
    ap.add_argument("--jpeg", required=True, help="the GE series re-encoded as JPEG lossless")
    ap.add_argument("--scan", required=True, help="the folder tree of the header scan")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    tmp = Path(args.dir)
    ref = nib.load(str(tmp / "ct.nii"))
    hu, aff = np.asanyarray(ref.dataobj), ref.affine
    r = {}
    for ext, key in ((".nii", "nii"), (".nii.gz", "nii_gz")):
        p = str(tmp / ("ct" + ext))
        r[f"read_{key}"] = timeit(lambda: nib.load(p).get_fdata(dtype=np.float32), args.repeats)
        outp = str(tmp / ("peer-out" + ext))
        r[f"write_{key}"] = timeit(lambda: nib.save(nib.Nifti1Image(hu, aff), outp), args.repeats)
    for name, folder in (("uncompressed", args.ge), ("jpeg_lossless", args.jpeg)):
        r[f"dicom_{name}"] = timeit(lambda: pydicom_series(folder), args.repeats)
    r["dicom_scan"] = timeit(lambda: pydicom_scan(args.scan), max(3, args.repeats // 2))
    r["versions"] = {"nibabel": nib.__version__, "pydicom": pydicom.__version__, "numpy": np.__version__}
    Path(args.out).write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()
