"""The ichkit multi-task network in plain PyTorch: a mirror of the C++ network for reference and
benchmarking.

``ichkit.model.Model`` runs a LibTorch network (``include/ichkit/model/net.h``,
``src/model/net.cpp``, ``src/model/heads.cpp``). This module builds the *same* network from the
same JSON config with ``torch.nn`` only, so that

* its ``state_dict()`` has exactly the names, shapes and dtypes of the C++ ``named_parameters`` +
  ``named_buffers`` (``encoder.stem.0.weight``, ``encoder.layer1.0.bn1.running_mean``,
  ``encoder.layer2.0.downsample.1.weight``, ``heads.volume.fc.weight``, ``heads.mrs.thresholds``,
  ``heads.seg.lateral0.weight``, ``log_vars``, ...), and weights move both ways
  (``MultiTaskNet.from_ichkit(model)``, ``to_state_arrays()`` -> ``model.load_state_dict``);
* its forward pass does the same operations in the same order, so with the same weights the
  stage maps and raw head outputs agree with the C++ ones to float rounding;
* ``MultiTaskNet(config, seed=s)`` draws the same initial weights as ``ichkit.model.Model(config,
  seed=s)`` (the same generator and the same draws in the same order);
* losses, ``to_user`` and ``fit_targets`` follow the C++ heads (NaN / -1 / ``present`` mean "no
  label").

It is (a) the independent reference of the C++ network in the tests, (b) "the same network in
Python torch" for benchmarks, and (c) a hookable network for a hook-based Grad-CAM reference
(``encoder.stem``, ``encoder.layer1`` .. ``encoder.layer4`` are ordinary modules; the C++ encoder
returns the same maps from its forward because LibTorch modules have no hooks).

Tensor layout: input ``(N, C, D, H, W)`` = ``(N, C, nk, nj, ni)`` of the pipeline's output grid;
``forward(x)`` returns ``(stages, outputs)`` with ``stages`` the five maps [stem (before the
max-pool), layer1, layer2, layer3, layer4] and ``outputs`` the raw head outputs by name:
regression (N,) standardised, classification (N, K) logits, ordinal (N, K-1) logits of
"y > k", segmentation (N, D, H, W) mask logits.

Two deliberate departures from stock ``torch.nn`` keep the mirror exact: instance and group norm
call ``torch.instance_norm`` / ``torch.group_norm`` directly, as LibTorch's modules do, because
the Python functionals refuse a single spatial element (e.g. a 1x1x1 ``layer4`` map) that
LibTorch normalises without complaint; and head names are inserted into ``heads`` without
``nn.ModuleDict``'s attribute-clash check, so a head may be called ``type`` or ``training``.

    >>> from ichkit.nets import MultiTaskNet, default_config
    >>> net = MultiTaskNet(default_config(), seed=0).eval()
    >>> stages, out = net(torch.randn(1, 3, 24, 128, 128))
    >>> net.to_user(out)["volume"]      # mL
"""
from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BasicBlock",
    "ClassificationHead",
    "GroupNorm",
    "Head",
    "InstanceNorm3d",
    "MultiTaskNet",
    "OrdinalHead",
    "RegressionHead",
    "ResNet3d",
    "SegmentationHead",
    "Target",
    "blocks_per_stage",
    "default_config",
    "head_types",
    "normalise_config",
    "register_head",
    "stage_channels",
]

STAGE_NAMES = ("stem", "layer1", "layer2", "layer3", "layer4")

_ENCODER_DEFAULTS: Dict[str, Any] = {
    "depth": 18,
    "width": 32,
    "in_channels": 3,
    "stem_stride": [1, 2, 2],
    "stem_kernel": [3, 7, 7],
    "stem_pool": True,
    "norm": "batch",
}


# ---- config ------------------------------------------------------------------------------

def default_config() -> Dict[str, Any]:
    """``ModelConfig::default_multitask()`` in JSON form, without the pipeline: ResNet-18 width 32
    on 3 channels, a ``volume`` regression head (log1p of ``volume_ml``) and a ``prognosis``
    classification head (``outcome``, classes good / poor), fixed weighting."""
    return {
        "encoder": copy.deepcopy(_ENCODER_DEFAULTS),
        "heads": [
            {"name": "volume", "type": "regression", "target": "volume_ml", "weight": 1.0,
             "params": {"transform": "log1p"}},
            {"name": "prognosis", "type": "classification", "target": "outcome", "weight": 1.0,
             "params": {"classes": ["good", "poor"]}},
        ],
        "weighting": "fixed",
    }


def _is_number(v: Any) -> bool:
    # nlohmann::json converts booleans and numbers to arithmetic types alike
    return isinstance(v, numbers.Real)


def _get_int(j: dict, key: str, fallback: int, where: str) -> int:
    if key not in j or j[key] is None:
        return fallback
    if not _is_number(j[key]):
        raise ValueError(f"model config: '{where}.{key}' has the wrong type: {j[key]!r}")
    return int(j[key])


