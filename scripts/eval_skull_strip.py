#!/usr/bin/env python3
"""Skull strip on 20 phantoms (issue 4, must-show 2): brain Dice against the phantom's brain
mask and the share of hematoma voxels kept, for every location incl. lobar bleeds touching the
inner table, IVH, noise and gantry tilt; plus the real GE scan. Then the same on the network's
1 x 1 x 5 mm grid, where a pipeline that resamples first strips (issue 8): the strip of the
resampled scan, cropped to the head, against the native strip and the truth carried to that
grid. Writes docs/results/skull-strip-phantoms.md.
Run: .venv/bin/python scripts/eval_skull_strip.py"""
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

import ichkit

ROOT = Path(__file__).resolve().parents[1]
LOCS = ["lobar", "basal_ganglia", "thalamus", "cerebellum", "brainstem"]
pp = ichkit.preprocess


def on_grid(mask, grid):
    """A 0/1 mask carried onto `grid` (linear, anti-aliased) and cut at 1/2."""
    m = ichkit.Volume(mask.array.astype(np.float32), mask.affine)
    return pp.resample_like(m, grid).array >= 0.5


def coarse(image, native_mask, truth=None):
    """Strip on the 1 x 1 x 5 mm grid as the benchmark's pipeline does (RAS, resample, crop to
    the head + 5 mm, strip); its mask, the native one and the truth masks on that grid."""
    grid = pp.resample_to_spacing(pp.reorient(image, "RAS"), (1.0, 1.0, 5.0), fill=-1024.0)
    t = time.perf_counter()
    head = pp.crop_to_foreground(grid, -500, 5)
    m = pp.skull_strip(head)
    dt = time.perf_counter() - t
    m = pp.resample_like(ichkit.Volume(m.array.astype(np.float32), m.affine), grid, interp="nearest").array > 0.5
    return grid, m, on_grid(native_mask, grid), [on_grid(x, grid) for x in (truth or [])], dt


