#!/usr/bin/env python3
"""Write a volume (nibabel-style RAS affine) as a DICOM CT series, one file per k-slice.

Used by tests/python/test_dicom.py (imported by path), scripts/make_malformed_dicom.py and the
benchmarks. Needs numpy and pydicom (Debian: python3-numpy, python3-pydicom).

Conventions (the ones nibabel and ichkit use):
  * ``hu[i, j, k]``: i is the DICOM column index, j the DICOM row index, k the slice; so the
    pixel array of slice k is ``hu[:, :, k].T`` (Rows = nj, Columns = ni).
  * ``affine_ras`` maps (i, j, k, 1) to RAS+ mm. DICOM patient coordinates are LPS, so
    ``M = diag(-1, -1, 1) @ affine_ras[:3]`` gives, per slice k:
      - ImageOrientationPatient = [unit(M[:, 0]), unit(M[:, 1])]  (row cosine = direction of
        increasing column index i, column cosine = direction of increasing row index j)
      - PixelSpacing = [|M[:, 1]| (between rows), |M[:, 0]| (between columns)]
      - ImagePositionPatient = M[:, 3] + k * M[:, 2]
  * The slice plane is spanned by affine columns 0 and 1 (they must be orthogonal); column 2
    is the stacking vector and may be oblique to the plane (gantry tilt: a sheared affine such
    as column 1 = sj*(0, cos t, sin t), column 2 = (0, 0, sk) in RAS).
    SliceThickness = spacing along the slice normal = |column 2 . normal|, and
    GantryDetectorTilt = the angle between the normal and the stacking vector, signed like GE
    scanners write it (positive for the normal leaning posterior as it goes superior).

Files are explicit VR little endian, uncompressed, CT Image Storage. UIDs are derived from
``series_uid`` so that the same call writes byte-identical files.

Command line (writes a phantom from ichkit, when it is installed):
    phantom_to_dicom.py OUT_DIR [--shape 128 128 16] [--spacing 1.6 1.6 5] [--tilt 15] [--seed 1]
"""
import argparse
import hashlib
import os
import sys

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
LPS = np.diag([-1.0, -1.0, 1.0])

__all__ = ["write_ct_series", "series_geometry", "ds_str", "uid_from"]


