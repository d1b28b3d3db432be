#!/usr/bin/env python3
"""The Python peer pipeline of the end-to-end benchmark (benchmarks/device/bench_device.cpp),
on the CPU or a CUDA device, the two ways a researcher writes it today:

* default: nibabel, numpy windows, scipy.ndimage (zoom, skull strip), the network in eager
  torch, Grad-CAM the pytorch-grad-cam way (hooks, a pass and a full backward per head,
  maps in numpy, scipy zoom);
* tuned: the same reading and skull strip, torch F.interpolate for resampling, the network
  traced + frozen (torch.jit.freeze; on CUDA also cudnn.benchmark) for prediction, and lean
  Grad-CAM (one pass, gradients to layer4 only, both heads, F.interpolate).

    python3 benchmarks/device_peers.py --work DIR [--device cpu|cuda] [--side default|tuned|both]
                                       [--repeats 7] [--cohort 50] [--batch 4] [--out peer.json]

DIR holds the files bench_device wrote (scan.nii.gz, cohort*.nii.gz and cohort*.nii), so both sides read the
very same bytes. With --side both, each side runs in its own process (its own peak RSS).
The network is ichkit.nets.MultiTaskNet (pure PyTorch, loaded from python/ichkit/nets.py
without the compiled extension): ResNet-18 width 32, 3 windows, volume + prognosis heads -
the architecture bench_device runs.
"""
import argparse
import warnings
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
sys.path.insert(0, str(ROOT / "benchmarks"))
import explain_peers  # noqa: E402
import model_peers  # noqa: E402
import preprocess_peers as pp  # noqa: E402
from timing import timeit  # noqa: E402


CONFIG = {"encoder": {"depth": 18, "width": 32, "in_channels": 3},
          "heads": [{"name": "volume", "type": "regression"}, {"name": "prognosis", "type": "classification"}]}


def _numpy2_shims():
    """Debian 12's nibabel 5.0 (carried to GPU machines, which have no nibabel) predates NumPy 2:
    give it back the few names NumPy 2 removed that it uses (aliases, no behaviour change)."""
    if hasattr(np, "clongdouble") and not hasattr(np, "longcomplex"):
        np.longcomplex = np.clongdouble
    if "sctypes" not in np.__dict__:
        np.sctypes = {"int": [np.int8, np.int16, np.int32, np.int64], "uint": [np.uint8, np.uint16, np.uint32, np.uint64],
                      "float": [np.float16, np.float32, np.float64, np.longdouble],
                      "complex": [np.complex64, np.complex128, np.clongdouble], "others": [bool, object, bytes, str, np.void]}
    if "numpy.compat" not in sys.modules:
        try:
            import numpy.compat  # noqa: F401 - NumPy 1
        except ImportError:  # NumPy 2 removed numpy.compat; nibabel 5.0 imports asstr from it
            import types
            compat, py3k = types.ModuleType("numpy.compat"), types.ModuleType("numpy.compat.py3k")
            py3k.asstr = lambda s: s.decode("latin1") if isinstance(s, bytes) else str(s)
            compat.py3k = py3k
            sys.modules["numpy.compat"], sys.modules["numpy.compat.py3k"] = compat, py3k
    if "maximum_sctype" not in np.__dict__:
        def maximum_sctype(t):
            kind = np.dtype(t).kind
            return {"i": np.int64, "u": np.uint64, "f": np.longdouble, "c": np.clongdouble}.get(kind, np.dtype(t).type)
        np.maximum_sctype = maximum_sctype


READER = "nibabel"


