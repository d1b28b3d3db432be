"""Python peers of ichkit's preprocessing stages (numpy / scipy.ndimage / torch), used by
benchmarks/run.py. Each does the same job as the ichkit stage it is timed against."""
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage


def window1(x):
    return np.clip((x - 0.0) / 80.0, 0.0, 1.0)


def window3(x):
    return np.stack([np.clip((x - (lv - w / 2)) / w, 0.0, 1.0) for lv, w in ((40, 80), (80, 200), (600, 2800))])


def scipy_zoom(x, factors):
    return ndimage.zoom(x, factors, order=1, prefilter=False)


def torch_resize(x, size, device="cpu"):
    """Trilinear F.interpolate of an (i, j, k) array to size (D, H, W); the result on the CPU."""
    t = torch.from_numpy(np.ascontiguousarray(x.T))[None, None].to(device)  # (1, 1, D, H, W)
    return F.interpolate(t, size=size, mode="trilinear", align_corners=False)[0, 0].cpu()


def ball(radius_mm, spacing):
    r = [max(1, int(round(radius_mm / s))) for s in spacing]
    g = np.ogrid[tuple(slice(-q, q + 1) for q in r)]
    return sum((gi * s) ** 2 for gi, s in zip(g, spacing)) <= radius_mm ** 2 + 1e-9


def skull_strip(hu, spacing, opening_mm=5.0):
    """The same recipe as ichkit's (Muschelli-style), in scipy.ndimage."""
    sm = ndimage.gaussian_filter(hu, sigma=[1.0 / s for s in spacing])
    soft = (sm > 0) & (sm < 100)
    b = ball(opening_mm, spacing)
    opened = ndimage.binary_opening(soft, structure=b)
    lab, n = ndimage.label(opened)
    if n == 0:
        return np.zeros(hu.shape, bool)
    sizes = ndimage.sum_labels(opened, lab, index=np.arange(1, n + 1))
    brain = lab == (int(np.argmax(sizes)) + 1)
    brain = ndimage.binary_fill_holes(brain)
    return ndimage.binary_dilation(brain, structure=b) & (sm < 100)


def crop_fg(x):
    """Crop to the voxels > -500 HU + 5 voxels (1 slice) on the 1 x 1 x 5 mm grid."""
    idx = np.argwhere(x > -500)
    if len(idx):
        lo = np.maximum(idx.min(0) - [5, 5, 1], 0)
        hi = np.minimum(idx.max(0) + 1 + [5, 5, 1], x.shape)
        x = x[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    return x


def crop_pad(x, target=(192, 192, 32), fill=-1024.0):
    """Crop to the head (> -500 HU) + 5 voxels (1 slice), then centre crop/pad to `target`."""
    x = crop_fg(x)
    out = np.full(target, fill, np.float32)
    src, dst = [], []
    for n, t in zip(x.shape, target):
        a = abs(n - t) // 2
        src.append(slice(a, a + t) if n >= t else slice(0, n))
        dst.append(slice(0, t) if n >= t else slice(a, a + n))
    out[tuple(dst)] = x[tuple(src)]
    return out


def pipeline(hu, spacing):
    """RAS (already), 1 x 1 x 5 mm, crop to the head + 5 mm, centre crop/pad 192 x 192 x 32, 3 windows."""
    x = ndimage.zoom(hu, [s / t for s, t in zip(spacing, (1.0, 1.0, 5.0))], order=1, prefilter=False)
    return window3(crop_pad(x))
