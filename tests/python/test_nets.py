"""ichkit.nets (the pure-PyTorch mirror of the C++ multi-task network) against the LibTorch
network behind ichkit.model.Model: the same state names, shapes and dtypes, the same initial
weights for a seed, and - with the C++ weights copied into the mirror - the same stage maps and
raw head outputs to float rounding, for ResNet-10/18, all four head types, batch norm in eval
mode with default and with random running statistics, and instance / group norm."""
import numpy as np
import pytest
import torch

from ichkit import model as ichkit_model
from ichkit import nets

RTOL = 1e-5  # of the largest magnitude of the compared map


def tiny(depth=10, norm="batch", weighting="fixed", width=4, **encoder):
    """A small config with one head of every built-in type (and a hidden layer + dropout on one)."""
    enc = {"depth": depth, "width": width, "in_channels": 3, "norm": norm}
    enc.update(encoder)
    return {
        "encoder": enc,
        "heads": [
            {"name": "volume", "type": "regression", "target": "volume_ml",
             "params": {"transform": "log1p", "mean": 2.5, "sd": 1.25}},
            {"name": "prognosis", "type": "classification", "target": "outcome",
             "params": {"classes": ["good", "poor"], "hidden": 6, "dropout": 0.25}},
            {"name": "mrs", "type": "ordinal", "target": "mrs", "weight": 0.5, "params": {"num_classes": 7}},
            {"name": "seg", "type": "segmentation", "target": "mask", "params": {"channels": 4}},
        ],
        "weighting": weighting,
    }


def assert_close(got, want, what):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(1.0, float(np.abs(want).max()) if want.size else 1.0)
    err = float(np.abs(got - want).max()) if want.size else 0.0
    assert err <= RTOL * scale, f"{what}: max |diff| {err:.3g} over a magnitude of {scale:.3g}"


