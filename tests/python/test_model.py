"""ichkit.model.Model: the model file read and written by an independent pure-Python codec of
the documented format (include/ichkit/model/model.h), corrupt variants refused with clear
errors, predictions in user units on the scan's grid."""
import json
import struct
import zlib

import numpy as np
import pytest

import ichkit

MAGIC, END = b"ICHKITMF", b"ICHKEND\n"


def small_config(seed_heads=True):
    p = ichkit.preprocess.Pipeline().reorient("RAS").resample_to_spacing([4.0, 4.0, 5.0]).center_crop_or_pad([48, 48, 16]).window()
    return {
        "encoder": {"depth": 10, "width": 4, "in_channels": 3},
        "heads": [
            {"name": "volume", "type": "regression", "target": "volume_ml", "params": {"transform": "log1p", "mean": 2.0, "sd": 1.5}},
            {"name": "prognosis", "type": "classification", "target": "outcome", "params": {"classes": ["good", "poor"]}},
            {"name": "mrs", "type": "ordinal", "target": "mrs", "params": {"num_classes": 7}},
            {"name": "seg", "type": "segmentation", "target": "mask", "params": {"channels": 4}},
        ],
        "pipeline": json.loads(p.to_json()),
    }


def decode(data: bytes):
    """Independent reader of the model file format: (version, header dict, {name: array})."""
    assert data[:8] == MAGIC
    version, _reserved, hlen = struct.unpack_from("<IIQ", data, 8)
    pos = 24
    header = json.loads(data[pos:pos + hlen])
    pos += hlen
    (dlen,) = struct.unpack_from("<Q", data, pos)
    pos += 8
    blob = data[pos:pos + dlen]
    pos += dlen
    (crc,) = struct.unpack_from("<I", data, pos)
    assert crc == zlib.crc32(data[:pos])
    assert data[pos + 4:] == END
    tensors = {}
    for t in header["tensors"]:
        dt = {"float32": "<f4", "int64": "<i8"}[t["dtype"]]
        a = np.frombuffer(blob, dtype=dt, count=int(np.prod(t["shape"], dtype=np.int64)), offset=t["offset"])
        tensors[t["name"]] = a.reshape(t["shape"])
    return version, header, tensors


def encode(header, tensors, version=1):
    """Independent writer of the format (64-byte aligned tensors, CRC-32, end marker)."""
    blob = bytearray()
    entries = []
    for name, a in tensors.items():
        a = np.require(a, requirements="C")  # (ascontiguousarray would make 0-d arrays 1-d)
        blob += b"\0" * ((-len(blob)) % 64)
        entries.append({"name": name, "dtype": {np.dtype("float32"): "float32", np.dtype("int64"): "int64"}[a.dtype],
                        "shape": list(a.shape), "offset": len(blob), "bytes": a.nbytes})
        blob += a.astype(a.dtype.newbyteorder("<")).tobytes()
    h = dict(header)
    h["tensors"] = entries
    hb = json.dumps(h).encode()
    out = MAGIC + struct.pack("<IIQ", version, 0, len(hb)) + hb + struct.pack("<Q", len(blob)) + bytes(blob)
    return out + struct.pack("<I", zlib.crc32(out)) + END


@pytest.fixture(scope="module")
def model():
    return ichkit.model.Model(small_config(), seed=3)


@pytest.fixture(scope="module")
def scan():
    return ichkit.phantom.make_case(seed=4, shape=[128, 128, 16], spacing=[1.8, 1.8, 10.0], supersample=1)["image"]


def test_file_written_by_ichkit_decodes_independently(model, tmp_path):
    path = tmp_path / "m.ichkit"
    model.save(str(path))
    version, header, tensors = decode(path.read_bytes())
    assert version == 1
    state = model.state_dict()
    assert set(tensors) == set(state)
    for k, v in state.items():
        assert tensors[k].dtype == v.dtype and tensors[k].shape == v.shape
        np.testing.assert_array_equal(tensors[k], v)
    assert header["config"]["heads"][0]["params"]["mean"] == 2.0
    assert header["metadata"]["ichkit_version"] == ichkit.__version__
    assert [p.name for p in tmp_path.iterdir()] == ["m.ichkit"]  # no temporary left


