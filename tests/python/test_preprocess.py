"""Preprocessing against independent references: scipy.ndimage.map_coordinates driven by the same
world-grid mapping, nibabel's as_closest_canonical, and analytic window values."""
import itertools
import subprocess

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

import ichkit
from ichkit import preprocess as pp


@pytest.fixture(scope="module")
def head():
    c = ichkit.phantom.make_case(shape=(96, 96, 16), spacing=(2.2, 2.2, 9.0), tilt=12.0, seed=11)
    return c


def world_mapping(src_affine, out_affine, out_shape):
    """Continuous source indices of every output voxel: inv(src) @ out @ (i, j, k, 1)."""
    m = np.linalg.inv(src_affine) @ out_affine
    idx = np.indices(out_shape).reshape(3, -1).astype(np.float64)
    q = m[:3, :3] @ idx + m[:3, 3:4]
    return q


def inside(q, shape):
    return np.all((q >= -1e-6) & (q <= (np.array(shape)[:, None] - 1) + 1e-6), axis=0)


@pytest.mark.parametrize("order,interp", [(0, "nearest"), (1, "linear"), (3, "cubic")])
def test_resample_matches_map_coordinates(head, order, interp):
    img = head["image"]
    rng = np.random.default_rng(order)
    # An oblique output grid: rotated, different spacing (upsampling, so no anti-aliasing).
    angle = np.radians(17)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    out_aff = np.eye(4)
    out_aff[:3, :3] = rot @ np.diag([1.7, 1.9, 4.0])
    out_aff[:3, 3] = img.affine[:3, 3] + rng.uniform(-5, 5, 3)
    shape = (110, 100, 30)
    src = head["mask"] if order == 0 else img
    got = pp.resample(src, out_aff, shape, interp=interp, fill=-7.0, antialias=False)
    np.testing.assert_array_equal(got.affine, out_aff)
    q = world_mapping(src.affine, out_aff, shape)
    ok = inside(q, src.shape)
    assert ok.mean() > 0.2
    ref = ndimage.map_coordinates(src.array.astype(np.float64), q, order=order, mode="mirror", prefilter=True)
    g = got.array.reshape(-1)  # C order, like np.indices
    if order == 0:
        np.testing.assert_array_equal(g[ok], ref[ok].astype(np.uint8))
    else:
        assert np.max(np.abs(g[ok] - ref[ok])) < 1e-3
    assert np.all(g[~ok] == (-7.0 if order else np.uint8(-7 % 256)))


def test_resample_to_own_grid_is_identity(head):
    img = head["image"]
    for interp in ("nearest", "linear", "cubic"):
        same = pp.resample_like(img, img, interp=interp)
        np.testing.assert_allclose(same.array, img.array, atol=1e-3 if interp == "cubic" else 0)
        np.testing.assert_array_equal(same.affine, img.affine)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 9.0), (3.3, 3.3, 3.3), (0.7, 1.3, 5.0)])
def test_resample_to_spacing_keeps_centre_and_extent(head, spacing):
    img = head["image"]
    out = pp.resample_to_spacing(img, spacing)
    np.testing.assert_allclose(out.spacing, spacing, atol=1e-9)
    c_in = img.affine @ np.r_[(np.array(img.shape) - 1) / 2, 1]
    c_out = out.affine @ np.r_[(np.array(out.shape) - 1) / 2, 1]
    assert np.linalg.norm(c_in - c_out) < 0.01
    extent_in = np.array(img.shape) * np.array(img.spacing)
    extent_out = np.array(out.shape) * np.array(out.spacing)
    assert np.all(np.abs(extent_in - extent_out) <= np.array(spacing) / 2 + 1e-9)
    # the directions (including the tilt shear's axes) are unchanged
    np.testing.assert_allclose(out.direction, img.direction, atol=1e-12)


