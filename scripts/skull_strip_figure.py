#!/usr/bin/env python3
"""Render a skull-strip overlay figure (6 axial slices) of a head CT as a PNG.

Default: read the real GE head CT with gantry tilt (tests/data/dicom/ge-head-tilt) with
ichkit.io.read_dicom, strip it with ichkit.preprocess.skull_strip and write
docs/skull-strip-ge-head-tilt.png.

    python scripts/skull_strip_figure.py
    python scripts/skull_strip_figure.py --dicom path/to/series --out figure.png
    python scripts/skull_strip_figure.py --image scan.nii.gz --mask brain.nii.gz --out figure.png

Only numpy is needed to draw (the PNG is written with zlib; no matplotlib). Slices are shown
in radiological convention (patient's right on the image's left, anterior at the top),
brain window 0..80 HU, the mask tinted and outlined. NIfTI files are read with ichkit when it
is importable, else with nibabel.
"""
import argparse
import os
import struct
import sys
import zlib

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# 3 x 5 bitmap digits for the slice labels
_DIGITS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111", "k": "100101110101101", " ": "000000000000000",
    "=": "000111000111000",
}


def write_png(path, rgb):
    """Write an (H, W, 3) uint8 array as an 8-bit RGB PNG (temporary name, then rename)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    raw = np.zeros((h, 1 + 3 * w), np.uint8)  # filter byte 0 (None) per row
    raw[:, 1:] = rgb.reshape(h, 3 * w)

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw.tobytes(), 9)) + chunk(b"IEND", b""))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(png)
    os.replace(tmp, path)


def draw_text(rgb, text, y, x, scale=3, color=(255, 255, 255)):
    for n, ch in enumerate(text):
        bits = _DIGITS.get(ch, _DIGITS[" "])
        for r in range(5):
            for c in range(3):
                if bits[r * 3 + c] == "1":
                    y0, x0 = y + r * scale, x + (n * 4 + c) * scale
                    rgb[y0:y0 + scale, x0:x0 + scale] = color


def outline(mask):
    m = mask.astype(bool)
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return m & ~inner


def display_slice(a, k, affine):
    """Slice k as (rows, cols) in radiological convention: columns run from the patient's
    right to left (world x decreasing), rows from anterior to posterior (y decreasing)."""
    s = a[:, :, k].T  # rows = j, cols = i
    if affine[0, 0] > 0:  # i runs towards +x, the patient's right (RAS+): flip
        s = s[:, ::-1]
    if affine[1, 1] > 0:  # j runs towards anterior: flip so anterior is at the top
        s = s[::-1, :]
    return s


def square_pixels(s, si, sj):
    """Nearest-neighbour stretch so that pixels are square (si: column spacing, sj: row spacing)."""
    if abs(si - sj) / min(si, sj) < 0.01:
        return s
    h, w = s.shape
    step = min(si, sj)
    rows = np.minimum((np.arange(int(round(h * sj / step))) * step / sj).astype(int), h - 1)
    cols = np.minimum((np.arange(int(round(w * si / step))) * step / si).astype(int), w - 1)
    return s[rows][:, cols]


def render(hu, mask, affine, n_slices=6, lo=0.0, hi=80.0, cols=3):
    hu = np.asarray(hu, np.float32)
    mask = np.asarray(mask) != 0
    sp = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0))
    ks = np.nonzero(mask.any((0, 1)))[0]
    if ks.size == 0:
        raise ValueError("the mask is empty")
    picks = np.unique(np.round(np.linspace(ks[0] + 0.12 * (ks[-1] - ks[0]), ks[-1] - 0.08 * (ks[-1] - ks[0]), n_slices)).astype(int))
    # crop every panel to the head's bounding box (HU > -500) plus a margin
    head = (hu > -500).any(2)
    ii, jj = np.nonzero(head)
    m = 8
    i0, i1 = max(ii.min() - m, 0), min(ii.max() + m + 1, hu.shape[0])
    j0, j1 = max(jj.min() - m, 0), min(jj.max() + m + 1, hu.shape[1])
    panels = []
    for k in picks:
        img = square_pixels(display_slice(hu[i0:i1, j0:j1], k, affine), sp[0], sp[1])
        msk = square_pixels(display_slice(mask[i0:i1, j0:j1], k, affine), sp[0], sp[1])
        g = np.clip((img - lo) / (hi - lo) * 255.0, 0, 255)
        rgb = np.repeat(g[..., None], 3, axis=2)
        tint = np.array([255.0, 70.0, 40.0])
        rgb[msk] = 0.78 * rgb[msk] + 0.22 * tint
        rgb = rgb.astype(np.uint8)
        rgb[outline(msk)] = (255, 215, 0)
        draw_text(rgb, "k=%d" % k, 6, 6)
        panels.append(rgb)
    h = max(p.shape[0] for p in panels)
    w = max(p.shape[1] for p in panels)
    rows = (len(panels) + cols - 1) // cols
    gap = 4
    out = np.zeros((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), np.uint8)
    for n, p in enumerate(panels):
        r, c = divmod(n, cols)
        out[r * (h + gap):r * (h + gap) + p.shape[0], c * (w + gap):c * (w + gap) + p.shape[1]] = p
    return out


def read_nifti(path):
    try:
        import ichkit

        v = ichkit.read_nifti(path)
        return np.asarray(v.array), np.asarray(v.affine)
    except ImportError:
        import nibabel as nib

        img = nib.load(path)
        return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dicom", default=os.path.join(ROOT, "tests", "data", "dicom", "ge-head-tilt"),
                   help="DICOM series folder (used unless --image is given)")
    p.add_argument("--image", help="CT in HU as NIfTI (instead of --dicom)")
    p.add_argument("--mask", help="brain mask as NIfTI on the image's grid (default: run ichkit's skull_strip)")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "skull-strip-ge-head-tilt.png"))
    p.add_argument("--slices", type=int, default=6)
    a = p.parse_args(argv)

    if a.image:
        hu, affine = read_nifti(a.image)
        volume = None
    else:
        import ichkit

        volume, report = ichkit.io.read_dicom(a.dicom)
        hu, affine = np.asarray(volume.array), np.asarray(volume.affine)
    if a.mask:
        mask, mask_affine = read_nifti(a.mask)
        if mask.shape != hu.shape or not np.allclose(mask_affine, affine, atol=1e-3):
            sys.exit("the mask is not on the image's grid")
    else:
        import ichkit

        if volume is None:
            volume = ichkit.Volume(np.ascontiguousarray(hu, np.float32), affine)
        mask = np.asarray(ichkit.preprocess.skull_strip(volume).array)

    sp = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0))
    ml = float((mask != 0).sum() * sp.prod() / 1000.0)
    inside = hu[mask != 0]
    print("mask %.1f mL, max HU inside %.1f" % (ml, float(inside.max()) if inside.size else float("nan")))
    write_png(a.out, render(hu, mask, affine, a.slices))
    print("wrote", a.out)


if __name__ == "__main__":
    main()