def test_file_written_independently_loads_in_ichkit(model, scan):
    _, header, tensors = decode(model.to_bytes())
    rng = np.random.default_rng(0)
    new = {k: (rng.standard_normal(v.shape).astype(np.float32) * 0.05 if v.dtype == np.float32 else v) for k, v in tensors.items()}
    # BatchNorm variances must stay positive
    for k in new:
        if k.endswith("running_var"):
            new[k] = np.abs(new[k]) + 0.5
    m2 = ichkit.model.Model.from_bytes(encode(header, new))
    for k, v in m2.state_dict().items():
        np.testing.assert_array_equal(v, new[k])
    p = m2.predict(scan)
    assert np.isfinite(p["volume"]["value"])


def test_python_and_cpp_round_trip_is_exact(model, scan, tmp_path):
    model.metadata = {**model.metadata, "training": {"epochs": 2}}
    model.save(str(tmp_path / "a.ichkit"))
    b = ichkit.model.Model.load(str(tmp_path / "a.ichkit"))
    assert b.config == model.config
    assert b.metadata["training"] == {"epochs": 2}
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)
    pa, pb = model.predict(scan), b.predict(scan)
    assert pa["volume"]["value"] == pb["volume"]["value"]
    assert pa["mrs"]["probabilities"] == pb["mrs"]["probabilities"]