def test_resample_to_shape_and_antialias(head):
    img = head["image"]
    out = pp.resample_to_shape(img, (48, 48, 8))
    assert out.shape == (48, 48, 8)
    c_in = img.affine @ np.r_[(np.array(img.shape) - 1) / 2, 1]
    c_out = out.affine @ np.r_[(np.array(out.shape) - 1) / 2, 1]
    assert np.linalg.norm(c_in - c_out) < 0.01
    # anti-aliasing: downsampling noise is smoothed, so the result is less noisy than point sampling
    raw = pp.resample_to_shape(img, (48, 48, 8), antialias=False)
    assert np.std(np.diff(out.array, axis=0)) < np.std(np.diff(raw.array, axis=0))


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_antialiased_downsampling_equals_scipy_gaussian_then_sampling(dtype):
    # Output step 2 voxels along i, 3 along j, 1 along k: ichkit smooths with a Gaussian of
    # sigma (step - 1) / 2 voxels (radius ceil(3 sigma), reflected edges) and samples at whole
    # input voxels; scipy's gaussian_filter with the same sigma, radius and edge mode, sliced.
    rng = np.random.default_rng(5)
    arr = rng.uniform(-50, 150, (61, 47, 6)).astype(dtype)
    aff = np.diag([0.5, 0.6, 4.0, 1.0])
    aff[:3, 3] = [3.0, -7.0, 11.0]
    src = ichkit.Volume(arr, aff)
    out_aff = aff.copy()
    out_aff[:3, :3] = aff[:3, :3] @ np.diag([2.0, 3.0, 1.0])
    shape = (31, 16, 6)
    got = pp.resample(src, out_aff, shape, interp="linear", fill=0.0, antialias=True).array
    ref = ndimage.gaussian_filter(arr.astype(np.float64), sigma=(0.5, 1.0, 0.0), mode="reflect", truncate=3.0)
    ref = ref[::2, ::3, :]
    if dtype == np.int16:
        ref = np.rint(ref)
    assert got.shape == ref.shape
    assert np.max(np.abs(got - ref)) < (1.0 if dtype == np.int16 else 1e-3)


@pytest.mark.parametrize("flip", [False, True])
def test_antialiased_linear_resampling_at_fractional_positions_equals_scipy(flip):
    # Downsampling by 2.2 along i (sigma 0.6) and 3 along j (sigma 1), upsampling along k, the
    # output grid shifted by a fraction of a voxel (and run backwards along i): ichkit evaluates
    # the Gaussian only where it is sampled; scipy filters the whole volume (same sigma, radius
    # and reflected edges) and interpolates linearly at the same continuous indices.
    rng = np.random.default_rng(7)
    arr = rng.uniform(-80, 220, (67, 52, 7)).astype(np.float32)
    aff = np.diag([0.45, 0.5, 5.0, 1.0])
    aff[:3, 3] = [-20.0, 13.0, 4.0]
    out_aff = aff.copy()
    out_aff[:3, :3] = aff[:3, :3] @ np.diag([-2.2 if flip else 2.2, 3.0, 0.7])
    out_aff[:3, 3] += aff[:3, :3] @ np.array([65.7 if flip else 0.35, 0.4, 0.25])
    shape = (31, 17, 9)
    got = pp.resample(ichkit.Volume(arr, aff), out_aff, shape, interp="linear", fill=-7.0, antialias=True).array
    smooth = ndimage.gaussian_filter(arr.astype(np.float64), sigma=(0.6, 1.0, 0.0), mode="reflect", truncate=3.0)
    q = world_mapping(aff, out_aff, shape)
    ins = inside(q, arr.shape)
    ref = np.full(q.shape[1], -7.0)
    ref[ins] = ndimage.map_coordinates(smooth, np.clip(q[:, ins], 0, None), order=1, mode="nearest")
    ref = ref.reshape(shape)
    assert 0 < np.count_nonzero(~ins) < ins.size  # some outputs fall outside, most inside
    assert np.max(np.abs(got - ref)) < 1e-3


@pytest.mark.parametrize("code", ["LPS", "RAS", "LAI", "ASR"])
def test_pipeline_reorient_then_resample_equals_the_two_steps(head, code):
    # the pipeline resamples a flipped scan in one pass (no reoriented copy); a permuted one
    # is reoriented first. Either way: the grid and the values of the two steps run one by one.
    img = pp.reorient(head["image"], code)
    got = pp.Pipeline().reorient("RAS").resample_to_spacing((1.5, 1.7, 4.0)).run(img).volume
    want = pp.resample_to_spacing(pp.reorient(img, "RAS"), (1.5, 1.7, 4.0), fill=-1024.0)
    assert got.shape == want.shape
    np.testing.assert_allclose(got.affine, want.affine, atol=1e-9)
    np.testing.assert_allclose(got.array, want.array, atol=1e-2)
    got2 = pp.Pipeline().reorient("RAS").resample_to_shape((40, 41, 12)).run(img).volume
    want2 = pp.resample_to_shape(pp.reorient(img, "RAS"), (40, 41, 12), fill=-1024.0)
    np.testing.assert_allclose(got2.affine, want2.affine, atol=1e-9)
    np.testing.assert_allclose(got2.array, want2.array, atol=1e-2)


