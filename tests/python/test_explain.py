"""ichkit.explain against independent references.

* Grad-CAM / Grad-CAM++ / HiResCAM maps equal a hook-based PyTorch implementation (forward hook
  on the stage, tensor hook for its gradient, loss.backward() through the whole pure-PyTorch
  mirror of the network - the way pytorch-grad-cam does it) to 1e-5 of the map's magnitude, for
  classification, regression, ordinal and segmentation targets, every stage, sign +/-1.
* The network-grid map equals torch.nn.functional.interpolate of that reference.
* Heatmaps written as NIfTI carry the scan's affine and shape (read back by nibabel); the map's
  peak on the scan grid is where the network-grid peak is in world space.
* Localisation scores against numpy / scikit-learn.
* Overlays: a valid PNG; the radiological orientation checked with a marker on a known side.
"""
import json

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ichkit
from ichkit import nets

from test_nets import randomise_state

RTOL = 1e-5


def config(depth=10, width=4, shape=(40, 40, 12)):
    pipe = json.loads(ichkit.preprocess.Pipeline().reorient("RAS").resample_to_shape(list(shape)).window().to_json())
    return {
        "encoder": {"depth": depth, "width": width, "in_channels": 3, "stem_stride": [1, 2, 2]},
        "heads": [
            {"name": "volume", "type": "regression", "target": "volume_ml", "params": {"transform": "log1p", "mean": 2.5, "sd": 1.25}},
            {"name": "prognosis", "type": "classification", "target": "outcome",
             "params": {"classes": ["good", "poor"], "hidden": 6}},
            {"name": "mrs", "type": "ordinal", "target": "mrs", "params": {"num_classes": 7}},
            {"name": "seg", "type": "segmentation", "target": "mask", "params": {"channels": 4}},
        ],
        "pipeline": pipe,
    }


@pytest.fixture(scope="module")
def case():
    return ichkit.phantom.make_case(shape=[96, 96, 16], spacing=[2.4, 2.4, 5.0], tilt=6, seed=11)


@pytest.fixture(scope="module")
def model_and_mirror():
    m = ichkit.model.Model(config(), seed=2)
    net = nets.MultiTaskNet.from_ichkit(m)
    randomise_state(net, seed=9)  # random batch-norm statistics: no accidental symmetry
    m.load_state_dict(net.to_state_arrays())
    net.eval()
    return m, net


def reference_cam(net, x, layer, head, index, sign, method):
    """Hook-based Grad-CAM on the PyTorch mirror: returns the (N, d, h, w) signed maps and y."""
    store = {}
    module = getattr(net.encoder, layer)

    def fwd(_, __, out):
        store["a"] = out
        out.register_hook(lambda g: store.__setitem__("g", g))

    h = module.register_forward_hook(fwd)
    try:
        net.zero_grad()
        _, out = net(torch.from_numpy(x))
        o = out[head]
        if o.dim() == 1:
            y = o
        elif o.dim() == 2:
            idx = o.argmax(1) if index < 0 else torch.full((o.shape[0],), index)
            y = o.gather(1, idx[:, None])[:, 0]
        else:
            flat = o.reshape(o.shape[0], -1)
            fg = (flat > 0).float()
            w = torch.where(fg.sum(1, keepdim=True) > 0, fg, torch.ones_like(fg))
            y = (flat * w).sum(1)
        y = y * sign
        y.sum().backward()
    finally:
        h.remove()
    a, g = store["a"].detach().double(), store["g"].double()
    if method == "gradcam":
        cam = (g.mean((2, 3, 4), keepdim=True) * a).sum(1)
    elif method == "gradcam++":
        g2, g3 = g * g, g * g * g
        alpha = g2 / (2 * g2 + a.sum((2, 3, 4), keepdim=True) * g3 + 1e-7)
        alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
        cam = ((torch.relu(g) * alpha).sum((2, 3, 4), keepdim=True) * a).sum(1)
    else:
        cam = (g * a).sum(1)
    return cam.numpy(), y.detach().numpy()


def assert_close(got, want, what, rtol=RTOL):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: {got.shape} != {want.shape}"
    scale = max(float(np.abs(want).max()), 1e-12)
    err = float(np.abs(got - want).max())
    assert err <= rtol * scale, f"{what}: max |diff| {err:.3g} over a magnitude of {scale:.3g}"


@pytest.mark.parametrize("head,index,sign", [("prognosis", 1, 1), ("prognosis", -1, 1), ("prognosis", 0, -1),
                                             ("volume", -1, 1), ("volume", 0, -1), ("mrs", 2, 1), ("seg", -1, 1)])