def corrupt_variants(good: bytes):
    _, header, tensors = decode(good)
    name0 = next(iter(tensors))
    v = {}
    v["empty file"] = (b"", "bad magic")
    v["a PNG"] = (b"\x89PNG\r\n\x1a\n" + good[8:], "bad magic")
    v["truncated in the header"] = (good[:40], "truncated")
    v["truncated in the weights"] = (good[: len(good) // 2], "truncated")
    v["last bytes missing"] = (good[:-5], "truncated")
    v["unknown format version"] = (good[:8] + struct.pack("<I", 7) + good[12:], "version 7 is not supported")
    flip = bytearray(good)
    flip[len(good) - 200] ^= 0x04
    v["one bit flipped in the weights"] = (bytes(flip), "checksum")
    flip = bytearray(good)
    flip[30] ^= 0x20
    v["one bit flipped in the header"] = (bytes(flip), "checksum")
    v["bytes appended"] = (good + b"\0", "unexpected bytes")
    bad = dict(tensors)
    bad[name0] = np.zeros((3, 3), np.float32)
    v["a weight of the wrong shape"] = (encode(header, bad), "has shape")
    bad = dict(tensors)
    del bad[name0]
    v["a weight missing"] = (encode(header, bad), "is missing")
    bad = dict(tensors)
    bad["encoder.extra"] = np.zeros(3, np.float32)
    v["an unexpected weight"] = (encode(header, bad), "unexpected tensor")
    bad = {k: a.copy() for k, a in tensors.items()}
    bad[name0].flat[0] = np.nan
    v["NaN in the weights"] = (encode(header, bad), "NaN")
    h2 = json.loads(json.dumps(header))
    h2["config"]["heads"][0]["type"] = "made_up"
    v["an unknown head type"] = (encode(h2, tensors), "unknown type 'made_up'")
    h2 = json.loads(json.dumps(header))
    h2["config"]["encoder"]["depth"] = 50
    v["an unknown depth"] = (encode(h2, tensors), "depth")
    # hostile configs in a small file: refused before the network is allocated
    h2 = json.loads(json.dumps(header))
    h2["config"]["encoder"]["width"] = 1024
    v["an encoder of billions of weights in a small file"] = (encode(h2, tensors), "describes an encoder of")
    h2 = json.loads(json.dumps(header))
    h2["config"]["heads"][0]["params"]["hidden"] = 10**9
    v["a head with a billion hidden units"] = (encode(h2, tensors), "hidden must be in [0, 4096]")
    return v


def test_corrupt_model_files_are_refused_with_clear_errors(model, tmp_path):
    variants = corrupt_variants(model.to_bytes())
    assert len(variants) >= 10
    for what, (data, needle) in variants.items():
        path = tmp_path / "bad.ichkit"
        path.write_bytes(data)
        with pytest.raises(ichkit.FormatError) as e:
            ichkit.model.Model.load(str(path))
        assert needle in str(e.value), (what, str(e.value))
        assert str(path) in str(e.value)  # the message names the file
        assert isinstance(e.value, ValueError)


def test_a_pipeline_asking_for_a_huge_grid_is_refused_before_allocation(model, scan):
    _, header, tensors = decode(model.to_bytes())
    h2 = json.loads(json.dumps(header))
    h2["config"]["pipeline"] = {"version": 1, "steps": [{"op": "resample_to_shape", "shape": [65536, 65536, 4096]},
                                                         {"op": "window"}]}
    m = ichkit.model.Model.from_bytes(encode(h2, tensors))
    with pytest.raises(ichkit.ResourceError, match="over the memory budget"):
        m.predict(scan)
    # and a budget below an ordinary scan refuses that too, then the default comes back
    old = ichkit.memory_budget()
    try:
        ichkit.set_memory_budget(1 << 16)
        with pytest.raises(ichkit.ResourceError, match="memory budget of 0 MiB"):
            model.predict(scan)
    finally:
        ichkit.set_memory_budget(old)
    assert np.isfinite(model.predict(scan)["volume"]["value"])


def test_missing_file_and_size_limit(model, tmp_path):
    with pytest.raises(ichkit.IoError):
        ichkit.model.Model.load(str(tmp_path / "nope.ichkit"))
    model.save(str(tmp_path / "m.ichkit"))
    with pytest.raises(ichkit.ResourceError):
        ichkit.model.Model.load(str(tmp_path / "m.ichkit"), max_bytes=1000)


def test_predict_units_and_scan_grid(model, scan):
    p = model.predict(scan)
    assert set(p) == {"volume", "prognosis", "mrs", "seg"}
    assert p["volume"]["value"] >= 0
    assert sum(p["prognosis"]["probabilities"]) == pytest.approx(1.0)
    assert p["prognosis"]["classes"] == ["good", "poor"]
    assert len(p["mrs"]["probabilities"]) == 7 and min(p["mrs"]["probabilities"]) >= 0
    seg = p["seg"]
    assert seg["probability_map"].shape == scan.shape
    np.testing.assert_array_equal(seg["probability_map"].affine, scan.affine)
    mask = seg["mask"].array
    np.testing.assert_array_equal(mask, (seg["probability_map"].array >= 0.5).astype(np.uint8))
    assert seg["value"] == pytest.approx(mask.sum() * abs(np.linalg.det(scan.affine[:3, :3])) / 1000)
    many = model.predict([scan, scan], batch_size=2)
    assert many[1]["volume"]["value"] == pytest.approx(p["volume"]["value"], rel=1e-5)


def test_bad_configs_are_refused():
    cfg = small_config()
    cfg["heads"][1]["name"] = "volume"
    with pytest.raises(ichkit.FormatError, match="two heads"):
        ichkit.model.Model(cfg)
    cfg = small_config()
    cfg["encoder"]["widht"] = 3
    with pytest.raises(ichkit.FormatError, match="widht"):
        ichkit.model.Model(cfg)
    assert set(ichkit.model.head_types()) >= {"regression", "classification", "ordinal", "segmentation"}


def test_predict_files_equals_predict_and_reports_bad_files(model, scan, tmp_path):
    import nibabel as nib

    paths = []
    for s in range(3):
        case = ichkit.phantom.make_case(seed=20 + s, shape=[96, 96, 12], spacing=[2.4, 2.4, 10.0], supersample=1)
        p = tmp_path / f"s{s}.nii.gz"
        # written by nibabel, an independent writer, as int16 like a scanner's export
        nib.save(nib.Nifti1Image(np.rint(case["image"].array).astype(np.int16), case["image"].affine), str(p))
        paths.append(str(p))
    (tmp_path / "bad.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    paths.insert(1, str(tmp_path / "bad.nii.gz"))
    seen = []

    class Bar:  # tqdm-like
        def __init__(self, total=None, desc=None):
            seen.append(("begin", total, desc))

        def update(self, n):
            seen.append(n)

        def close(self):
            seen.append("close")

    got = model.predict_files(paths, batch_size=2, readers=2, progress=Bar)
    # one step per scan: the bad file alone, then the batches of 2 and 1 (or a batch that failed)
    assert seen[0] == ("begin", 4, "predict") and seen[-1] == "close" and sum(seen[1:-1]) == 4
    # readers whose kernels run on one thread each (a GPU's default) give the same answers
    capped = model.predict_files(paths, batch_size=2, readers=3, reader_threads=1)
    assert [c["ok"] for c in capped] == [g["ok"] for g in got]
    # both schedules (readers beside the network, or only while it is not running)
    overlap = model.predict_files(paths, batch_size=2, readers=2, reader_threads=1, schedule="overlap")
    alternate = model.predict_files(paths, batch_size=3, readers=2, reader_threads=1, schedule="alternate")
    for other in (overlap, alternate):
        assert [o["ok"] for o in other] == [g["ok"] for g in got]
        for o, g in zip(other, got):
            if g["ok"]:
                assert o["prediction"]["volume"]["value"] == pytest.approx(g["prediction"]["volume"]["value"], rel=1e-5)
    with pytest.raises(ichkit.InvalidArgument, match="schedule"):
        model.predict_files(paths, schedule="parallel")
    for c, g in zip(capped, got):
        if g["ok"]:
            assert c["prediction"]["volume"]["value"] == pytest.approx(g["prediction"]["volume"]["value"], rel=1e-6)
            assert np.array_equal(c["prediction"]["seg"]["mask"].array, g["prediction"]["seg"]["mask"].array)
    with pytest.raises(ValueError):
        model.predict_files(paths, reader_threads=-1)
    assert [g["path"] for g in got] == paths
    assert not got[1]["ok"] and got[1]["prediction"] is None and got[1]["error"]
    for g in (got[0], got[2], got[3]):
        assert g["ok"], g["error"]
        img = nib.load(g["path"])
        want = model.predict(ichkit.Volume(img.get_fdata(dtype=np.float32), img.affine))
        assert g["prediction"]["volume"]["value"] == pytest.approx(want["volume"]["value"], rel=1e-5)
        assert g["prediction"]["prognosis"]["probabilities"] == pytest.approx(want["prognosis"]["probabilities"], rel=1e-5)
        assert g["prediction"]["seg"]["mask"].shape == img.shape


def test_set_device_refuses_what_this_build_cannot_run(scan):
    m = ichkit.model.Model(small_config(), seed=5)
    before = m.predict(scan)["volume"]["value"]
    assert (m.device, m.precision) == ("cpu", "float32")
    with pytest.raises(ValueError, match="not a device|only cpu and cuda"):
        m.set_device("tpu")
    with pytest.raises(ValueError, match="for CUDA"):
        m.set_device("cpu", "bfloat16")
    if not ichkit.runtime_info()["cuda"]:
        with pytest.raises(ValueError, match="no CUDA device"):
            m.set_device("cuda")
    assert m.device == "cpu"
    m.set_device("cpu")
    assert m.predict(scan)["volume"]["value"] == before
