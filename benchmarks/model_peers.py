"""Python peers of the model benchmark: the same network as ichkit's (ichkit.nets.MultiTaskNet,
same parameter names, same weights) in Python torch, run the way a researcher would -
eager, and traced + frozen (torch.jit.trace, torch.jit.freeze, optimize_for_inference)."""
import torch


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