def input_batch(seed=0, shape=(2, 3, 8, 32, 32)):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def randomise_state(net, seed):
    """Random norm scales / shifts, running statistics, thresholds and log_vars: every value that
    a freshly initialised network holds at 0 or 1 and so could hide a mix-up."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(7)
            elif name.endswith("running_mean"):
                t.copy_(0.3 * torch.randn(t.shape, generator=g))
            elif name.endswith("running_var"):
                t.copy_(0.5 + 1.5 * torch.rand(t.shape, generator=g))
            elif t.dim() == 1 and (".bn" in name or "stem.1" in name or "downsample.1" in name or ".norm." in name):
                if name.endswith(".weight"):
                    t.copy_(0.5 + torch.rand(t.shape, generator=g))
                else:
                    t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif name.endswith("thresholds") or name == "log_vars" or name.endswith(".bias"):
                t.copy_(0.2 * torch.randn(t.shape, generator=g))


def compare_forward(m, net, x):
    with torch.no_grad():
        stages, out = net(torch.from_numpy(x))
    cpp_stages = m.stages(x)
    assert len(cpp_stages) == 5
    for name, got, want in zip(nets.STAGE_NAMES, stages, cpp_stages):
        assert_close(got.numpy(), want, f"stage {name}")
    cpp_out = m.forward(x)
    assert sorted(cpp_out) == sorted(out)
    for name, want in cpp_out.items():
        assert_close(out[name].numpy(), want, f"head {name}")


@pytest.mark.parametrize("depth", [10, 18])
@pytest.mark.parametrize("norm", ["batch", "instance", "group"])
@pytest.mark.parametrize("weighting", ["fixed", "uncertainty"])
def test_state_names_shapes_and_dtypes_match(depth, norm, weighting):
    cfg = tiny(depth, norm, weighting)
    cpp = ichkit_model.Model(cfg, seed=1).state_dict()
    py = nets.MultiTaskNet(cfg).state_dict()
    assert sorted(cpp) == sorted(py)
    for name, t in py.items():
        assert tuple(cpp[name].shape) == tuple(t.shape), name
        assert np.dtype(cpp[name].dtype) == t.numpy().dtype, name
    assert ("log_vars" in py) == (weighting == "uncertainty")
    if norm == "batch":
        assert py["encoder.stem.1.num_batches_tracked"].dtype == torch.int64
    else:
        assert not any("running" in k or "num_batches" in k for k in py)


def test_parameter_names_follow_pytorch():
    names = set(ichkit_model.Model(tiny(18, weighting="uncertainty")).state_dict())
    for n in ["encoder.stem.0.weight", "encoder.stem.1.running_mean", "encoder.layer1.0.conv1.weight",
              "encoder.layer1.0.bn1.weight", "encoder.layer2.0.downsample.0.weight",
              "encoder.layer2.0.downsample.1.weight", "encoder.layer4.1.bn2.running_var",
              "heads.volume.fc.weight", "heads.prognosis.fc1.weight", "heads.mrs.thresholds",
              "heads.seg.lateral0.weight", "heads.seg.lateral4.bias", "heads.seg.smooth.weight",
              "heads.seg.norm.weight", "heads.seg.out.bias", "log_vars"]:
        assert n in names, n
    assert "encoder.layer1.0.downsample.0.weight" not in names  # same shape: identity shortcut
    assert "heads.seg.smooth.bias" not in names


@pytest.mark.parametrize("depth", [10, 18])
def test_initial_weights_equal_for_a_seed(depth):
    # the mirror replays initialise() of src/model/model.cpp: same generator, same draws, same order
    cfg = tiny(depth, weighting="uncertainty")
    cpp = ichkit_model.Model(cfg, seed=5).state_dict()
    py = nets.MultiTaskNet(cfg, seed=5).to_state_arrays()
    for name, want in cpp.items():
        np.testing.assert_array_equal(py[name], want, err_msg=name)


@pytest.mark.parametrize("depth", [10, 18])
@pytest.mark.parametrize("stats", ["initial", "random"])
def test_forward_matches_cpp_batch_norm_eval(depth, stats):
    m = ichkit_model.Model(tiny(depth), seed=3)
    net = nets.MultiTaskNet.from_ichkit(m)
    assert not net.training
    if stats == "random":
        randomise_state(net, seed=depth)
        m.load_state_dict(net.to_state_arrays())
        back = m.state_dict()
        for name, want in net.to_state_arrays().items():
            np.testing.assert_array_equal(back[name], want, err_msg=name)
    compare_forward(m, net, input_batch(depth))


@pytest.mark.parametrize("norm", ["instance", "group"])
def test_forward_matches_cpp_instance_and_group_norm(norm):
    # layer4 is 1x1x1 here: instance norm of a single element, which LibTorch accepts
    m = ichkit_model.Model(tiny(10, norm), seed=4)
    net = nets.MultiTaskNet.from_ichkit(m)
    randomise_state(net, seed=11)
    m.load_state_dict(net.to_state_arrays())
    compare_forward(m, net, input_batch(2))


def test_forward_matches_cpp_other_stem():
    # no max-pool, a (1, 3, 3) stem kernel with stride 1, width 6, a batch of one
    cfg = tiny(10, "batch", width=6, stem_kernel=[1, 3, 3], stem_stride=[1, 1, 1], stem_pool=False)
    m = ichkit_model.Model(cfg, seed=6)
    net = nets.MultiTaskNet.from_ichkit(m)
    randomise_state(net, seed=6)
    m.load_state_dict(net.to_state_arrays())
    x = input_batch(3, (1, 3, 4, 16, 16))
    compare_forward(m, net, x)
    with torch.no_grad():
        stages, _ = net(torch.from_numpy(x))
    assert [tuple(s.shape[2:]) for s in stages] == [(4, 16, 16), (4, 16, 16), (2, 8, 8), (1, 4, 4), (1, 2, 2)]


def test_config_round_trips_through_the_model():
    cfg = tiny(10)
    m = ichkit_model.Model(cfg)
    net = nets.MultiTaskNet.from_ichkit(m)
    got = net.config
    want = m.config
    assert got["encoder"] == want["encoder"]
    assert [h["name"] for h in got["heads"]] == [h["name"] for h in want["heads"]]
    assert [h["params"] for h in got["heads"]] == [h["params"] for h in want["heads"]]


@pytest.mark.parametrize("depth", [10, 18, 34])
@pytest.mark.parametrize("norm", ["batch", "instance", "group"])
def test_mirror_shapes(depth, norm):
    cfg = tiny(depth, norm)
    cfg["encoder"]["in_channels"] = 2
    net = nets.MultiTaskNet(cfg).eval()
    with torch.no_grad():
        stages, out = net(torch.randn(2, 2, 8, 32, 32))
    assert [tuple(s.shape) for s in stages] == [(2, 4, 8, 16, 16), (2, 4, 8, 8, 8), (2, 8, 4, 4, 4),
                                                (2, 16, 2, 2, 2), (2, 32, 1, 1, 1)]
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "volume": (2,), "prognosis": (2, 2), "mrs": (2, 6), "seg": (2, 8, 32, 32)}
    blocks = sum(1 for k in net.state_dict() if k.endswith(".conv1.weight"))
    assert blocks == sum(nets.blocks_per_stage(depth))


def test_mirror_losses_skip_unlabelled_rows():
    net = nets.MultiTaskNet(tiny(10), seed=0).train()
    x = torch.randn(2, 3, 8, 32, 32)
    stages, out = net(x)
    per = {}
    total = net.loss((stages, out), {
        "volume": torch.tensor([10.0, float("nan")]),
        "prognosis": torch.tensor([-1, -1]),
        "mrs": torch.tensor([3, 6]),
        "seg": nets.Target(torch.zeros(2, 8, 32, 32), present=torch.tensor([False, False])),
    }, per)
    assert set(per) == {"volume", "mrs"}
    assert float(total) == pytest.approx(per["volume"] * 1.0 + per["mrs"] * 0.5, rel=1e-6)
    total.backward()
    g = net.heads["prognosis"].fc.weight.grad
    assert g is None or float(g.abs().sum()) == 0
    assert float(net.heads["volume"].fc.weight.grad.abs().sum()) > 0
    # no labels at all: a zero that still carries the graph
    stages, out = net(x)
    zero = net.loss(out, {"volume": torch.tensor([float("nan")] * 2)})
    assert float(zero) == 0 and zero.requires_grad


def test_mirror_user_units():
    net = nets.MultiTaskNet(tiny(10), seed=0).eval()
    with torch.no_grad():
        _, out = net(torch.randn(2, 3, 8, 32, 32))
        user = net.to_user(out)
    np.testing.assert_allclose(user["volume"].numpy(), np.expm1(out["volume"].numpy() * 1.25 + 2.5).clip(min=0),
                               rtol=1e-5)
    np.testing.assert_allclose(user["prognosis"].sum(1).numpy(), 1, rtol=1e-6)
    assert tuple(user["mrs"].shape) == (2, 7)
    np.testing.assert_allclose(user["mrs"].sum(1).numpy(), 1, rtol=1e-6)
    assert float(user["seg"].min()) >= 0 and float(user["seg"].max()) <= 1
    net.head("volume").fit_targets([1.0, 5.0, float("nan"), 30.0])
    t = np.log1p([1.0, 5.0, 30.0])
    assert net.config["heads"][0]["params"]["mean"] == pytest.approx(t.mean())
    assert net.config["heads"][0]["params"]["sd"] == pytest.approx(t.std(ddof=1))


def test_default_config_matches_cpp():
    want = ichkit_model.default_config()
    got = nets.default_config()
    assert got["encoder"] == want["encoder"]
    assert got["heads"] == want["heads"]
    assert got["weighting"] == want["weighting"]
