"""Python peers of the model benchmark: the same network as ichkit's (ichkit.nets.MultiTaskNet,
same parameter names, same weights) in Python torch, run the way a researcher would -
eager, and traced + frozen (torch.jit.trace, torch.jit.freeze, optimize_for_inference)."""
import importlib.util
import sys
from pathlib import Path

import torch

from timing import timeit

# the model suite's inputs (bench_model.cpp's kShapes: BM_Forward/0 and /1) and training targets
SHAPES = [(2, 3, 64, 128, 128), (2, 3, 32, 256, 256)]


def targets():
    return {"volume": torch.tensor([10.0, 30.0]), "prognosis": torch.tensor([0, 1])}


def load_nets():
    """python/ichkit/nets.py (pure PyTorch) as a module, without importing the ichkit package
    and its compiled extension - for processes that must be PyTorch as it comes."""
    spec = importlib.util.spec_from_file_location("ichkit_nets", Path(__file__).resolve().parents[1] / "python" / "ichkit" / "nets.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ichkit_nets"] = mod
    spec.loader.exec_module(mod)
    return mod


def build(config, state):
    """The PyTorch mirror with the C++ model's weights, eval mode."""
    from ichkit import nets  # here, not at the top: device_peers.py uses this module without the extension

    net = nets.MultiTaskNet(config)
    net.load_state_arrays(state)
    return net.eval()


class _Heads(torch.nn.Module):
    """forward(x) -> tuple of head outputs (what tracing needs)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        _, out = self.net(x)
        return tuple(out[k] for k in sorted(out))


def eager_forward(net, x):
    with torch.no_grad():
        return net(x)


def frozen(net, x):
    with torch.no_grad():
        traced = torch.jit.trace(_Heads(net).eval(), x, check_trace=False)
        f = torch.jit.freeze(traced)
        try:
            f = torch.jit.optimize_for_inference(f)
        except Exception:  # noqa: BLE001 - older builds: frozen is the best available
            pass
        f(x)
        f(x)
    return f


def frozen_forward(f, x):
    with torch.no_grad():
        return f(x)


def train_step(net, x, targets):
    net.train()
    net.zero_grad(set_to_none=True)
    _, out = net(x)
    loss = net.loss(out, targets)
    loss.backward()
    net.eval()
    return float(loss)


def _stock_process(argv):
    """`python model_peers.py CONFIG.json STATE.npz THREADS REPEATS`: the eager forward and
    training step in a process that has never imported ichkit - PyTorch as it comes, with
    glibc's default malloc (ichkit's import makes glibc keep freed blocks; a researcher's
    process does not). Prints JSON {label: {"eager": timing, "train_step": timing}}."""
    import json

    import numpy as np

    cfg_path, state_path, threads, repeats = argv[0], argv[1], int(argv[2]), int(argv[3])
    torch.set_num_threads(threads)
    nets = load_nets()
    assert "ichkit._core" not in sys.modules
    net = nets.MultiTaskNet(json.loads(Path(cfg_path).read_text()))
    with np.load(state_path) as z:
        net.load_state_arrays({k: z[k] for k in z.files})
    net.eval()
    out = {}
    for shape in SHAPES:
        torch.manual_seed(1)
        x = torch.rand(*shape)
        t = targets()
        out["x".join(map(str, shape[2:]))] = {"eager": timeit(lambda: eager_forward(net, x), repeats),
                                              "train_step": timeit(lambda: train_step(net, x, t), repeats)}
    print(json.dumps(out))


if __name__ == "__main__":
    _stock_process(sys.argv[1:])
