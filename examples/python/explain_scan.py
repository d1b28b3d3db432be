"""Read -> predict -> explain, the Python twin of examples/cpp/explain_scan.cpp:
    python explain_scan.py MODEL SCAN OUT_DIR
SCAN is a NIfTI file or a DICOM folder. Writes OUT_DIR/<head>_heatmap.nii.gz (on the scan's grid:
it overlays the scan in any viewer) and OUT_DIR/<head>_ortho.png; prints the predictions."""
import sys
from pathlib import Path

import ichkit


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    model = ichkit.model.Model.load(argv[1])
    scan = ichkit.read(argv[2])  # HU, with its affine
    heads = [h["name"] for h in model.config["heads"] if h["type"] != "segmentation"]
    e = ichkit.explain.explain(model, scan, heads)  # one forward pass for all maps
    out = Path(argv[3])
    out.mkdir(parents=True, exist_ok=True)
    for name, p in e.prediction.items():
        if "classes" in p:
            print(f"{name}: {p['classes'][int(p['value'])]} (p = {max(p['probabilities']):.6f})")
        else:
            print(f"{name}: {p['value']:.6f}")
    for h in e.maps:
        ichkit.write_nifti(h.normalized, str(out / f"{h.head}_heatmap.nii.gz"))
        ichkit.explain.save_overlay(out / f"{h.head}_ortho.png", scan, h)
        print(f"{h.head} heatmap peak at {tuple(round(v, 2) for v in h.peak_world)} mm -> {out / (h.head + '_heatmap.nii.gz')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