def _get_float(j: dict, key: str, fallback: float, where: str) -> float:
    if key not in j or j[key] is None:
        return fallback
    if not _is_number(j[key]):
        raise ValueError(f"model config: '{where}.{key}' has the wrong type: {j[key]!r}")
    return float(j[key])


def _get_triple(j: dict, key: str, fallback: List[int], where: str) -> List[int]:
    # nlohmann's std::array<int, 3> reads elements 0..2 (and ignores any further ones)
    if key not in j or j[key] is None:
        return list(fallback)
    v = j[key]
    if not isinstance(v, (list, tuple)) or len(v) < 3 or not all(_is_number(x) for x in v[:3]):
        raise ValueError(f"model config: '{where}.{key}' has the wrong type: {v!r}")
    return [int(x) for x in v[:3]]


def _get_str(j: dict, key: str, fallback: str, where: str) -> str:
    if key not in j or j[key] is None:
        return fallback
    if not isinstance(j[key], str):
        raise ValueError(f"model config: '{where}.{key}' has the wrong type: {j[key]!r}")
    return j[key]


def _check_keys(j: dict, known: Sequence[str], where: str) -> None:
    for k in j:
        if k not in known:
            raise ValueError(f"model config: unknown field '{where}.{k}'")


def normalise_config(config: Dict[str, Any]) -> Dict[str, Any]:
    """The full JSON form of a config, as ``ModelConfig::from_json(config).to_json()`` gives it
    (defaults filled in, the pipeline passed through untouched), after the same checks as
    ``ModelConfig::validate`` except the pipeline's. Raises ValueError naming the field."""
    if not isinstance(config, dict):
        raise ValueError("model config: expected a JSON object")
    _check_keys(config, ("encoder", "heads", "weighting", "pipeline"), "config")
    enc = dict(_ENCODER_DEFAULTS)
    if "encoder" in config:
        e = config["encoder"]
        if not isinstance(e, dict):
            raise ValueError("model config: 'encoder' must be an object")
        _check_keys(e, tuple(_ENCODER_DEFAULTS), "encoder")
        enc["depth"] = _get_int(e, "depth", enc["depth"], "encoder")
        enc["width"] = _get_int(e, "width", enc["width"], "encoder")
        enc["in_channels"] = _get_int(e, "in_channels", enc["in_channels"], "encoder")
        enc["stem_stride"] = _get_triple(e, "stem_stride", enc["stem_stride"], "encoder")
        enc["stem_kernel"] = _get_triple(e, "stem_kernel", enc["stem_kernel"], "encoder")
        if e.get("stem_pool") is not None:
            if not isinstance(e["stem_pool"], bool):
                raise ValueError(f"model config: 'encoder.stem_pool' has the wrong type: {e['stem_pool']!r}")
            enc["stem_pool"] = e["stem_pool"]
        enc["norm"] = _get_str(e, "norm", enc["norm"], "encoder")
    enc["stem_stride"] = list(enc["stem_stride"])
    enc["stem_kernel"] = list(enc["stem_kernel"])
    if not isinstance(config.get("heads"), list):
        raise ValueError("model config: 'heads' must be a list")
    heads = []
    for h in config["heads"]:
        if not isinstance(h, dict):
            raise ValueError("model config: every head must be an object")
        _check_keys(h, ("name", "type", "target", "weight", "params"), "heads[]")
        hc = {
            "name": _get_str(h, "name", "", "heads[]"),
            "type": _get_str(h, "type", "", "heads[]"),
            "target": _get_str(h, "target", "", "heads[]"),
            "weight": _get_float(h, "weight", 1.0, "heads[]"),
            "params": {},
        }
        if "params" in h:
            if not isinstance(h["params"], dict):
                raise ValueError(f"model config: head '{hc['name']}': 'params' must be an object")
            hc["params"] = copy.deepcopy(h["params"])
        heads.append(hc)
    out = {"encoder": enc, "heads": heads, "weighting": _get_str(config, "weighting", "fixed", "config"),
           "pipeline": copy.deepcopy(config.get("pipeline"))}
    _validate(out)
    return out


def _validate(c: Dict[str, Any]) -> None:
    e = c["encoder"]
    if e["depth"] not in (10, 18, 34):
        raise ValueError(f"model config: encoder.depth must be 10, 18 or 34, got {e['depth']}")
    if not 1 <= e["width"] <= 1024:
        raise ValueError(f"model config: encoder.width must be in [1, 1024], got {e['width']}")
    if not 1 <= e["in_channels"] <= 64:
        raise ValueError(f"model config: encoder.in_channels must be in [1, 64], got {e['in_channels']}")
    for a in range(3):
        if not 1 <= e["stem_stride"][a] <= 4:
            raise ValueError("model config: encoder.stem_stride values must be in [1, 4]")
        k = e["stem_kernel"][a]
        if not 1 <= k <= 11 or k % 2 == 0:
            raise ValueError("model config: encoder.stem_kernel values must be odd and in [1, 11]")
    if e["norm"] not in ("batch", "instance", "group"):
        raise ValueError(f"model config: encoder.norm must be batch, instance or group, got '{e['norm']}'")
    if not c["heads"]:
        raise ValueError("model config: a model needs at least one head")
    names = set()
    for h in c["heads"]:
        n = h["name"]
        if not n or len(n) > 64 or any(ch in n for ch in '. /\\"'):
            raise ValueError(f"model config: head name '{n}' must be 1-64 characters without '.', '/', '\\', '\"' "
                             "or spaces")
        if n in names:
            raise ValueError(f"model config: two heads are called '{n}'")
        names.add(n)
        if not h["type"]:
            raise ValueError(f"model config: head '{n}' has no type")
        if not (h["weight"] >= 0) or not math.isfinite(h["weight"]):
            raise ValueError(f"model config: head '{n}': weight must be finite and >= 0")
    if c["weighting"] not in ("fixed", "uncertainty"):
        raise ValueError(f"model config: weighting must be fixed or uncertainty, got '{c['weighting']}'")


