"""Grad-CAM, Grad-CAM++ and HiResCAM for any head of an ichkit model, on the scan's own grid.

>>> m = ichkit.model.Model.load("model.ichkit")
>>> scan = ichkit.read("scan.nii.gz")
>>> h = ichkit.explain.gradcam(m, scan, head="volume")          # what drives the volume up
>>> ichkit.write_nifti(h.normalized, "volume_heatmap.nii.gz")     # overlays on scan.nii.gz
>>> ichkit.explain.show(scan, h)                                  # matplotlib, in a notebook

Maps are computed in C++ (one forward pass shared by all targets; gradients to the explained
stage only), upsampled on the network grid and carried back through the model's preprocessing
pipeline onto the scan's grid. ``raw`` is the signed map (comparable across scans of one model),
``normalized`` its positive part scaled to [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ._core.explain import energy_inside, heatmap_auc, pointing_game, render_montage, render_orthogonal, write_png  # noqa: F401
from ._core.explain import explain as _explain


@dataclass
class Heatmap:
    """One map for one scan and one target (all volumes carry their affine)."""

    head: str
    layer: str
    method: str
    index: int  #: the class / output explained (the predicted class when none was asked for)
    sign: int  #: +1: what drives the output up, -1: down
    score: float  #: the target's value (raw head output x sign)
    raw: Any  #: ichkit.Volume, signed, on the scan grid
    normalized: Any  #: ichkit.Volume in [0, 1] on the scan grid
    network: Any  #: ichkit.Volume, signed, on the network grid
    feature: np.ndarray  #: the signed map on the stage's own grid (d, h, w)
    peak: tuple  #: voxel index (i, j, k) of the maximum
    peak_world: tuple  #: its RAS+ position in mm


@dataclass
class Explanation:
    prediction: dict  #: as Model.predict returns it
    maps: list = field(default_factory=list)  #: Heatmaps, in the order of the targets

    def __getitem__(self, head: str) -> Heatmap:
        for h in self.maps:
            if h.head == head:
                return h
        raise KeyError(head)


def _targets(head, target, sign):
    heads = [head] if isinstance(head, str) else list(head)
    return [(h, -1 if target is None else int(target), int(sign)) for h in heads]


def explain(model, volumes, targets: Sequence, method: str = "gradcam", layer: str = "", to_scan: bool = True,
            batch_size: int = 4, smooth_mm: float = 0.0):
    """Maps for several targets - head names or ``(head, index[, sign])`` tuples - from one forward
    pass. One Volume gives an Explanation, a list of Volumes a list of them. ``smooth_mm``: Gaussian
    sigma applied to the map on the network grid before it returns to the scan. The GIL is released."""
    raw = _explain(model, volumes, list(targets), method=method, layer=layer, to_scan=to_scan, batch_size=batch_size,
                   smooth_mm=smooth_mm)

    def one(e):
        return Explanation(e["prediction"], [Heatmap(**m) for m in e["maps"]])

    return [one(e) for e in raw] if isinstance(raw, list) else one(raw)


def gradcam(model, volume, head="volume", target: int | None = None, sign: int = +1, layer: str = "",
            method: str = "gradcam", to_scan: bool = True, smooth_mm: float = 0.0):
    """Grad-CAM of one head (or a list of heads, sharing one forward pass) for one scan.

    target: class index for a classification head (default: the predicted class); sign: +1 for
    what drives a regression output up, -1 for down; layer: encoder stage ("stem", "layer1" ...
    "layer4", default the last). Returns a Heatmap (a list of them for a list of heads)."""
    e = explain(model, volume, _targets(head, target, sign), method=method, layer=layer, to_scan=to_scan, smooth_mm=smooth_mm)
    return e.maps[0] if isinstance(head, str) else e.maps


def gradcam_plus_plus(model, volume, head="volume", target: int | None = None, sign: int = +1, layer: str = "",
                      to_scan: bool = True):
    """Grad-CAM++ (Chattopadhay et al. 2018); arguments as gradcam."""
    return gradcam(model, volume, head, target, sign, layer, method="gradcam++", to_scan=to_scan)


def hirescam(model, volume, head="volume", target: int | None = None, sign: int = +1, layer: str = "",
             to_scan: bool = True, smooth_mm: float = 0.0):
    """HiResCAM (Draelos & Carin 2020); arguments as gradcam."""
    return gradcam(model, volume, head, target, sign, layer, method="hirescam", to_scan=to_scan, smooth_mm=smooth_mm)


def localisation(heatmap, mask, tolerance_mm: float = 10.0) -> dict:
    """Pointing game (peak in the lesion or within tolerance_mm), share of positive energy inside
    the lesion, and voxel-wise AUC; heatmap (a Heatmap or a Volume) and mask on one grid."""
    h = heatmap.normalized if isinstance(heatmap, Heatmap) else heatmap
    p = pointing_game(h, mask, tolerance_mm)
    return {"hit": p["hit"], "distance_mm": p["distance_mm"], "peak": p["peak"],
            "energy_inside": energy_inside(h, mask), "auc": heatmap_auc(h, mask)}


def _overlay(scan, heatmap, outline, kind, **kw):
    h = heatmap.normalized if isinstance(heatmap, Heatmap) else heatmap
    if kind == "montage":
        return render_montage(scan, h, outline, **kw)
    if kind == "orthogonal":
        return render_orthogonal(scan, h, outline, **kw)
    raise ValueError(f"kind must be 'montage' or 'orthogonal', got {kind!r}")


def overlay(scan, heatmap=None, outline=None, kind: str = "orthogonal", **kw) -> np.ndarray:
    """The overlay as a (height, width, 3) uint8 array (radiological view; see render_montage /
    render_orthogonal for level, width, alpha, threshold, slices, columns, pixel_mm, through)."""
    return _overlay(scan, heatmap, outline, kind, **kw)


def save_overlay(path: str, scan, heatmap=None, outline=None, kind: str = "orthogonal", **kw) -> None:
    """Write the overlay as PNG (atomically)."""
    write_png(str(path), _overlay(scan, heatmap, outline, kind, **kw))


def show(scan, heatmap=None, outline=None, kind: str = "orthogonal", ax=None, title: str | None = None, **kw):
    """Draw the overlay with matplotlib (for notebooks); returns the Axes."""
    import matplotlib.pyplot as plt

    img = _overlay(scan, heatmap, outline, kind, **kw)
    if ax is None:
        _, ax = plt.subplots(figsize=(min(16, img.shape[1] / 80), min(12, img.shape[0] / 80)))
    ax.imshow(img)
    ax.set_axis_off()
    if title is None and isinstance(heatmap, Heatmap):
        title = f"{heatmap.method} {heatmap.head}[{heatmap.index}] {'+' if heatmap.sign > 0 else '-'} @ {heatmap.layer}"
    if title:
        ax.set_title(title)
    return ax


__all__ = ["Explanation", "Heatmap", "energy_inside", "explain", "gradcam", "gradcam_plus_plus", "heatmap_auc", "hirescam",
           "localisation", "overlay", "pointing_game", "render_montage", "render_orthogonal", "save_overlay", "show", "write_png"]
