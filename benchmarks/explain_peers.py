"""Python peers of the explain benchmark: Grad-CAM of both heads (volume, prognosis) at layer4
of the same network (ichkit.nets.MultiTaskNet with ichkit's weights), the two ways people write
it with hooks:

* lean: weights frozen (requires_grad False), so the stages before layer4 run without a graph;
  a forward hook makes layer4's output a leaf that requires a gradient and keeps it;
  torch.autograd.grad of each head's target to that activation only, the two maps from one
  pass, upsampled with F.interpolate (trilinear) to the input grid.
* pytorch-grad-cam style: what `GradCAM(model, target_layers=[layer4])(x, targets)` does for one
  target, run once per head - forward with activation and gradient hooks, model.zero_grad(),
  loss.backward(retain_graph=True) through every layer and into every weight, maps in numpy,
  resized with scipy.ndimage.zoom, min-max scaled.
"""
import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F


def _targets(out):
    return [out["volume"], out["prognosis"][:, 1]]


def lean(net, x):
    for p in net.parameters():
        p.requires_grad_(False)
    store = {}

    def keep(m, i, o):
        store["a"] = o.requires_grad_(True)
        return store["a"]

    h = net.encoder.layer4.register_forward_hook(keep)
    try:
        _, out = net(x)
        a = store["a"]
        maps = []
        ys = _targets(out)
        for k, y in enumerate(ys):
            (g,) = torch.autograd.grad(y.sum(), a, retain_graph=k + 1 < len(ys))
            with torch.no_grad():
                cam = (g.mean((2, 3, 4), keepdim=True) * a).sum(1, keepdim=True)
                maps.append(F.interpolate(cam, size=x.shape[2:], mode="trilinear", align_corners=False)[:, 0])
        return maps
    finally:
        h.remove()
        for p in net.parameters():
            p.requires_grad_(True)


def pytorch_grad_cam_style(net, x):
    maps = []
    for pick in (lambda o: o["volume"], lambda o: o["prognosis"][:, 1]):
        store = {}

        def fwd(m, i, o):
            store["a"] = o.detach().cpu().numpy()
            o.register_hook(lambda g: store.__setitem__("g", g.detach().cpu().numpy()))

        h = net.encoder.layer4.register_forward_hook(fwd)
        try:
            _, out = net(x)
            net.zero_grad()
            pick(out).sum().backward(retain_graph=True)
        finally:
            h.remove()
        a, g = store["a"], store["g"]
        cam = np.maximum((g.mean(axis=(2, 3, 4), keepdims=True) * a).sum(1), 0)
        zoomed = []
        for c in cam:
            z = ndi.zoom(c, np.array(x.shape[2:]) / np.array(c.shape), order=1)
            z = z - z.min()
            zoomed.append(z / (1e-7 + z.max()))
        maps.append(np.stack(zoomed))
    return maps