@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "hirescam"])
def test_maps_equal_hook_based_reference(model_and_mirror, case, head, index, sign, method):
    m, net = model_and_mirror
    vol = case["image"]
    x = m.pipeline.run(vol).input[None]
    want, y = reference_cam(net, x, "layer4", head, index, sign, method)
    assert np.ptp(want[0]) > 1e-6 * np.abs(want[0]).max() > 0  # a map that varies: the comparison can fail
    e = ichkit.explain.explain(m, vol, [(head, index, sign)], method=method)
    h = e.maps[0]
    assert h.layer == "layer4" and h.method == method and h.sign == sign
    assert h.score == pytest.approx(float(y[0]), rel=1e-5, abs=1e-6)
    # The segmentation target sums thousands of logits (8401 here), so its float32 gradients
    # carry more rounding than one score's: 1.7e-5 of the map's scale was seen. A logit that
    # changes sides - the error this would show - moves the map by 4.6e-4 of its scale.
    rtol = 5e-5 if head == "seg" else RTOL
    assert_close(h.feature, want[0], f"{method} {head}[{index}] feature map", rtol)
    # the network-grid map is the reference upsampled trilinearly over the grid's extent
    up = F.interpolate(torch.from_numpy(want)[:, None], size=x.shape[2:], mode="trilinear", align_corners=False)[0, 0].numpy()
    assert_close(h.network.array, up.transpose(2, 1, 0), f"{method} {head} network-grid map", rtol)


@pytest.mark.parametrize("layer", ["stem", "layer1", "layer2", "layer3"])
def test_every_stage_equals_reference(model_and_mirror, case, layer):
    m, net = model_and_mirror
    x = m.pipeline.run(case["image"]).input[None]
    for head, index in [("prognosis", 1), ("volume", -1), ("seg", -1)]:
        want, _ = reference_cam(net, x, layer, head, index, 1, "gradcam")
        assert np.ptp(want[0]) > 0
        got = ichkit.explain.gradcam(m, case["image"], head=head, target=index, layer=layer)
        assert got.layer == layer
        assert_close(got.feature, want[0], f"{layer} {head}")


def test_batch_equals_single_scans_and_predict(model_and_mirror, case):
    m, net = model_and_mirror
    other = ichkit.phantom.make_case(shape=[96, 96, 16], spacing=[2.4, 2.4, 5.0], seed=12)["image"]
    batch = ichkit.explain.explain(m, [case["image"], other], ["volume", "prognosis"], batch_size=2)
    for vol, e in zip([case["image"], other], batch):
        single = ichkit.explain.explain(m, vol, ["volume", "prognosis"])
        for a, b in zip(e.maps, single.maps):
            assert_close(a.feature, b.feature, "batch vs single", rtol=1e-5)
            assert a.index == b.index
        p = m.predict(vol)
        assert e.prediction["volume"]["value"] == pytest.approx(p["volume"]["value"], rel=1e-5)
        np.testing.assert_allclose(e.prediction["prognosis"]["probabilities"], p["prognosis"]["probabilities"], rtol=1e-5)
    # the predicted class is the default classification target
    assert batch[0]["prognosis"].index == int(np.argmax(batch[0].prediction["prognosis"]["probabilities"]))


def test_nifti_overlays_the_scan(model_and_mirror, case, tmp_path):
    m, _ = model_and_mirror
    vol = case["image"]
    h = ichkit.explain.gradcam(m, vol, head="prognosis", target=1)
    for v in (h.raw, h.normalized):
        path = tmp_path / "map.nii.gz"
        ichkit.write_nifti(v, str(path))
        img = nib.load(str(path))
        assert img.shape == tuple(vol.shape)
        np.testing.assert_allclose(img.affine, vol.affine, atol=1e-4)
        np.testing.assert_allclose(img.get_fdata(), v.array, atol=1e-6)
    n = h.normalized.array
    assert n.min() >= 0 and n.max() == pytest.approx(1.0)
    np.testing.assert_allclose(n, np.maximum(h.raw.array, 0) / h.raw.array.max(), atol=1e-6)
    # the scan-grid peak sits where the network-grid map peaks, in world space (tilted scan:
    # within one network voxel diagonal). This untrained network's map has a plateau at its top
    # (300 voxels tied to 1e-5, where the input is all air), so any of them may be the peak.
    net_map = h.network
    top = np.argwhere(net_map.array >= net_map.array.max() * (1 - 1e-5))
    assert len(top) < net_map.array.size // 20
    w_net = (net_map.affine[:3, :3] @ top.T + net_map.affine[:3, 3:4]).T
    w_scan = (vol.affine @ np.r_[h.peak, 1.0])[:3]
    assert np.allclose(w_scan, h.peak_world, atol=1e-3)
    diag = np.linalg.norm(np.linalg.norm(net_map.affine[:3, :3], axis=0))
    assert np.min(np.linalg.norm(w_net - w_scan, axis=1)) <= diag