def main():
    rows, crows = [], []
    for n in range(20):
        loc = LOCS[n % 5] if n % 3 else "lobar"
        case = ichkit.phantom.make_case(seed=100 + n, location=loc, tilt=[0, 15, 18, 20][n % 4],
                                        noise=4 + (n % 4) * 2, ivh=bool(n % 3 == 0))
        t = time.perf_counter()
        m = ichkit.preprocess.skull_strip(case["image"]).array > 0
        dt = time.perf_counter() - t
        brain = case["brain"].array > 0
        hem = case["mask"].array > 0
        hu = case["image"].array
        dice = ichkit.metrics.dice(m, brain)
        kept = np.count_nonzero(m & hem) / max(1, np.count_nonzero(hem))
        kept300 = np.count_nonzero(m & hem & (hu <= 300)) / max(1, np.count_nonzero(hem & (hu <= 300)))
        rows.append((n, case["location"], case["ivh"], [0, 15, 18, 20][n % 4], case["volume_ml"], dice, kept, kept300, dt))
        native = ichkit.Volume(m.astype(np.uint8), case["image"].affine)
        _, mc, mn, (bc, hc), dtc = coarse(case["image"], native, [case["brain"], case["mask"]])
        crows.append((n, case["location"], ichkit.metrics.dice(mn, bc), ichkit.metrics.dice(mc, bc), ichkit.metrics.dice(mc, mn),
                      np.count_nonzero(mn & hc) / max(1, np.count_nonzero(hc)),
                      np.count_nonzero(mc & hc) / max(1, np.count_nonzero(hc)), dtc))
    v, _ = ichkit.io.read_dicom(str(ROOT / "tests" / "data" / "dicom" / "ge-head-tilt"))
    g = ichkit.preprocess.skull_strip(v).array > 0
    ge_ml = np.count_nonzero(g) * abs(np.linalg.det(v.affine[:3, :3])) / 1000
    ge_comp = ndimage.label(g)[1]
    ge_max = float(v.array[g].max())
    _, gc, gn, _, _ = coarse(v, ichkit.Volume(g.astype(np.uint8), v.affine))
    ge_coarse = (ichkit.metrics.dice(gc, gn), np.count_nonzero(gc), np.count_nonzero(gn))
    lines = ["# Skull strip on 20 phantoms and the real GE scan", "",
             "`scripts/eval_skull_strip.py`, default options (opening 5 mm, rim cap 300 HU away from blood; next to a "
             "bleed, rim voxels at least 25 % blood by linear unmixing), 512 x 512 x 32 at "
             "0.45 x 0.45 x 5 mm. Goal: Dice >= 0.97 and >= 99.5 % of hematoma voxels kept.", "",
             "| seed | location | IVH | tilt | hematoma mL | brain Dice | hematoma kept | kept (voxels <= 300 HU) | s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n, loc, ivh, tilt, ml, dice, kept, k300, dt in rows:
        lines.append(f"| {100 + n} | {loc} | {int(ivh)} | {tilt} | {ml:.1f} | {dice:.4f} | {100 * kept:.2f} % | "
                     f"{100 * k300:.2f} % | {dt:.2f} |")
    d = np.array([r[5] for r in rows])
    k = np.array([r[6] for r in rows])
    lines += ["", f"Dice min {d.min():.4f}, mean {d.mean():.4f}; hematoma kept min {100 * k.min():.2f} %, "
              f"{np.count_nonzero(k >= 0.995)} of 20 cases >= 99.5 %.", "",
              f"GE head CT (tilt 18.5 deg, resampled): {ge_ml:.1f} mL, {ge_comp} connected component(s), "
              f"max {ge_max:.1f} HU inside.", "",
              "Hematoma voxels still lost are partial-volume voxels against the inner table: more than 3/4 bone by "
              "their HU, or above 300 HU beside a bleed too thin to leave a core after the erosion. Voxels above 300 HU enter the mask only next to a bleed (step 7 of "
              "`include/ichkit/preprocess/skull_strip.h`), so the GE scan, which has none, keeps the 300 HU cap "
              "everywhere. With step 7 off (`blood_core_mm=0`) the 300 HU cap drops up to 2.3 % of a lobar bleed.", ""]
    lines += ["## On the network's 1 x 1 x 5 mm grid", "",
              "A pipeline that resamples first strips the resampled scan (`reorient, resample_to_spacing(1, 1, 5), "
              "crop_to_foreground(-500, 5), skull_strip`: the benchmark's pipeline of the paper's model, "
              "`benchmarks/device/bench_device.cpp`), a 5th of the voxels. Truth (phantom brain, hematoma) and the "
              "native strip's mask are carried to that grid (linear, anti-aliased, cut at 1/2); Dice and the "
              "hematoma kept are counted there. s: resample excluded, crop + strip.", "",
              "| seed | location | Dice native vs truth | Dice 1x1x5 strip vs truth | Dice 1x1x5 vs native | "
              "hematoma kept, native | hematoma kept, 1x1x5 | s |", "|---|---|---|---|---|---|---|---|"]
    for n, loc, dn, dc, dcn, kn, kc, dt in crows:
        lines.append(f"| {100 + n} | {loc} | {dn:.4f} | {dc:.4f} | {dcn:.4f} | {100 * kn:.2f} % | {100 * kc:.2f} % | "
                     f"{dt:.3f} |")
    c = np.array([r[3] for r in crows])
    cn = np.array([r[4] for r in crows])
    kc = np.array([r[6] for r in crows])
    lines += ["", f"On that grid: Dice against the truth min {c.min():.4f}, mean {c.mean():.4f} (native strip "
              f"{min(r[2] for r in crows):.4f}, {np.mean([r[2] for r in crows]):.4f}); against the native strip min "
              f"{cn.min():.4f}; hematoma kept min {100 * kc.min():.2f} % (native {100 * min(r[5] for r in crows):.2f} %), "
              f"{np.count_nonzero(kc >= 0.995)} of 20 cases >= 99.5 %.", "",
              f"GE head CT on that grid: Dice {ge_coarse[0]:.4f} against its native strip ({ge_coarse[1]} against "
              f"{ge_coarse[2]} voxels).", ""]
    out = ROOT / "docs" / "results" / "skull-strip-phantoms.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