def all_orientations():
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            yield perm, signs


@pytest.mark.parametrize("perm,signs", list(all_orientations()))
def test_reorient_equals_as_closest_canonical(perm, signs):
    rng = np.random.default_rng(abs(hash((perm, signs))) % 2**32)
    data = rng.integers(-1000, 1000, size=(5, 6, 7)).astype(np.int16)
    aff = np.zeros((4, 4))
    aff[3, 3] = 1
    for c, (w, s) in enumerate(zip(perm, signs)):
        aff[w, c] = s * (0.5 + c)
    # a slight obliquity: still closest to the same axes
    small = np.radians(5)
    rot = np.array([[1, 0, 0], [0, np.cos(small), -np.sin(small)], [0, np.sin(small), np.cos(small)]])
    aff[:3, :3] = rot @ aff[:3, :3]
    aff[:3, 3] = rng.uniform(-100, 100, 3)
    img = nib.Nifti1Image(data, aff)
    ref = nib.as_closest_canonical(img)
    got = pp.reorient(ichkit.Volume(data, aff), "RAS")
    np.testing.assert_array_equal(got.array, np.asanyarray(ref.dataobj))
    np.testing.assert_allclose(got.affine, ref.affine, atol=1e-12)
    assert got.orientation == "RAS"


def test_reorient_round_trip_and_codes(head):
    img = head["image"]
    lps = pp.reorient(img, "LPS")
    assert lps.orientation == "LPS"
    back = pp.reorient(lps, "RAS")
    np.testing.assert_array_equal(back.array, img.array)
    np.testing.assert_allclose(back.affine, img.affine, atol=1e-12)
    with pytest.raises(ichkit.InvalidArgument):
        pp.reorient(img, "RAR")


def test_window_and_stack_are_analytic(head):
    img = head["image"]
    w = pp.window(img, 40, 80)
    ref = np.clip((img.array - 0.0) / 80.0, 0, 1)
    np.testing.assert_allclose(w.array, ref, atol=1e-6)
    np.testing.assert_array_equal(w.affine, img.affine)
    stack = pp.window_stack(img)
    assert stack.shape == (3,) + img.shape[::-1] and stack.flags.c_contiguous
    for c, (level, width) in enumerate([(40, 80), (80, 200), (600, 2800)]):
        ref = np.clip((img.array - (level - width / 2)) / width, 0, 1)
        np.testing.assert_allclose(stack[c], ref.T, atol=1e-6)


def test_crop_pad_keep_world_positions(head):
    img = head["image"]
    sub = pp.crop_or_pad(img, [10, -5, 2], [60, 40, 20], fill=-1024)
    assert sub.shape == (50, 45, 18)
    # voxel (0, 5, 0) of the crop is voxel (10, 0, 2) of the input, at the same world point
    np.testing.assert_allclose(sub.affine @ [0, 5, 0, 1], img.affine @ [10, 0, 2, 1], atol=1e-9)
    assert sub.array[0, 5, 0] == img.array[10, 0, 2]
    assert np.all(sub.array[:, :5, :] == -1024) and np.all(sub.array[:, :, 14:] == -1024)
    cc = pp.center_crop_or_pad(img, (64, 128, 16), fill=-1024)
    assert cc.shape == (64, 128, 16)
    centre_in = img.affine @ np.r_[(np.array(img.shape) - 1) / 2, 1]
    centre_out = cc.affine @ np.r_[(np.array(cc.shape) - 1) / 2, 1]
    assert np.linalg.norm(centre_in - centre_out) < np.max(img.spacing)
    fg = pp.crop_to_foreground(img, threshold=-500, margin_mm=4.0)
    head_vox = np.argwhere(img.array > -500)
    lo = head_vox.min(0)
    np.testing.assert_allclose(fg.affine @ np.r_[0, 0, 0, 1], img.affine @ np.r_[np.maximum(lo - np.ceil(4.0 / np.array(img.spacing)), 0), 1], atol=1e-9)