def test_errors_are_clear(model_and_mirror, case):
    m, _ = model_and_mirror
    with pytest.raises(ichkit.InvalidArgument, match="no encoder stage called 'layer9'"):
        ichkit.explain.gradcam(m, case["image"], head="volume", layer="layer9")
    with pytest.raises(ichkit.InvalidArgument, match="no head called 'bleed'"):
        ichkit.explain.gradcam(m, case["image"], head="bleed")
    with pytest.raises(ichkit.InvalidArgument, match="out of range"):
        ichkit.explain.gradcam(m, case["image"], head="prognosis", target=2)
    with pytest.raises(ichkit.InvalidArgument, match="-1 for the predicted class"):  # not the predicted class
        ichkit.explain.gradcam(m, case["image"], head="prognosis", target=-2)
    for bad in [("prognosis", 2**62), ("prognosis", 0, 2**62), ("prognosis", "a"), (), ("prognosis", 0, 1, 5), 7]:
        with pytest.raises(ichkit.InvalidArgument, match="a target is a head name or"):
            ichkit.explain.explain(m, case["image"], [bad])
    with pytest.raises(ichkit.InvalidArgument, match="one output"):
        ichkit.explain.gradcam(m, case["image"], head="volume", target=1)
    with pytest.raises(ichkit.InvalidArgument, match="unknown method"):
        ichkit.explain.gradcam(m, case["image"], method="occlusion")
    with pytest.raises(ichkit.InvalidArgument, match="sign"):
        ichkit.explain.gradcam(m, case["image"], sign=0)


def test_scores_against_numpy_and_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(4)
    shape = (20, 18, 9)
    aff = np.array([[0.9, 0.1, 0, -20], [0, -0.8, 0.3, 14], [0.05, 0, 5.0, -7], [0, 0, 0, 1]])
    heat = np.round(rng.random(shape), 1).astype(np.float32)  # many ties
    mask = np.zeros(shape, np.uint8)
    mask[3:7, 4:9, 2:5] = 1
    h, k = ichkit.Volume(heat, affine=aff), ichkit.Volume(mask, affine=aff)
    assert ichkit.explain.heatmap_auc(h, k) == pytest.approx(roc_auc_score(mask.ravel(), heat.ravel()), abs=1e-12)
    pos = np.maximum(heat, 0).astype(np.float64)
    assert ichkit.explain.energy_inside(h, k) == pytest.approx(pos[mask > 0].sum() / pos.sum(), rel=1e-9)
    # a peak outside the lesion: distance = min over lesion voxels of |A (p - q)|
    heat2 = np.zeros(shape, np.float32)
    heat2[15, 12, 6] = 1
    p = ichkit.explain.pointing_game(ichkit.Volume(heat2, affine=aff), k, 0.0)
    q = np.argwhere(mask > 0)
    d = np.min(np.linalg.norm((q - np.array([15, 12, 6])) @ aff[:3, :3].T, axis=1))
    assert p["peak"] == (15, 12, 6)
    assert p["distance_mm"] == pytest.approx(d, rel=1e-9)
    assert not p["hit"]
    assert ichkit.explain.pointing_game(ichkit.Volume(heat2, affine=aff), k, d + 1e-6)["hit"]
    heat2[4, 5, 3] = 2  # inside
    assert ichkit.explain.pointing_game(ichkit.Volume(heat2, affine=aff), k, 0.0) == {"hit": True, "distance_mm": 0.0, "peak": (4, 5, 3)}
    with pytest.raises(ichkit.GeometryError, match="one grid"):
        ichkit.explain.heatmap_auc(h, ichkit.Volume(mask, affine=np.eye(4)))