def uid_from(*parts):
    """A deterministic, valid UID (2.25.<128-bit decimal>) derived from the given values."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return UID(f"2.25.{int.from_bytes(h[:16], 'big')}")


def ds_str(x):
    """A decimal string of at most 16 characters with as many digits as fit (DICOM DS)."""
    x = float(x)
    if not np.isfinite(x):
        raise ValueError(f"cannot write {x} as a DICOM decimal string")
    if abs(x) < 1e-12:
        return "0"
    for prec in range(15, 0, -1):
        s = f"{x:.{prec}g}"
        if "e" in s:  # DS allows exponents, but keep plain decimals where they fit
            s2 = f"{x:.{max(prec - 1, 0)}f}".rstrip("0").rstrip(".")
            if len(s2) <= 16 and float(s2) != 0:
                s = s2
        if len(s) <= 16:
            return s
    raise ValueError(f"cannot fit {x} in 16 characters")


def series_geometry(affine_ras):
    """The DICOM geometry of the slices of a volume with the given RAS affine.

    Returns a dict: row_cosine, col_cosine, normal (LPS unit vectors), col_spacing (between
    columns = |affine[:, 0]|), row_spacing (between rows = |affine[:, 1]|), origin_lps,
    step_lps (the stacking vector in LPS), slice_spacing (along the normal), tilt_deg.
    """
    a = np.asarray(affine_ras, dtype=np.float64)
    if a.shape != (4, 4):
        raise ValueError("affine must be 4x4")
    m = LPS @ a[:3, :]
    ci, cj, ck, origin = m[:, 0], m[:, 1], m[:, 2], m[:, 3]
    si, sj = np.linalg.norm(ci), np.linalg.norm(cj)
    if si <= 0 or sj <= 0:
        raise ValueError("affine columns 0 and 1 must be non-zero")
    row, col = ci / si, cj / sj
    if abs(row @ col) > 1e-6:
        raise ValueError("the slice plane (affine columns 0 and 1) must be orthogonal for DICOM")
    normal = np.cross(row, col)
    dn = float(ck @ normal)
    if abs(dn) < 1e-9 * max(np.linalg.norm(ck), 1.0):
        raise ValueError("the stacking vector lies in the slice plane")
    cosang = min(1.0, abs(dn) / np.linalg.norm(ck))
    tilt = float(np.degrees(np.arccos(cosang)))
    # sign: positive when the normal (oriented along the stacking vector) leans towards the
    # stacking vector by a right-handed turn about LPS +x, as GE writes it (the slice normal
    # leaning posterior as it goes superior: column cosine with a negative LPS z component).
    n_along = normal if dn > 0 else -normal
    if np.cross(n_along, ck)[0] < 0:
        tilt = -tilt
    return {
        "row_cosine": row,
        "col_cosine": col,
        "normal": normal,
        "col_spacing": float(si),
        "row_spacing": float(sj),
        "origin_lps": origin,
        "step_lps": ck,
        "slice_spacing": abs(dn),
        "tilt_deg": tilt,
    }


def _base_dataset(path, sop_instance_uid):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    return ds


def write_ct_series(out_dir, hu, affine_ras, *, series_uid, shuffle_seed=None, drop_slices=(), duplicate_slices=(),
                    int16=True, rescale=(1.0, -1024.0), description="phantom", extra=None):
    """Write ``hu`` (ni, nj, nk) as one DICOM file per k-slice into ``out_dir`` (created).

    ``rescale`` = (RescaleSlope, RescaleIntercept): stored = round((hu - intercept) / slope),
    clipped to int16 (``int16=True``, PixelRepresentation 1) or uint16. ``shuffle_seed``: random
    file names and a random permutation of InstanceNumber (else ``slice_0000.dcm``... and
    InstanceNumber k + 1). ``drop_slices``: k values not written. ``duplicate_slices``: k values
    written twice (same position and pixels, another SOPInstanceUID, file name and
    InstanceNumber). ``extra``: attributes set on every dataset last (keyword -> value), or a
    callable ``extra(ds, k)``.

    Returns a list of (k, path) in the order written.
    """
    hu = np.asarray(hu, dtype=np.float64)
    if hu.ndim == 2:
        hu = hu[:, :, None]
    if hu.ndim != 3:
        raise ValueError("hu must be (ni, nj, nk)")
    ni, nj, nk = hu.shape
    geo = series_geometry(affine_ras)
    slope, intercept = float(rescale[0]), float(rescale[1])
    if slope == 0:
        raise ValueError("rescale slope must be non-zero")
    drop = {int(k) for k in drop_slices}
    dups = [int(k) for k in duplicate_slices]
    for k in drop | set(dups):
        if not 0 <= k < nk:
            raise ValueError(f"slice {k} out of range")
    if drop & set(dups):
        raise ValueError("a slice cannot be both dropped and duplicated")

    jobs = [(k, False) for k in range(nk) if k not in drop] + [(k, True) for k in dups]
    rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
    if rng is not None:
        numbers = rng.permutation(len(jobs)) + 1
        names = []
        seen = set()
        while len(names) < len(jobs):
            n = "IM" + "".join(rng.choice(list("0123456789ABCDEF"), 10))
            if n not in seen:
                seen.add(n)
                names.append(n)
    else:
        numbers = np.arange(len(jobs)) + 1
        names = [f"slice_{k:04d}{'_dup' if dup else ''}.dcm" for k, dup in jobs]

    study_uid = uid_from(series_uid, "study")
    frame_uid = uid_from(series_uid, "frame-of-reference")
    iop = [ds_str(v) for v in np.concatenate([geo["row_cosine"], geo["col_cosine"]])]
    spacing = [ds_str(geo["row_spacing"]), ds_str(geo["col_spacing"])]
    os.makedirs(out_dir, exist_ok=True)
    if int16:
        lo, hi, dtype = -32768, 32767, np.int16
    else:
        lo, hi, dtype = 0, 65535, np.uint16

    written = []
    for idx, (k, dup) in enumerate(jobs):
        sop = uid_from(series_uid, "image", k, "dup" if dup else "")
        path = os.path.join(out_dir, names[idx])
        ds = _base_dataset(path, sop)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = sop
        ds.StudyDate = "20240101"
        ds.SeriesDate = "20240101"
        ds.StudyTime = "120000"
        ds.Modality = "CT"
        ds.Manufacturer = "ichkit phantom"
        ds.StudyDescription = "ichkit"
        ds.SeriesDescription = description
        ds.PatientName = "Phantom^ichkit"
        ds.PatientID = "PHANTOM"
        ds.PatientPosition = "HFS"
        ds.KVP = "120"
        ds.ConvolutionKernel = "STANDARD"
        ds.SliceThickness = ds_str(geo["slice_spacing"])
        ds.GantryDetectorTilt = ds_str(round(geo["tilt_deg"], 6))
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = int(numbers[idx])
        ipp = geo["origin_lps"] + k * geo["step_lps"]
        ds.ImagePositionPatient = [ds_str(v) for v in ipp]
        ds.ImageOrientationPatient = iop
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = ds_str(float(ipp @ geo["normal"]))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = nj
        ds.Columns = ni
        ds.PixelSpacing = spacing
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if int16 else 0
        ds.WindowCenter = "40"
        ds.WindowWidth = "80"
        ds.RescaleIntercept = ds_str(intercept)
        ds.RescaleSlope = ds_str(slope)
        ds.RescaleType = "HU"
        stored = np.clip(np.rint((hu[:, :, k].T - intercept) / slope), lo, hi).astype(dtype)
        ds.PixelData = np.ascontiguousarray(stored).astype("<" + np.dtype(dtype).str[1:]).tobytes()
        ds["PixelData"].VR = "OW"
        if callable(extra):
            extra(ds, k)
        elif extra:
            for key, value in extra.items():
                setattr(ds, key, value)
        ds.save_as(path, write_like_original=False)
        written.append((k, path))
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--shape", type=int, nargs=3, default=[128, 128, 16])
    ap.add_argument("--spacing", type=float, nargs=3, default=[1.6, 1.6, 5.0])
    ap.add_argument("--tilt", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--shuffle", action="store_true", help="random file names and instance numbers")
    args = ap.parse_args(argv)
    import ichkit  # noqa: PLC0415 - only the command line needs it

    case = ichkit.phantom.make_case(shape=args.shape, spacing=args.spacing, tilt=args.tilt, seed=args.seed)
    img = case["image"]
    uid = uid_from("ichkit-phantom", args.seed, *args.shape, *args.spacing, args.tilt)
    files = write_ct_series(args.out_dir, img.array, img.affine, series_uid=uid,
                            shuffle_seed=args.seed if args.shuffle else None)
    print(f"wrote {len(files)} files to {args.out_dir} (hematoma {case['volume_ml']:.2f} mL)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