def _nibabel_works(nib):
    """Raise unless nibabel round-trips what the benchmark reads and writes (scaled int16 and
    float32 .nii.gz) on this NumPy: a nibabel older than the NumPy can import and fail later."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        a = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
        img = nib.Nifti1Image(a, np.diag([0.5, 0.5, 5.0, 1.0]))
        img.header.set_slope_inter(2.0, -1024.0)
        nib.save(img, os.path.join(d, "a.nii.gz"))
        back = nib.load(os.path.join(d, "a.nii.gz")).get_fdata(dtype=np.float32)
        if not np.array_equal(back, a.astype(np.float32) * 2 - 1024):
            raise RuntimeError("scaled int16 round trip changed the values")
        f = np.linspace(0, 1, 24, dtype=np.float32).reshape(2, 3, 4)
        nib.save(nib.Nifti1Image(f, np.eye(4)), os.path.join(d, "f.nii.gz"))
        if not np.array_equal(nib.load(os.path.join(d, "f.nii.gz")).get_fdata(dtype=np.float32), f):
            raise RuntimeError("float32 round trip changed the values")


_NIB = None  # nibabel, once checked


def _nibabel():
    global READER, _NIB
    if _NIB is not None:
        return _NIB
    if READER == "nibabel" and not os.environ.get("ICHKIT_PEER_NO_NIBABEL"):
        try:
            _numpy2_shims()
            import nibabel as nib
            _nibabel_works(nib)
            _NIB = nib
            return nib
        except Exception as e:  # noqa: BLE001 - e.g. Debian's nibabel 5.0 under NumPy 2 (GPU machines)
            print(f"device_peers: nibabel unusable here ({e!r}); reading/writing with gzip + numpy", file=sys.stderr)
    READER = "gzip+numpy"
    return None


_DTYPES = {2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 64: np.float64, 256: np.int8, 512: np.uint16}


def read(path):
    nib = _nibabel()
    if nib is not None:
        img = nib.load(path)
        return img.get_fdata(dtype=np.float32), img.affine
    # what a researcher without nibabel writes: gzip + the NIfTI-1 header fields by offset
    import gzip
    with (gzip.open if str(path).endswith(".gz") else open)(path, "rb") as f:
        raw = f.read()
    dim = np.frombuffer(raw, "<i2", 8, 40)
    dtype = _DTYPES[int(np.frombuffer(raw, "<i2", 1, 70)[0])]
    off = int(np.frombuffer(raw, "<f4", 1, 108)[0])
    slope, inter = (float(v) for v in np.frombuffer(raw, "<f4", 2, 112))
    shape = tuple(int(d) for d in dim[1:1 + int(dim[0])])
    data = np.frombuffer(raw, dtype, int(np.prod(shape)), off).reshape(shape, order="F").astype(np.float32)
    if slope not in (0.0, 1.0) or inter != 0.0:
        data = data * np.float32(slope or 1.0) + np.float32(inter)
    affine = np.eye(4)
    affine[:3] = np.frombuffer(raw, "<f4", 12, 280).reshape(3, 4)
    return data, affine


def write(path, data, affine):
    nib = _nibabel()
    if nib is not None:
        nib.save(nib.Nifti1Image(np.asarray(data, np.float32), affine), path)
        return
    import gzip
    import struct
    d = np.asarray(data, np.float32)
    h = bytearray(352)
    struct.pack_into("<i", h, 0, 348)
    struct.pack_into("<8h", h, 40, d.ndim, *d.shape, *([1] * (7 - d.ndim)))
    struct.pack_into("<hh", h, 70, 16, 32)
    pix = [float(np.linalg.norm(affine[:3, a])) for a in range(3)]
    struct.pack_into("<8f", h, 76, 1.0, *pix, 1.0, 1.0, 1.0, 1.0)
    struct.pack_into("<f", h, 108, 352.0)
    struct.pack_into("<h", h, 254, 1)
    struct.pack_into("<12f", h, 280, *np.asarray(affine[:3], np.float32).ravel())
    h[344:348] = b"n+1\0"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(bytes(h))
        f.write(d.tobytes(order="F"))


def to_1mm(hu, spacing, side, device):
    new_shape = [int(round(n * s / t)) for n, s, t in zip(hu.shape, spacing, (1.0, 1.0, 5.0))]
    if side == "default":
        return ndimage.zoom(hu, [a / b for a, b in zip(new_shape, hu.shape)], order=1, prefilter=False)
    return pp.torch_resize(hu, new_shape[::-1], device).numpy().T


def preprocess(hu, spacing, side, device):
    """ichkit's pipeline of the paper's model: 1 x 1 x 5 mm, crop to the head, skull strip there,
    crop to the brain + centre crop/pad to 192 x 192 x 32, 3 windows -> (1, 3, 32, 192, 192) on device."""
    x = pp.crop_fg(to_1mm(hu, spacing, side, device))
    brain = pp.skull_strip(x, (1.0, 1.0, 5.0))
    x = np.where(brain, x, np.float32(-1024)).astype(np.float32)
    w = pp.window3(pp.crop_pad(x))  # (3, i, j, k)
    return torch.from_numpy(np.ascontiguousarray(w.transpose(0, 3, 2, 1)))[None].to(device)  # (1, 3, D, H, W)


def run_side(args):
    side, device = args.side, torch.device(args.device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    if cuda:
        torch.backends.cudnn.benchmark = side == "tuned"
    nets = model_peers.load_nets()
    net = nets.MultiTaskNet(CONFIG).eval().to(device)
    scan_path = os.path.join(args.work, "scan.nii.gz")
    r = {"side": side, "device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__}
    if cuda:
        r["gpu"] = torch.cuda.get_device_name(0)
    st = r["stages"] = {}
    want = set(args.only.split(",")) if args.only else None

    def stage(name, fn):
        if want is None or name in want:
            st[name] = timeit(fn, args.repeats, sync, slow_s=2.0)
    stage("read_nii_gz", lambda: read(scan_path))
    hu, affine = read(scan_path)
    spacing = [float(np.linalg.norm(affine[:3, a])) for a in range(3)]
    stage("window3", lambda: pp.window3(hu))
    factors = [s / t for s, t in zip(spacing, (1.0, 1.0, 5.0))]
    if side == "default":
        stage("resample_1mm", lambda: pp.scipy_zoom(hu, factors))
    else:
        size = [int(round(n * f)) for n, f in zip(hu.shape, factors)][::-1]
        stage("resample_1mm", lambda: pp.torch_resize(hu, size, device))
    stage("skull_strip", lambda: pp.skull_strip(hu, spacing))
    if want is None or "skull_strip_1mm" in want:  # its input made only when it is timed
        head = pp.crop_fg(to_1mm(hu, spacing, side, device))
        stage("skull_strip_1mm", lambda: pp.skull_strip(head, (1.0, 1.0, 5.0)))
    stage("preprocess", lambda: preprocess(hu, spacing, side, device))
    x1 = preprocess(hu, spacing, side, device)
    r["network_input"] = list(x1.shape)
    xb = x1.repeat(args.batch, 1, 1, 1, 1).contiguous()
    if side == "default":
        fwd = lambda x: model_peers.eager_forward(net, x)  # noqa: E731
    else:
        frozen = {"b1": model_peers.frozen(net, x1), "bn": model_peers.frozen(net, xb)}
        fwd = lambda x: model_peers.frozen_forward(frozen["b1" if x.shape[0] == 1 else "bn"], x)  # noqa: E731
    stage("forward_b1", lambda: fwd(x1))
    stage(f"forward_b{args.batch}", lambda: fwd(xb))
    gradcam = explain_peers.pytorch_grad_cam_style if side == "default" else explain_peers.lean
    stage("gradcam_both", lambda: gradcam(net, x1))
    heat = np.random.default_rng(0).random(hu.shape, dtype=np.float32)
    out_path = os.path.join(args.work, f"peer_heat_{side}.nii.gz")
    stage("write_heatmap", lambda: write(out_path, heat, affine))

    def end_to_end():
        v, aff = read(scan_path)
        x = preprocess(v, spacing, side, device)
        maps = gradcam(net, x)
        for k, m in enumerate(maps):
            if side == "default":  # numpy maps on the network grid -> the scan grid
                m3 = np.asarray(m)[0].T
                m3 = ndimage.zoom(m3, [a / b for a, b in zip(v.shape, m3.shape)], order=1)
            else:
                m3 = F.interpolate(m[:, None].float(), size=v.shape[::-1], mode="trilinear",
                                   align_corners=False)[0, 0].cpu().numpy().T
            write(os.path.join(args.work, f"peer_e2e_{side}_{k}.nii.gz"), m3, aff)

    stage("end_to_end", end_to_end)

    r["reader"] = READER
    r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # the per-scan stages
    # the serial peer of the cohort run (tuned side): read, preprocess, predict, one scan after
    # the other; its rate per scan is steady, so --cohort-peer scans are timed (not all 50)
    # (and, when bench_device left them, the same files uncompressed: cohort*.nii)
    timed = args.cohort > 0 and side == "tuned" and (want is None or "cohort" in want)
    for key, pattern in (("cohort", "cohort*.nii.gz"), ("cohort_nii", "cohort*.nii")) if timed else ():
        files = sorted(str(p) for p in Path(args.work).glob(pattern))
        if not files:
            continue
        paths = [files[i % len(files)] for i in range(min(args.cohort, args.cohort_peer))]

        def one(p):
            v, aff = read(p)
            sp = [float(np.linalg.norm(aff[:3, a])) for a in range(3)]
            out = fwd(preprocess(v, sp, side, device))  # the frozen model's tuple of head outputs
            if cuda:
                [o.cpu() for o in out]

        one(paths[0])
        sync()
        t0 = time.perf_counter()
        for p in paths:
            one(p)
        sync()
        sec = time.perf_counter() - t0
        r[key] = {"scans": len(paths), "seconds": sec, "scans_per_s": len(paths) / sec}
        r["peak_rss_mb_with_cohort"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if cuda:
        r["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--side", choices=["default", "tuned", "both"], default="both")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--cohort", type=int, default=50)
    ap.add_argument("--cohort-peer", type=int, default=10, help="scans the serial peer times")
    ap.add_argument("--only", default="", help="comma-separated stages to time (default: all)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: every CPU this process may use)")
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))  # the CPUs this process may use
    if args.side == "both":
        res = {}
        for side in ("default", "tuned"):
            cmd = [sys.executable, __file__, "--work", args.work, "--device", args.device, "--side", side,
                   "--repeats", str(args.repeats), "--cohort", str(args.cohort), "--batch", str(args.batch),
                   "--threads", str(args.threads), "--cohort-peer", str(args.cohort_peer), "--only", args.only]
            print("device_peers:", " ".join(cmd), file=sys.stderr, flush=True)
            p = subprocess.run(cmd, stdout=subprocess.PIPE, check=True, text=True)
            res[side] = json.loads(p.stdout)
    else:
        res = run_side(args)
    text = json.dumps(res, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