def test_overlay_is_radiological_png(tmp_path):
    import matplotlib.image as mpimg

    # an LPS-stored volume (as DICOM gives): a bright marker at the patient's right-anterior
    shape = (40, 40, 10)
    aff = np.diag([-2.0, -2.0, 5.0, 1.0])  # RAS+ world: i runs to the patient's left, j to posterior
    aff[:3, 3] = [40, 40, 0]
    scan = np.full(shape, 30.0, np.float32)
    heat = np.zeros(shape, np.float32)
    # world x > 0 is the patient's right, y > 0 anterior: x = 40 - 2 i > 20 for i < 10, y = 40 - 2 j > 20 for j < 10
    heat[2:8, 2:8, 3:7] = 1.0
    s, h = ichkit.Volume(scan, affine=aff), ichkit.Volume(heat, affine=aff)
    img = ichkit.explain.overlay(s, h, kind="montage", slices=1, threshold=0.5)
    assert img.dtype == np.uint8 and img.shape == (40, 40, 3)
    coloured = np.argwhere(np.abs(img.astype(int) - img[..., :1].astype(int)).sum(2) > 0)  # non-grey pixels
    # radiological: the patient's right on the image's left, anterior at the top
    assert coloured[:, 1].max() < 20 and coloured[:, 0].max() < 20
    path = tmp_path / "o.png"
    ichkit.explain.save_overlay(str(path), s, h, kind="orthogonal")
    back = mpimg.imread(str(path))
    # square 2 mm pixels: axial 40 x 40, coronal and sagittal 40 x 25 (10 slices of 5 mm), 4-pixel gaps
    assert back.shape == (40, 3 * 40 + 2 * 4, 3)
    # the marker's voxel: the three panels cross there
    at = ichkit.explain.render_orthogonal(s, h, through=(4, 4, 5))
    assert at.shape == (40, 128, 3) and np.array_equal(at, ichkit.explain.render_orthogonal(s, h, through=[4, 4, 5]))
    for through in [(4, 4), (-1, 4, 5), (4.5, 4, 5), "abc"]:
        with pytest.raises(ichkit.InvalidArgument, match="through is a voxel index"):
            ichkit.explain.render_orthogonal(s, h, through=through)
    with pytest.raises(ichkit.InvalidArgument, match="outside the scan"):
        ichkit.explain.render_orthogonal(s, h, through=(40, 4, 5))
    for bad in [dict(alpha=float("nan")), dict(alpha=1.5), dict(threshold=-0.1), dict(threshold=float("nan")),
                dict(width=float("inf")), dict(pixel_mm=float("inf"))]:
        with pytest.raises(ichkit.InvalidArgument):
            ichkit.explain.render_montage(s, h, **bad)
    # a float image is refused, not cast to a black (or wrapped-around) one
    for image in [img / 255.0, img.astype(np.int64), img.astype(np.float32)]:
        with pytest.raises(ichkit.InvalidArgument, match="uint8"):
            ichkit.explain.write_png(str(tmp_path / "f.png"), image)
    assert not (tmp_path / "f.png").exists()
    # NaN voxels in the scan are black and in the heatmap are not drawn
    scan_nan = scan.copy()
    scan_nan[:, :20] = np.nan
    grey = ichkit.explain.render_montage(ichkit.Volume(scan_nan, affine=aff), slices=1)
    # j < 20 (anterior, at the top) is NaN; linear sampling carries it one pixel further
    assert (grey[:20] == 0).all() and (grey[21:] > 0).all()
    heat_nan = heat.copy()
    heat_nan[2:8, 2:8, 3:7] = np.nan
    plain = ichkit.explain.render_montage(s, slices=1)
    assert np.array_equal(ichkit.explain.render_montage(s, ichkit.Volume(heat_nan, affine=aff), slices=1), plain)


def test_smoothing_is_a_gaussian_on_the_network_grid(model_and_mirror, case):
    from scipy.ndimage import gaussian_filter1d

    m, _ = model_and_mirror
    plain = ichkit.explain.gradcam(m, case["image"], head="volume", method="hirescam", layer="stem")
    smooth = ichkit.explain.gradcam(m, case["image"], head="volume", method="hirescam", layer="stem", smooth_mm=6.0)
    np.testing.assert_array_equal(smooth.feature, plain.feature)  # the stage's own map is untouched
    want = plain.network.array.astype(np.float64)
    for axis, spacing in enumerate(np.linalg.norm(plain.network.affine[:3, :3], axis=0)):
        sigma = 6.0 / spacing
        # ichkit's kernel reaches ceil(3 sigma) voxels; scipy's int(truncate sigma + 0.5)
        want = gaussian_filter1d(want, sigma, axis=axis, mode="reflect", truncate=np.ceil(3 * sigma) / sigma)
    assert_close(smooth.network.array, want, "smoothed network map", rtol=1e-4)
    assert np.abs(smooth.network.array - plain.network.array).max() > 1e-3 * np.abs(want).max()
    with pytest.raises(ichkit.InvalidArgument, match="smooth_mm"):
        ichkit.explain.gradcam(m, case["image"], smooth_mm=-1)
