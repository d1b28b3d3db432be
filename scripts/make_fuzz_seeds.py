#!/usr/bin/python3
"""Write the small seed inputs of the fuzz targets into tests/fuzz/seeds/<target>/ (committed;
rerun after a format change). Small seeds keep libFuzzer fast; scripts/fuzz adds the
malformed corpus and small real files from tests/data.

    .venv/bin/python scripts/make_fuzz_seeds.py
"""
import gzip
import json
import pathlib

import nibabel as nib
import numpy as np
import pydicom

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fuzz" / "seeds"
SEP = b"ICHKFUZZ"


def nifti():
    d = OUT / "nifti"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    aff = np.array([[-0.9, 0, 0, 40], [0, 0.9, 0.1, -30], [0, -0.05, 5, -20], [0, 0, 0, 1]])
    a = rng.integers(-1024, 1500, (6, 5, 3)).astype(np.int16)
    img = nib.Nifti1Image(a, aff)
    img.header.set_slope_inter(1.0, -1024.0)
    img.set_qform(aff, 1)
    nib.save(img, d / "int16_slope.nii")
    nib.save(nib.Nifti1Image(rng.standard_normal((4, 4, 2)).astype(np.float32), np.diag([1.0, 1.0, 3.0, 1.0])),
             d / "float32.nii")
    nib.save(nib.Nifti1Image((a > 0).astype(np.uint8), aff), d / "uint8_mask.nii.gz")
    nib.save(nib.Nifti2Image(a.astype(np.float64), aff), d / "nifti2_float64.nii")
    raw = (d / "float32.nii").read_bytes()
    (d / "float32_level9.nii.gz").write_bytes(gzip.compress(raw, 9))


def dicom_folder():
    d = OUT / "dicom_folder"
    d.mkdir(parents=True, exist_ok=True)
    src = pydicom.dcmread(ROOT / "tests" / "data" / "dicom" / "single-slices" / "CT_small.dcm")
    slices = []
    for k in range(3):
        ds = src.copy()
        px = ds.pixel_array[::16, ::16].astype(np.int16)  # 8 x 8
        ds.Rows, ds.Columns = px.shape
        ds.PixelSpacing = [float(ds.PixelSpacing[0]) * 16, float(ds.PixelSpacing[1]) * 16]
        ds.PixelData = px.tobytes()
        ipp = [float(x) for x in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [ipp[0], ipp[1], ipp[2] + 5.0 * k]
        ds.InstanceNumber = k + 1
        ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["ichkit-fuzz", str(k)])
        p = d / f"_slice{k}.dcm"
        ds.save_as(p, write_like_original=False)
        slices.append(p.read_bytes())
        p.unlink()
    (d / "three_slices").write_bytes(SEP.join(slices))
    (d / "two_slices_reversed").write_bytes(SEP.join(slices[::-1][:2]))
    (d / "one_slice").write_bytes(slices[0])
    return slices


def pipeline():
    d = OUT / "pipeline"
    d.mkdir(parents=True, exist_ok=True)
    steps = [
        [{"op": "reorient", "code": "RAS"}, {"op": "resample_to_spacing", "spacing": [2, 2, 5], "interp": "linear"},
         {"op": "center_crop_or_pad", "shape": [16, 16, 4], "fill": -1024}, {"op": "window"}],
        [{"op": "reorient", "code": "LPS"}, {"op": "resample_to_shape", "shape": [8, 8, 4], "interp": "cubic"},
         {"op": "clip", "min": -100, "max": 200}, {"op": "window", "windows": [[40, 80]], "out_min": -1, "out_max": 1}],
        [{"op": "crop_to_foreground", "threshold": -500, "margin_mm": 2}, {"op": "skull_strip", "fill": -1024},
         {"op": "resample_to_spacing", "spacing": [1.5, 1.5, 5], "interp": "nearest"}],
    ]
    for i, s in enumerate(steps):
        (d / f"pipeline{i}.json").write_text(json.dumps({"version": 1, "steps": s}))


def model():
    import ichkit
    d = OUT / "model"
    d.mkdir(parents=True, exist_ok=True)
    cfg = {"encoder": {"depth": 10, "width": 2, "in_channels": 1},
           "heads": [{"name": "volume", "type": "regression", "target": "volume_ml", "params": {"transform": "log1p"}},
                     {"name": "prognosis", "type": "classification", "target": "outcome",
                      "params": {"classes": ["good", "poor"]}}],
           "pipeline": {"version": 1, "steps": [{"op": "resample_to_shape", "shape": [16, 16, 4]},
                                                {"op": "window", "windows": [[40, 80]]}]}}
    (d / "tiny.ichkit").write_bytes(ichkit.model.Model(cfg, seed=0).to_bytes())
    cfg["heads"].append({"name": "seg", "type": "segmentation", "target": "mask", "params": {"channels": 2}})
    cfg["heads"].append({"name": "mrs", "type": "ordinal", "target": "mrs", "params": {"num_classes": 7}})
    (d / "tiny_four_heads.ichkit").write_bytes(ichkit.model.Model(cfg, seed=1).to_bytes())


if __name__ == "__main__":
    nifti()
    dicom_folder()
    pipeline()
    model()
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            print(f"{p.stat().st_size:8d}  {p.relative_to(ROOT)}")