def stage_channels(encoder: Dict[str, Any]) -> List[int]:
    """Channels of the stages stem, layer1 .. layer4 (``EncoderConfig::stage_channels``)."""
    w = int(encoder["width"])
    return [w, w, 2 * w, 4 * w, 8 * w]


def blocks_per_stage(depth: int) -> List[int]:
    """Basic blocks in layer1 .. layer4 for ResNet-10 / 18 / 34."""
    table = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}
    if depth not in table:
        raise ValueError(f"encoder: depth must be 10, 18 or 34, got {depth}")
    return list(table[depth])


# ---- encoder -----------------------------------------------------------------------------

class InstanceNorm3d(nn.InstanceNorm3d):
    """``nn.InstanceNorm3d`` that calls ``torch.instance_norm`` directly, as LibTorch's module
    does: the Python functional raises on a single spatial element (e.g. a 1x1x1 deep stage),
    LibTorch does not (it normalises it to the bias)."""

    def _apply_instance_norm(self, input: Tensor) -> Tensor:
        return torch.instance_norm(
            input, self.weight, self.bias, self.running_mean, self.running_var,
            self.training or not self.track_running_stats, self.momentum, self.eps,
            torch.backends.cudnn.enabled)


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` calling ``torch.group_norm`` directly, as LibTorch's module does (no
    Python-side batch-size check)."""

    def forward(self, input: Tensor) -> Tensor:
        return torch.group_norm(input, self.num_groups, self.weight, self.bias, self.eps,
                                torch.backends.cudnn.enabled)


def make_norm(kind: str, channels: int) -> nn.Module:
    """``batch`` -> BatchNorm3d(c), ``instance`` -> InstanceNorm3d(c, affine=True) (no running
    statistics, LibTorch's default too), ``group`` -> GroupNorm(min(8, c), c)."""
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "instance":
        return InstanceNorm3d(channels, affine=True)
    if kind == "group":
        return GroupNorm(min(8, channels), channels)
    raise ValueError(f"encoder: unknown norm '{kind}' (batch, instance, group)")


def conv3d(cin: int, cout: int, k: Sequence[int], stride: Sequence[int]) -> nn.Conv3d:
    """Bias-free convolution with padding k // 2 per axis."""
    return nn.Conv3d(cin, cout, tuple(k), stride=tuple(stride), padding=tuple(a // 2 for a in k), bias=False)


class BasicBlock(nn.Module):
    """conv3-norm-relu-conv3-norm + shortcut (1x1x1 conv + norm when the shape changes), relu."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = conv3d(cin, cout, (3, 3, 3), (stride,) * 3)
        self.bn1 = make_norm(norm, cout)
        self.conv2 = conv3d(cout, cout, (3, 3, 3), (1, 1, 1))
        self.bn2 = make_norm(norm, cout)
        self.downsample: Optional[nn.Sequential] = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(conv3d(cin, cout, (1, 1, 1), (stride,) * 3), make_norm(norm, cout))

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        y = y + (self.downsample(x) if self.downsample is not None else x)
        return torch.relu(y)


class ResNet3d(nn.Module):
    """A 3D ResNet with basic blocks (``ResNet3dImpl``). ``forward`` returns the five stage maps
    [stem (before the optional max-pool), layer1, layer2, layer3, layer4]; the stem is
    Sequential(conv, norm, ReLU(inplace=True)); the max-pool (3, stride (1, 2, 2), padding 1) has
    no parameters and, as in C++, is not a registered submodule."""

    def __init__(self, encoder: Dict[str, Any]) -> None:
        super().__init__()
        e = dict(_ENCODER_DEFAULTS)
        e.update({k: v for k, v in encoder.items() if v is not None})
        self.config = e
        blocks = blocks_per_stage(int(e["depth"]))
        ch = stage_channels(e)
        k = [int(a) for a in e["stem_kernel"]]
        s = [int(a) for a in e["stem_stride"]]
        self.in_channels = int(e["in_channels"])
        self.stem = nn.Sequential(conv3d(self.in_channels, ch[0], k, s), make_norm(e["norm"], ch[0]),
                                  nn.ReLU(inplace=True))
        # a plain attribute, not a submodule (the C++ pool_ is not registered either)
        object.__setattr__(self, "pool", nn.MaxPool3d(3, stride=(1, 2, 2), padding=1) if e["stem_pool"] else None)
        cin = ch[0]
        for st in range(4):
            cout = ch[st + 1]
            layer = nn.Sequential(*[
                BasicBlock(cin if b == 0 else cout, cout, 2 if (st > 0 and b == 0) else 1, e["norm"])
                for b in range(blocks[st])])
            cin = cout
            self.add_module(f"layer{st + 1}", layer)

    @property
    def layers(self) -> List[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x: Tensor) -> List[Tensor]:
        if x.dim() != 5 or x.size(1) != self.in_channels:
            raise ValueError(f"encoder: expected input (N, {self.in_channels}, D, H, W), got {x.dim()} dimensions"
                             + (f" with {x.size(1)} channels" if x.dim() >= 2 else ""))
        y = self.stem(x)
        maps = [y]
        if self.pool is not None:
            y = self.pool(y)
        for layer in self.layers:
            y = layer(y)
            maps.append(y)
        return maps


# ---- heads -------------------------------------------------------------------------------

@dataclass
class Target:
    """Labels of one head for a batch. regression: float (N), NaN = no label; classification /
    ordinal: int64 (N), -1 = no label; segmentation: float (N, D, H, W) in {0, 1} and ``present``
    bool (N) (None = every row)."""

    values: Optional[Tensor]
    present: Optional[Tensor] = None


TargetLike = Union[Target, Tensor, np.ndarray, Sequence[float], None]


def _as_target(t: TargetLike) -> Target:
    if isinstance(t, Target):
        return t
    if t is None:
        return Target(None)
    return Target(torch.as_tensor(t))


def _param(params: dict, name: str, key: str, fallback: Any, kind: str) -> Any:
    """``param<T>(config, key, fallback)`` of heads.cpp: absent or null -> fallback; a value of
    the wrong type -> ValueError."""
    v = params.get(key, None)
    if v is None:
        return fallback
    ok = {
        "int": _is_number(v),
        "float": _is_number(v),
        "str": isinstance(v, str),
        "str_list": isinstance(v, (list, tuple)) and all(isinstance(a, str) for a in v),
        "float_list": isinstance(v, (list, tuple)) and all(_is_number(a) for a in v),
    }[kind]
    if not ok:
        raise ValueError(f"head '{name}': parameter '{key}' has the wrong type ({v!r})")
    if kind == "int":
        return int(v)
    if kind == "float":
        return float(v)
    if kind in ("str_list", "float_list"):
        return list(v)
    return v


def _pooled(stages: Sequence[Tensor]) -> Tensor:
    """Global average pool of the last stage: (N, C)."""
    return stages[-1].mean((2, 3, 4))


def _no_rows(out: Tensor) -> Tuple[Tensor, int]:
    return 0 * out.sum(), 0


class Head(nn.Module):
    """Base of the heads: ``config`` is the head's JSON dict (name, type, target, weight, params);
    ``forward(stages, input)`` returns raw outputs, ``loss(output, target)`` -> (mean loss over
    the labelled rows, their count), ``to_user`` maps raw outputs to user units."""

    label_kind = ""

    def __init__(self, config: Dict[str, Any]) -> None:
        super().__init__()
        self.config = copy.deepcopy(config)
        self.config.setdefault("params", {})
        self.name = self.config["name"]

    @property
    def params(self) -> Dict[str, Any]:
        return self.config["params"]

    def classes(self) -> List[str]:
        return []

    def fit_targets(self, values: Sequence[float]) -> None:
        pass

    def to_user(self, output: Tensor) -> Tensor:
        raise NotImplementedError

    def loss(self, output: Tensor, target: TargetLike) -> Tuple[Tensor, int]:
        raise NotImplementedError

    # the pooled MLP of heads.cpp: [Linear(C, hidden) + ReLU] [+ Dropout] + Linear(., out)
    def _build_mlp(self, cin: int, cout: int) -> None:
        hidden = _param(self.params, self.name, "hidden", 0, "int")
        dropout = _param(self.params, self.name, "dropout", 0.0, "float")
        if hidden < 0:
            raise ValueError(f"head '{self.name}': hidden must be >= 0")
        if not (0 <= dropout < 1):
            raise ValueError(f"head '{self.name}': dropout must be in [0, 1)")
        self.fc1: Optional[nn.Linear] = None
        self.dropout: Optional[nn.Dropout] = None
        if hidden > 0:
            self.fc1 = nn.Linear(cin, hidden)
            cin = hidden
        if dropout > 0:
            self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, cout)

    def _mlp(self, x: Tensor) -> Tensor:
        if self.fc1 is not None:
            x = torch.relu(self.fc1(x))
        if self.dropout is not None:
            x = self.dropout(x)
        return self.fc(x)


class RegressionHead(Head):
    """A scalar in user units (e.g. mL). Predicts z = (t(y) - mean) / sd, t = identity, log1p or
    sqrt (params ``transform``, ``mean``, ``sd``); loss smooth L1 (default) or MSE on z."""

    label_kind = "scalar"

    def __init__(self, config: Dict[str, Any], encoder: Dict[str, Any]) -> None:
        super().__init__(config)
        p, n = self.params, self.name
        self.transform = _param(p, n, "transform", "none", "str")
        if self.transform not in ("none", "log1p", "sqrt"):
            raise ValueError(f"head '{n}': transform must be none, log1p or sqrt, got '{self.transform}'")
        self.loss_kind = _param(p, n, "loss", "smooth_l1", "str")
        if self.loss_kind not in ("smooth_l1", "mse"):
            raise ValueError(f"head '{n}': loss must be smooth_l1 or mse, got '{self.loss_kind}'")
        self.mean = _param(p, n, "mean", 0.0, "float")
        self.sd = _param(p, n, "sd", 1.0, "float")
        if not math.isfinite(self.mean) or not (self.sd > 0) or not math.isfinite(self.sd):
            raise ValueError(f"head '{n}': need a finite mean and a positive sd")
        self._build_mlp(stage_channels(encoder)[-1], 1)

    def forward(self, stages: Sequence[Tensor], input: Tensor) -> Tensor:
        return self._mlp(_pooled(stages)).squeeze(1)

    def _forward_transform(self, y: Tensor) -> Tensor:
        if self.transform == "log1p":
            return torch.log1p(y)
        if self.transform == "sqrt":
            return torch.sqrt(y.clamp_min(0))
        return y

    def loss(self, output: Tensor, target: TargetLike) -> Tuple[Tensor, int]:
        t = _as_target(target)
        if t.values is None:
            return _no_rows(output)
        y = t.values.to(torch.float32)
        ok = torch.isfinite(y)
        n = int(ok.sum().item())
        if n == 0:
            return _no_rows(output)
        z = (self._forward_transform(y[ok]) - self.mean) / self.sd
        p = output[ok]
        return (F.mse_loss(p, z) if self.loss_kind == "mse" else F.smooth_l1_loss(p, z)), n

    def to_user(self, output: Tensor) -> Tensor:
        v = output * self.sd + self.mean
        if self.transform == "log1p":
            return torch.expm1(v).clamp_min(0)
        if self.transform == "sqrt":
            return v.clamp_min(0).square()
        return v

    def _transform_scalar(self, v: float) -> float:
        if self.transform == "log1p":
            if v <= -1:
                raise ValueError(f"head '{self.name}': log1p transform needs labels > -1, got {v}")
            return math.log1p(v)
        if self.transform == "sqrt":
            if v < 0:
                raise ValueError(f"head '{self.name}': sqrt transform needs labels >= 0, got {v}")
            return math.sqrt(v)
        return v

    def fit_targets(self, values: Sequence[float]) -> None:
        """Mean and sd (ddof 1) of the transformed finite labels, into ``config["params"]``; fewer
        than two labels leave them as they are."""
        t = [self._transform_scalar(float(v)) for v in values if math.isfinite(float(v))]
        if len(t) < 2:
            return
        m = 0.0
        for v in t:  # sequential sums, as std::accumulate
            m += v
        m /= len(t)
        ss = 0.0
        for v in t:
            ss += (v - m) * (v - m)
        sd = math.sqrt(ss / (len(t) - 1))
        self.mean = m
        self.sd = sd if sd > 1e-12 else 1.0
        self.params["mean"] = self.mean
        self.params["sd"] = self.sd


def _class_names(params: dict, name: str, fallback_count: int) -> List[str]:
    names = _param(params, name, "classes", [], "str_list")
    if not names:
        k = _param(params, name, "num_classes", fallback_count, "int")
        if k < 2 or k > 1000:
            raise ValueError(f"head '{name}': num_classes must be in [2, 1000]")
        names = [str(i) for i in range(k)]
    if len(names) < 2:
        raise ValueError(f"head '{name}': needs at least two classes")
    return names


class ClassificationHead(Head):
    """K classes (params ``classes`` or ``num_classes``, default 2): logits (N, K), softmax
    probabilities, cross-entropy with optional ``class_weights``."""

    label_kind = "class"

    def __init__(self, config: Dict[str, Any], encoder: Dict[str, Any]) -> None:
        super().__init__(config)
        self._classes = _class_names(self.params, self.name, 2)
        w = _param(self.params, self.name, "class_weights", [], "float_list")
        self.class_weights: Optional[Tensor] = None
        if w:
            if len(w) != len(self._classes):
                raise ValueError(f"head '{self.name}': class_weights needs one weight per class")
            self.class_weights = torch.tensor(w, dtype=torch.float32)  # not a buffer (as in C++)
        self._build_mlp(stage_channels(encoder)[-1], len(self._classes))

    def classes(self) -> List[str]:
        return list(self._classes)

    def forward(self, stages: Sequence[Tensor], input: Tensor) -> Tensor:
        return self._mlp(_pooled(stages))

    def loss(self, output: Tensor, target: TargetLike) -> Tuple[Tensor, int]:
        t = _as_target(target)
        if t.values is None:
            return _no_rows(output)
        y = t.values.to(torch.long)
        ok = y >= 0
        n = int(ok.sum().item())
        if n == 0:
            return _no_rows(output)
        if bool((y[ok] >= len(self._classes)).any()):
            raise ValueError(f"head '{self.name}': a label is >= the number of classes ({len(self._classes)})")
        w = self.class_weights.to(output.device) if self.class_weights is not None else None
        return F.cross_entropy(output[ok], y[ok], weight=w), n

    def to_user(self, output: Tensor) -> Tensor:
        return torch.softmax(output, 1)


class OrdinalHead(Head):
    """Ordered classes 0..K-1 (default K = 7, e.g. mRS) by CORAL: one score g plus K-1
    ``thresholds`` (initialised linspace(1, -1, K-1)); logits (N, K-1) of P(y > k); loss binary
    cross-entropy of the K-1 "y > k" tasks; ``to_user`` gives the K class probabilities."""

    label_kind = "class"

    def __init__(self, config: Dict[str, Any], encoder: Dict[str, Any]) -> None:
        super().__init__(config)
        self._classes = _class_names(self.params, self.name, 7)
        self._build_mlp(stage_channels(encoder)[-1], 1)
        self.thresholds = nn.Parameter(torch.linspace(1.0, -1.0, len(self._classes) - 1))

    def classes(self) -> List[str]:
        return list(self._classes)

    def forward(self, stages: Sequence[Tensor], input: Tensor) -> Tensor:
        return self._mlp(_pooled(stages)) + self.thresholds

    def loss(self, output: Tensor, target: TargetLike) -> Tuple[Tensor, int]:
        t = _as_target(target)
        if t.values is None:
            return _no_rows(output)
        y = t.values.to(torch.long)
        ok = y >= 0
        n = int(ok.sum().item())
        if n == 0:
            return _no_rows(output)
        k = len(self._classes)
        if bool((y[ok] >= k).any()):
            raise ValueError(f"head '{self.name}': a label is >= the number of levels ({k})")
        levels = torch.arange(k - 1, dtype=torch.long, device=y.device).unsqueeze(0)
        cum = (y[ok].unsqueeze(1) > levels).to(torch.float32)
        return F.binary_cross_entropy_with_logits(output[ok], cum.to(output.device)), n

    def to_user(self, output: Tensor) -> Tensor:
        gt = torch.sigmoid(output)  # P(y > k), k = 0..K-2
        n = output.size(0)
        one = torch.ones((n, 1), dtype=output.dtype, device=output.device)
        zero = torch.zeros((n, 1), dtype=output.dtype, device=output.device)
        upper, lower = torch.cat([one, gt], 1), torch.cat([gt, zero], 1)
        p = (upper - lower).clamp_min(0)
        return p / p.sum(1, keepdim=True)


class SegmentationHead(Head):
    """FPN-like decoder over all five stages: ``lateral{s}`` 1x1x1 convs (with bias) to
    ``channels`` (default 16), trilinear upsampling (align_corners=False) and sums from deep to
    shallow, ``smooth`` 3x3x3 conv (no bias), ``norm`` GroupNorm(min(8, ch), ch), ReLU, ``out``
    1x1x1 conv to one logit, trilinear upsampling to the input's (D, H, W): logits (N, D, H, W).
    Loss: BCE + ``dice_weight`` x soft Dice over the rows with a mask."""

    label_kind = "mask"

    def __init__(self, config: Dict[str, Any], encoder: Dict[str, Any]) -> None:
        super().__init__(config)
        ch = _param(self.params, self.name, "channels", 16, "int")
        self.dice_weight = _param(self.params, self.name, "dice_weight", 1.0, "float")
        if ch < 1 or ch > 1024:
            raise ValueError(f"head '{self.name}': channels must be in [1, 1024]")
        cin = stage_channels(encoder)
        for s, c in enumerate(cin):
            self.add_module(f"lateral{s}", nn.Conv3d(c, ch, 1, bias=True))
        self.n_stages = len(cin)
        self.smooth = nn.Conv3d(ch, ch, 3, padding=1, bias=False)
        self.norm = GroupNorm(min(8, ch), ch)
        self.out = nn.Conv3d(ch, 1, 1, bias=True)

    def lateral(self, s: int) -> nn.Conv3d:
        return getattr(self, f"lateral{s}")

    def forward(self, stages: Sequence[Tensor], input: Tensor) -> Tensor:
        n = len(stages)
        p = self.lateral(n - 1)(stages[n - 1])
        for q in range(n - 2, -1, -1):
            m = stages[q]
            p = F.interpolate(p, size=(m.size(2), m.size(3), m.size(4)), mode="trilinear",
                              align_corners=False) + self.lateral(q)(m)
        p = torch.relu(self.norm(self.smooth(p)))
        p = self.out(p)
        p = F.interpolate(p, size=(input.size(2), input.size(3), input.size(4)), mode="trilinear",
                          align_corners=False)
        return p.squeeze(1)

    def loss(self, output: Tensor, target: TargetLike) -> Tuple[Tensor, int]:
        t = _as_target(target)
        if t.values is None:
            return _no_rows(output)
        ok = (t.present.to(torch.bool) if t.present is not None
              else torch.ones(output.size(0), dtype=torch.bool))
        n = int(ok.sum().item())
        if n == 0:
            return _no_rows(output)
        logits, y = output[ok.to(output.device)], t.values[ok.to(t.values.device)].to(torch.float32)
        if logits.shape != y.shape:
            raise ValueError(f"head '{self.name}': mask shape {list(y.shape)} differs from the output "
                             f"{list(logits.shape)}")
        y = y.to(logits.device)
        bce = F.binary_cross_entropy_with_logits(logits, y)
        p, yf = torch.sigmoid(logits).flatten(1), y.flatten(1)
        dice = 1 - (2 * (p * yf).sum(1) + 1) / (p.sum(1) + yf.sum(1) + 1)
        return bce + self.dice_weight * dice.mean(), n

    def to_user(self, output: Tensor) -> Tensor:
        return torch.sigmoid(output)


HeadFactory = Callable[[Dict[str, Any], Dict[str, Any]], Head]

_HEADS: Dict[str, HeadFactory] = {
    "regression": RegressionHead,
    "classification": ClassificationHead,
    "ordinal": OrdinalHead,
    "segmentation": SegmentationHead,
}


def register_head(type_name: str, factory: HeadFactory) -> None:
    """Register a Python head type (the mirror of a C++ ``HeadRegistry::add``): ``factory(head
    config dict, encoder config dict)`` returns a ``Head``."""
    if not type_name:
        raise ValueError("head type name must not be empty")
    if factory is None:
        raise ValueError(f"head type '{type_name}': empty factory")
    if type_name in _HEADS:
        raise ValueError(f"head type '{type_name}' is already registered")
    _HEADS[type_name] = factory


def head_types() -> List[str]:
    """Registered head types, sorted (as ``HeadRegistry::types``)."""
    return sorted(_HEADS)


def _create_head(config: Dict[str, Any], encoder: Dict[str, Any]) -> Head:
    f = _HEADS.get(config["type"])
    if f is None:
        raise ValueError(f"head '{config['name']}': unknown type '{config['type']}' (registered: "
                         f"{', '.join(head_types())})")
    return f(config, encoder)


# ---- the network -------------------------------------------------------------------------

Outputs = Tuple[List[Tensor], Dict[str, Tensor]]


class MultiTaskNet(nn.Module):
    """Encoder + heads (+ learned uncertainty weights ``log_vars`` with ``"weighting":
    "uncertainty"``), the mirror of ``MultiTaskNetImpl``.

    ``config`` is the JSON form of ``ModelConfig`` (missing fields take the C++ defaults;
    ``pipeline`` is kept but unused). The weights are initialised as ``ichkit.model.Model(config,
    seed)`` initialises them (Kaiming-normal fan-out convolutions, uniform +-1/sqrt(fan_in) linear
    weights, zero biases, unit norm scales, from a CPU generator seeded with ``seed``); pass
    ``seed=None`` to keep PyTorch's default initialisation. Like any module it starts in training
    mode; ``from_ichkit`` returns it in eval mode, as ``Model`` is.
    """

    def __init__(self, config: Dict[str, Any], seed: Optional[int] = 0) -> None:
        super().__init__()
        self._config = normalise_config(config)
        self.encoder = ResNet3d(self._config["encoder"])
        self.heads = nn.ModuleDict()
        for hc in self._config["heads"]:
            head = _create_head(hc, self._config["encoder"])
            # straight into _modules: the names are valid (validated above) and may equal a
            # ModuleDict attribute ("type", "training", ...) that add_module would refuse
            self.heads._modules[hc["name"]] = head
        self.log_vars: Optional[nn.Parameter] = None
        if self._config["weighting"] == "uncertainty":
            self.log_vars = nn.Parameter(torch.zeros(len(self._config["heads"])))
        if seed is not None:
            self.initialise(seed)

    # -- construction and weights --------------------------------------------------------

    def initialise(self, seed: int = 0) -> "MultiTaskNet":
        """Re-draw the weights exactly as ``initialise()`` in src/model/model.cpp does: the same
        rules chosen by parameter *name*, the same draws in the same (named_parameters) order
        from a CPU generator seeded with ``seed``. ``thresholds`` and ``log_vars`` are left
        alone; buffers (running statistics) are not touched."""
        gen = torch.Generator(device="cpu")
        gen.manual_seed(int(seed))
        with torch.no_grad():
            for name, t in self.named_parameters():
                is_bias = name.endswith(".bias")
                is_norm = (".bn" in name or "downsample.1" in name or "stem.1" in name or ".norm." in name)
                if name == "log_vars" or "thresholds" in name:
                    continue
                if is_norm:
                    if is_bias:
                        t.zero_()
                    else:
                        t.fill_(1.0)
                elif is_bias:
                    t.zero_()
                elif t.dim() == 5:
                    fan_out = float(t.size(0) * t.size(2) * t.size(3) * t.size(4))
                    _draw(t, lambda u: u.normal_(0.0, math.sqrt(2.0 / fan_out), generator=gen))
                elif t.dim() == 2:
                    bound = 1.0 / math.sqrt(float(t.size(1)))
                    _draw(t, lambda u: u.uniform_(-bound, bound, generator=gen))
        return self

    @classmethod
    def from_ichkit(cls, model: Any) -> "MultiTaskNet":
        """The mirror of an ``ichkit.model.Model`` (or anything with a ``config`` dict and a
        ``state_dict()`` of numpy arrays), with its weights and buffers loaded strictly (every
        name present, no extra one, shapes equal), in eval mode."""
        net = cls(model.config, seed=None)
        state = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in model.state_dict().items()}
        net.load_state_dict(state, strict=True)
        return net.eval()

    def to_state_arrays(self) -> Dict[str, np.ndarray]:
        """{name: numpy copy} of every parameter and buffer, for ``ichkit.model.Model.load_state_dict``."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.state_dict().items()}

    def load_state_arrays(self, arrays: Dict[str, Any], strict: bool = True) -> None:
        """Load {name: numpy array} (e.g. ``model.state_dict()`` of an ``ichkit.model.Model``)."""
        self.load_state_dict({k: torch.from_numpy(np.array(v, copy=True)) for k, v in arrays.items()}, strict=strict)

    # -- config --------------------------------------------------------------------------

    @property
    def config(self) -> Dict[str, Any]:
        """The config with every head's fitted parameters (``current_config``), JSON form."""
        c = copy.deepcopy(self._config)
        c["heads"] = [copy.deepcopy(h.config) for h in self.heads.values()]
        return c

    def head(self, name: str) -> Head:
        if name not in self.heads._modules:
            raise ValueError(f"no head called '{name}' (heads: {', '.join(self.heads._modules)})")
        return self.heads._modules[name]  # type: ignore[return-value]

    def head_parameters(self) -> List[nn.Parameter]:
        """Parameters of the heads and the uncertainty weights (not the encoder's)."""
        p = [t for h in self.heads.values() for t in h.parameters()]
        if self.log_vars is not None:
            p.append(self.log_vars)
        return p

    # -- forward, loss, user units -------------------------------------------------------

    def forward(self, x: Tensor, only: Optional[Sequence[str]] = None) -> Outputs:
        """(stage maps [stem, layer1..layer4], {head name: raw output}) for x (N, C, D, H, W);
        only the heads named in ``only`` when it is given and not empty."""
        stages = self.encoder(x)
        out: Dict[str, Tensor] = {}
        for name, h in self.heads.items():
            if only and name not in only:
                continue
            out[name] = h(stages, x)
        return stages, out

    def loss(self, outputs: Union[Outputs, Dict[str, Tensor]], targets: Dict[str, TargetLike],
             per_head: Optional[Dict[str, float]] = None) -> Tensor:
        """The weighted multi-task loss over the heads with targets (``MultiTaskNetImpl::loss``):
        sum of weight x L_i with fixed weighting, sum of exp(-s_i) L_i + s_i with uncertainty
        weighting; heads without a labelled row contribute nothing; a graph-carrying zero when no
        head has one. ``per_head``, when given, receives each contributing head's loss."""
        heads_out = outputs[1] if isinstance(outputs, tuple) else outputs
        total: Optional[Tensor] = None
        for i, (name, h) in enumerate(self.heads.items()):
            if name not in targets or name not in heads_out:
                continue
            loss, count = h.loss(heads_out[name], targets[name])
            if count == 0:
                continue
            if per_head is not None:
                per_head[name] = float(loss.item())
            if self.log_vars is not None:
                term = torch.exp(-self.log_vars[i]) * loss + self.log_vars[i]
            else:
                term = loss * h.config["weight"]
            total = term if total is None else total + term
        if total is None:
            total = torch.zeros((), dtype=torch.float32)
            for t in heads_out.values():
                total = total + 0 * t.sum()
        return total

    def to_user(self, outputs: Union[Outputs, Dict[str, Tensor]]) -> Dict[str, Tensor]:
        """Every head's raw output in user units (mL, class probabilities, mask probabilities)."""
        heads_out = outputs[1] if isinstance(outputs, tuple) else outputs
        return {name: self.head(name).to_user(v) for name, v in heads_out.items()}

    def fit_targets(self, labels: Dict[str, Sequence[float]]) -> None:
        """Call each named head's ``fit_targets`` with its training labels."""
        for name, values in labels.items():
            self.head(name).fit_targets(values)


def _draw(t: Tensor, fill: Callable[[Tensor], Any]) -> None:
    """Fill a parameter in place (a contiguous CPU float tensor, as after construction); draws
    through a CPU temporary otherwise, so that the draws equal the C++ ones."""
    if t.device.type == "cpu" and t.is_contiguous():
        fill(t)
    else:
        tmp = torch.empty(t.shape, dtype=t.dtype)
        fill(tmp)
        t.copy_(tmp)