def test_pipeline_json_round_trip_is_bit_identical(head):
    p = (pp.Pipeline().reorient("RAS").resample_to_spacing((1.1, 1.3, 4.5), "cubic").crop_to_foreground(-500, 3.0)
         .center_crop_or_pad((96, 96, 24), -1024.0).clip(-1024, 3071).window([(40, 80), (80, 200), (600, 2800)]))
    text = p.to_json()
    q = pp.Pipeline.from_json(text)
    assert q.to_json() == text
    a, b = p.run(head["image"]), q.run(head["image"])
    assert a.input.shape == (3, 24, 96, 96)
    assert a.input.tobytes() == b.input.tobytes()
    np.testing.assert_array_equal(a.volume.affine, b.volume.affine)
    default = pp.Pipeline.default_head_ct()
    assert pp.Pipeline.from_json(default.to_json()).to_json() == default.to_json()


def test_pipeline_inverse_mapping_returns_to_the_scan_grid(head):
    img = head["image"]
    p = pp.Pipeline().reorient("RAS").resample_to_spacing((1.5, 1.5, 4.0)).crop_to_foreground(-500, 4.0).window()
    r = p.run(img)
    back = r.to_scan(r.volume)  # the network-grid HU volume carried back onto the scan grid
    assert back.shape == img.shape
    np.testing.assert_array_equal(back.affine, img.affine)
    np.testing.assert_array_equal(r.scan_affine, img.affine)
    brain = head["brain"].array > 0
    diff = np.abs(back.array - img.array)[brain]
    assert np.median(diff) < 10, np.median(diff)  # interpolation error only (two resamplings)
    # an indicator on the network grid lands where it was in the world
    vol = r.volume
    marker = np.zeros(vol.shape, np.float32)
    c = tuple(s // 2 for s in vol.shape)
    marker[c[0] - 2:c[0] + 3, c[1] - 2:c[1] + 3, c[2] - 1:c[2] + 2] = 1
    m = r.to_scan(ichkit.Volume(marker, vol.affine))
    peak = np.unravel_index(np.argmax(m.array), m.shape)
    world_peak = img.affine @ np.r_[peak, 1]
    world_centre = vol.affine @ np.r_[c, 1]
    assert np.linalg.norm(world_peak[:3] - world_centre[:3]) < 2 * max(img.spacing)


@pytest.mark.parametrize("text,why", [
    ("not json", "parse"), ('{"steps": 3}', "steps"), ('{"steps": [{"op": "explode"}]}', "unknown"),
    ('{"steps": [{"op": "resample_to_spacing", "spacing": [1, 0, 1]}]}', "positive"),
    ('{"steps": [{"op": "window", "windows": [[40, 80]]}, {"op": "reorient"}]}', "last"),
    ('{"version": 9, "steps": []}', "version"),
])
def test_pipeline_json_errors(text, why):
    with pytest.raises(ichkit.FormatError, match=why):
        pp.Pipeline.from_json(text)


def test_skull_strip_blood_against_the_inner_table():
    """A lobar bleed pressed against the skull (phantom seed 105): by default the voxels it shares
    with the inner table join the mask (>= 99.5 % of the hematoma kept, bone above 300 HU only at
    the bleed); with step 7 off (blood_core_mm=0) the 300 HU cap holds everywhere and loses some."""
    case = ichkit.phantom.make_case(seed=105, location="lobar", tilt=20, noise=6)
    hu, hem = case["image"].array, case["mask"].array > 0
    on = pp.skull_strip(case["image"]).array > 0
    off = pp.skull_strip(case["image"], blood_core_mm=0).array > 0
    kept_on = np.count_nonzero(on & hem) / np.count_nonzero(hem)
    kept_off = np.count_nonzero(off & hem) / np.count_nonzero(hem)
    assert kept_on >= 0.995 > kept_off
    assert hu[off].max() <= 300
    bone = on & (hu > 300)
    assert np.count_nonzero(bone) > 0
    # every such voxel is within 3.6 mm in-plane and 2 slices of a hematoma voxel
    near = ndimage.binary_dilation(hem, structure=np.ones((17, 17, 5), bool))
    assert not np.any(bone & ~near)
    assert not np.any(off & ~on)  # step 7 only adds
    with pytest.raises(ValueError, match="blood_rim_fraction"):
        pp.skull_strip(case["image"], blood_rim_fraction=0.9)


def test_check_hu_refuses_what_cannot_be_ct_in_hu(head):
    img = head["image"]
    a = img.array.astype(np.float32)
    pp.check_hu(img)  # a phantom in HU passes
    cases = {
        "NaN or infinite": np.where(np.indices(a.shape)[0] == 7, np.nan, a),
        "above -500 HU": np.full_like(a, -1024.0),
        "span only": np.clip((a - 0.0) / 80.0, 0, 1),  # windowed to [0, 1]
        "stored CT values, not HU": np.maximum(a + 1024.0, 0.0),  # intercept not applied
    }
    for words, arr in cases.items():
        v = ichkit.Volume(arr.astype(np.float32), affine=img.affine)
        with pytest.raises(ichkit.InvalidArgument, match=words):
            pp.check_hu(v)
    # the model refuses a scan with one NaN voxel before its pipeline; the pipeline alone stays
    # usable on other images (a mask, a map)
    b = a.copy()
    b[3, 4, 5] = np.nan
    config = ichkit.model.default_config()
    config["encoder"].update(depth=10, width=4)
    m = ichkit.model.Model(config, seed=0)
    with pytest.raises(ichkit.InvalidArgument, match=r"1 NaN or infinite voxel\(s\), the first at voxel \(3, 4, 5\)"):
        m.predict(ichkit.Volume(b, affine=img.affine))
    with pytest.raises(ichkit.InvalidArgument, match="NaN"):
        ichkit.explain.explain(m, ichkit.Volume(b, affine=img.affine), ["volume"])
    pp.Pipeline.default_head_ct().run(ichkit.Volume(head["mask"].array.astype(np.float32), affine=img.affine))


def test_check_coverage_refuses_one_image_or_a_thin_slab(head, tmp_path, cli):
    img = head["image"]
    a = img.array.astype(np.float32)
    pp.check_coverage(img)  # the phantom head passes
    spacing = np.linalg.norm(img.affine[:3, :3], axis=0)
    one = ichkit.Volume(np.ascontiguousarray(a[:, :, 10:11]), affine=img.affine)
    pp.check_hu(one)  # one slice is still HU ...
    with pytest.raises(ichkit.InvalidArgument, match=r"1 voxel\(s\) along k.*a single image"):
        pp.check_coverage(one)  # ... but not a head volume
    slab = ichkit.Volume(np.ascontiguousarray(a[:, :, 10:12]), affine=img.affine)
    with pytest.raises(ichkit.InvalidArgument, match="a thin slab"):
        pp.check_coverage(slab)
    pp.check_coverage(one, min_voxels=1, min_mm=float(spacing[2]))
    # any voxel type: the check reads the shape and the affine only
    pp.check_coverage(ichkit.Volume(a.astype(np.int16), affine=img.affine))
    # the model refuses it before its pipeline, and so does the CLI (exit 1, the scan named)
    config = ichkit.model.default_config()
    config["encoder"].update(depth=10, width=4)
    m = ichkit.model.Model(config, seed=0)
    with pytest.raises(ichkit.InvalidArgument, match="a single image"):
        m.predict(one)
    nib.save(nib.Nifti1Image(a[:, :, 10:11].astype(np.int16), img.affine), tmp_path / "one.nii.gz")
    m.save(str(tmp_path / "m.ichkit"))
    r = subprocess.run([cli, "predict", "--model", str(tmp_path / "m.ichkit"), str(tmp_path / "one.nii.gz")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert "one.nii.gz" in r.stderr and "a single image" in r.stderr


def test_check_hu_refuses_stored_values_without_bone(head):
    a = head["image"].array.astype(np.float32)
    stripped = np.where((a < 0) | (a > 100), 0.0, a).astype(np.float32)  # skull-stripped, background 0
    pp.check_hu(ichkit.Volume(stripped, affine=head["image"].affine))
    stored = np.where(stripped != 0, stripped + 1024.0, 0.0).astype(np.float32)
    assert stored.max() < 1500  # under the bone rule: only the bulk rule can tell
    with pytest.raises(ichkit.InvalidArgument, match="stored CT values, not HU"):
        pp.check_hu(ichkit.Volume(stored, affine=head["image"].affine))
