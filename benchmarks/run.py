#!/usr/bin/env python3
"""ichkit against its Python peers, side by side in one run.

    .venv/bin/python benchmarks/run.py [--repeats 7] [--out docs/results]

Stage 'e2e' (--suite e2e): every stage of a scan's way through ichkit and the whole way (read
.nii.gz, windows, resampling, skull strip, preprocessing, forward, Grad-CAM of both heads, write a
heatmap, end to end), the cohort throughput against the model-only bound (from the .nii.gz files and
from the same files uncompressed), and the machine's
ceilings (oneDNN convolutions, memory bandwidth): benchmarks/device/bench_device.cpp beside
benchmarks/device_peers.py (default and tuned Python pipelines), table by device_report.py. The
same programs run on a GPU machine through scripts/gpu-bench.

Stage 'io' (NIfTI): a 512 x 512 x 32 int16 head CT (phantom, seed 1) as .nii and .nii.gz.
  ichkit: the C++ google-benchmark program build/release/benchmarks/bench_io (median of the
          repetitions) - reading to float32 HU, writing int16.
  peer:   nibabel on the very same files: nib.load(p).get_fdata(dtype=np.float32) and
          nib.save(Nifti1Image(int16 array, affine)) (nibabel's default gzip level 1).
Both use every core they can: nibabel/zlib is single-threaded; ichkit writes gzip in parallel
members. The peers (nibabel, pydicom) run in a process of their own (benchmarks/io_peers.py)
that does not import ichkit, whose runtime set-up would speed them up.

Stage 'dicom': the real GE head CT series (28 slices 512 x 512, gantry tilt, two spacings) as
stored (explicit VR little endian) and re-encoded JPEG lossless (gdcmconv --jpeg), read into a
float32 HU volume.
  ichkit: read_dicom(tilt=keep) - headers, sort by position on the normal, decode, rescale.
  peer:   pydicom (+ its GDCM handler for JPEG): dcmread every file, sort by ImagePositionPatient
          projected on the normal, pixel_array * RescaleSlope + RescaleIntercept, np.stack.
  scan:   header-only scan of a folder of 1,023 files (11 copies of the 93-slice Slicer series):
          ichkit list_series vs pydicom dcmread(stop_before_pixels=True) of every file.
Prints a table of medians (min..max) and peer/ichkit ratios, and writes JSON + Markdown.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import shutil

import nibabel as nib
import numpy as np
import pydicom

ROOT = Path(__file__).resolve().parents[1]
import ichkit  # noqa: E402  (the installed package: run with .venv/bin/python)
from timing import ms, summary, timeit  # noqa: E402  (benchmarks/, this script's folder)


def peer_table(rows, stage_header="stage", ratio_decimals=1):
    """Markdown table of (stage, ichkit timing, peer name, peer timing) rows with the ratio."""
    lines = [f"| {stage_header} | ichkit median ms (min..max) | peer | peer median ms (min..max) | peer / ichkit |",
             "|---|---|---|---|---|"]
    for stage, a, peer, b in rows:
        lines.append(f"| {stage} | {ms(a)} | {peer} | {ms(b)} | **{b['median_ms'] / a['median_ms']:.{ratio_decimals}f}x** |")
    return "\n".join(lines)


_BUILT = set()


def ensure_built(binary):
    """scripts/setup builds without the benchmark programs (they are not tests): configure the
    build folder with them and bring the one asked for up to date (once per run)."""
    binary = Path(binary)
    if binary in _BUILT:
        return
    _BUILT.add(binary)
    build = binary.parent.parent
    root = Path(__file__).resolve().parent.parent
    print(f"building {binary.name} in {build}", file=sys.stderr)
    subprocess.run(["cmake", "-S", str(root), "-B", str(build), "-DICHKIT_BUILD_BENCHMARKS=ON"], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build), "--target", binary.name], check=True)


def run_cpp(binary, bench_dir, repeats, extra_env=None):
    ensure_built(binary)
    env = dict(os.environ, ICHKIT_BENCH_DIR=str(bench_dir), **(extra_env or {}))
    out = subprocess.run([str(binary), "--benchmark_format=json", f"--benchmark_repetitions={repeats}",
                          "--benchmark_min_time=0.05", "--benchmark_report_aggregates_only=false"],
                         env=env, check=True, capture_output=True, text=True).stdout
    res = {}
    for b in json.loads(out)["benchmarks"]:
        if b.get("run_type") != "iteration":
            continue
        name = b["run_name"].replace("/real_time", "").replace("/manual_time", "")  # e.g. BM_ReadNifti/nii_gz
        res.setdefault(name, []).append(b["real_time"])
    return {k: summary(v) for k, v in res.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--build", default=str(ROOT / "build" / "release"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"))
    ap.add_argument("--suite", choices=["e2e", "io", "preprocess", "model", "explain", "all"], default="all")
    ap.add_argument("--cohort", type=int, default=50, help="e2e: scans in the cohort throughput run")
    args = ap.parse_args()
    if args.suite in ("e2e", "all"):
        e2e_suite(args)
    if args.suite == "e2e":
        return
    if args.suite in ("explain", "all"):
        explain_suite(args)
    if args.suite == "explain":
        return
    if args.suite in ("model", "all"):
        model_suite(args)
    if args.suite == "model":
        return
    if args.suite in ("preprocess", "all"):
        preprocess_suite(args)
    if args.suite == "preprocess":
        return

    threads = ichkit.available_cores()  # as ichkit's default: this process's cores
    ichkit.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        case = ichkit.phantom.make_case(seed=1)
        hu = np.round(case["image"].array).astype(np.int16)
        aff = case["image"].affine
        nib.save(nib.Nifti1Image(hu, aff), str(tmp / "ct.nii"))
        nib.save(nib.Nifti1Image(hu, aff), str(tmp / "ct.nii.gz"))  # nibabel's own files for both readers

        # DICOM inputs: the GE series as stored and as JPEG lossless; a 1,023-file folder.
        ge = ROOT / "tests" / "data" / "dicom" / "ge-head-tilt"
        jpeg = tmp / "ge-jpeg-lossless"
        jpeg.mkdir()
        for f in sorted(ge.glob("*.dcm")):
            subprocess.run(["gdcmconv", "--jpeg", str(f), str(jpeg / f.name)], check=True, capture_output=True)
        assert pydicom.dcmread(str(next(jpeg.glob("*.dcm")))).file_meta.TransferSyntaxUID.is_compressed
        scan_dir = tmp / "scan"
        slicer = ROOT / "tests" / "data" / "dicom" / "slicer-ctheadaxial"
        for c in range(11):
            shutil.copytree(slicer, scan_dir / f"copy{c:02d}", ignore=shutil.ignore_patterns("LICENSE*"))
        n_scan = sum(len(fs) for _, _, fs in os.walk(scan_dir))
        cpp = run_cpp(Path(args.build) / "benchmarks" / "bench_io", tmp, args.repeats,
                      {"ICHKIT_BENCH_DICOM_SERIES": f"uncompressed={ge}:jpeg_lossless={jpeg}",
                       "ICHKIT_BENCH_DICOM_SCAN": str(scan_dir)})
        # the peers in a process of their own, without ichkit's runtime set-up (io_peers.py)
        peers_json = tmp / "peers.json"
        subprocess.run([sys.executable, str(Path(__file__).with_name("io_peers.py")), "--dir", str(tmp), "--ge", str(ge),
                        "--jpeg", str(jpeg), "--scan", str(scan_dir), "--repeats", str(args.repeats),
                        "--out", str(peers_json)], check=True)
        peers = json.loads(peers_json.read_text())
        rows = []
        for ext, key in ((".nii", "nii"), (".nii.gz", "nii_gz")):
            rows.append(("NIfTI read " + ext + " 512x512x32 int16 (peer: nibabel)", cpp[f"BM_ReadNifti/{key}"], peers[f"read_{key}"]))
            rows.append(("NIfTI write " + ext + " (peer: nibabel)", cpp[f"BM_WriteNifti/{key}"], peers[f"write_{key}"]))
        for name in ("uncompressed", "jpeg_lossless"):
            rows.append((f"DICOM series 28x512x512 {name.replace('_', ' ')}", cpp[f"BM_ReadDicomSeries/{name}"],
                         peers[f"dicom_{name}"]))
        rows.append((f"DICOM header scan, {n_scan} files", cpp["BM_ScanFolder/files"], peers["dicom_scan"]))
        size = {ext: os.path.getsize(tmp / ("ct" + ext)) for ext in (".nii", ".nii.gz")}

    result = {
        "machine": {"cpus": threads, "platform": platform.platform(), "python": platform.python_version(),
                    "nibabel": nib.__version__, "numpy": np.__version__, "ichkit": ichkit.__version__},
        "input": {"shape": [512, 512, 32], "dtype": "int16", "bytes": size},
        "stages": [{"stage": s, "ichkit": a, "peer": b, "ratio": b["median_ms"] / a["median_ms"]} for s, a, b in rows],
    }
    lines = ["| stage | ichkit median ms (min..max) | peer median ms (min..max) | peer / ichkit |",
             "|---|---|---|---|"]
    for r in result["stages"]:
        a, b = r["ichkit"], r["peer"]
        lines.append(f"| {r['stage']} | {a['median_ms']:.1f} ({a['min_ms']:.1f}..{a['max_ms']:.1f}) | "
                     f"{b['median_ms']:.1f} ({b['min_ms']:.1f}..{b['max_ms']:.1f}) | **{r['ratio']:.2f}x** |")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark-io.json").write_text(json.dumps(result, indent=2) + "\n")
    md = ["# Image IO: ichkit vs nibabel and pydicom", "",
          f"Measured by `benchmarks/run.py` on {threads} cores ({platform.platform()}), nibabel {nib.__version__}, "
          f"median of {args.repeats} runs after a warm-up, page cache warm. Read = to float32 HU "
          "(`read_nifti<float>` vs `get_fdata(dtype=float32)`); the peers run in a process of their own "
          "(benchmarks/io_peers.py) that does not import ichkit; write = int16 (`write_nifti` vs `nib.save`, both gzip "
          "level 1 for .nii.gz; ichkit compresses independent gzip members on all cores, nibabel/zlib uses one). "
          "DICOM: see the docstring of benchmarks/run.py (pydicom + numpy sorting and rescale; header-only scans). "
          "ichkit's writes are atomic and durable (temporary file, fsync, rename); `nib.save` leaves the data in the "
          "page cache, which is why it wins the uncompressed write. bench_io runs the DICOM reads after the NIfTI "
          "ones in one process; the uncompressed series alone, in a fresh process, read in 19-20 ms on this VM "
          "(not yet explained: the slowdown follows any NIfTI read or write before it).", "",
          table, ""]
    (out / "benchmark-io.md").write_text("\n".join(md))


def e2e_suite(args):
    """Every stage and the whole pipeline per scan, ichkit (bench_device) against the default and
    tuned Python peers (device_peers.py, each side in its own process), the cohort throughput and
    the machine's ceilings; table by device_report.py."""
    binary = Path(args.build) / "benchmarks" / "bench_device"
    ensure_built(binary)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "scans"
        ours, peers = Path(tmp) / "ichkit.json", Path(tmp) / "peers.json"
        print("e2e: ichkit (bench_device)", file=sys.stderr, flush=True)
        subprocess.run([str(binary), "--repeats", str(args.repeats), "--cohort", str(args.cohort), "--cohort-rounds", "5",
                        "--cohort-format", "nii.gz,nii", "--batch", "4",
                        "--work", str(work), "--out", str(ours)], check=True, stdout=subprocess.DEVNULL)
        print("e2e: Python peers (device_peers.py; minutes: scipy's skull strip takes seconds a scan)",
              file=sys.stderr, flush=True)
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device_peers.py"), "--work", str(work),
                        "--repeats", str(args.repeats), "--cohort", str(args.cohort), "--batch", "4",
                        "--cohort-peer", "5", "--out", str(peers)], check=True, stdout=subprocess.DEVNULL)
        # each side's end-to-end job alone in a fresh process: its own peak memory
        rss_ours, rss_peers = Path(tmp) / "rss-ichkit.json", Path(tmp) / "rss-peers.json"
        subprocess.run([str(binary), "--repeats", "3", "--only", "end_to_end", "--work", str(work), "--out", str(rss_ours)],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device_peers.py"), "--work", str(work), "--repeats", "3",
                        "--cohort", "0", "--only", "end_to_end", "--out", str(rss_peers)], check=True, stdout=subprocess.DEVNULL)
        title = ("# End to end on the CPU: ichkit against the Python peer pipeline\n\n"
                 "Measured by `benchmarks/run.py --suite e2e` (`benchmarks/device/bench_device.cpp` beside "
                 "`benchmarks/device_peers.py`; default peer = nibabel, numpy, scipy.ndimage, eager torch, "
                 "pytorch-grad-cam-style Grad-CAM; tuned peer = torch F.interpolate, traced + frozen model, lean "
                 "Grad-CAM). Both sides read the same files.")
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device_report.py"), str(ours), str(peers),
                        "--rss", str(rss_ours), str(rss_peers), "--out", str(out / "benchmark-e2e.md"), "--title", title],
                       check=True)


def preprocess_suite(args):
    """Windowing, resampling, skull strip and the whole pipeline on a 512 x 512 x 32 head CT at
    0.45 x 0.45 x 5 mm (phantom seed 1), ichkit (google-benchmark) against numpy / scipy.ndimage /
    torch.nn.functional.interpolate on the same scan, same run, all cores for both."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import preprocess_peers as peers  # noqa: E402

    torch_threads = ichkit.available_cores()
    import torch  # noqa: E402

    torch.set_num_threads(torch_threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        case = ichkit.phantom.make_case(seed=1)
        ichkit.write_nifti(case["image"], str(tmp / "ct.nii"))
        hu = nib.load(str(tmp / "ct.nii")).get_fdata(dtype=np.float32)
        spacing = case["image"].spacing
        cpp = run_cpp(Path(args.build) / "benchmarks" / "bench_preprocess", tmp, args.repeats)
    zoom_1mm = timeit(lambda: peers.scipy_zoom(hu, (0.45, 0.45, 1.0)), args.repeats)
    zoom_shape = timeit(lambda: peers.scipy_zoom(hu, (0.25, 0.25, 2.0)), args.repeats)
    rows = [
        ("window, 1 (brain 40/80)", cpp["BM_Window1"], "numpy", timeit(lambda: peers.window1(hu), args.repeats)),
        ("window, 3 channels", cpp["BM_Window3"], "numpy", timeit(lambda: peers.window3(hu), args.repeats)),
        ("resample to 1 x 1 x 5 mm (linear, no anti-aliasing)", cpp["BM_ResampleTo1mmNoAA"], "scipy zoom", zoom_1mm),
        ("resample to 1 x 1 x 5 mm (linear, no anti-aliasing)", cpp["BM_ResampleTo1mmNoAA"], "torch interpolate",
         timeit(lambda: peers.torch_resize(hu, (32, 230, 230)), args.repeats)),
        ("resample to 1 x 1 x 5 mm (linear + Gaussian anti-aliasing)", cpp["BM_ResampleTo1mm"], "scipy zoom (no AA)",
         zoom_1mm),
        ("resample to 128 x 128 x 64 (linear, no anti-aliasing)", cpp["BM_ResampleToShapeNoAA"], "scipy zoom",
         zoom_shape),
        ("resample to 128 x 128 x 64 (linear, no anti-aliasing)", cpp["BM_ResampleToShapeNoAA"], "torch interpolate",
         timeit(lambda: peers.torch_resize(hu, (64, 128, 128)), args.repeats)),
        ("resample to 128 x 128 x 64 (linear + Gaussian anti-aliasing)", cpp["BM_ResampleToShape"], "scipy zoom (no AA)",
         zoom_shape),
        ("skull strip", cpp["BM_SkullStrip"], "scipy.ndimage", timeit(lambda: peers.skull_strip(hu, spacing), max(3, args.repeats // 2))),
        ("whole pipeline (default_head_ct)", cpp["BM_Pipeline"], "numpy + scipy", timeit(lambda: peers.pipeline(hu, spacing), args.repeats)),
    ]
    out = [{"stage": stage, "ichkit": a, "peer_name": peer, "peer": b, "ratio": b["median_ms"] / a["median_ms"]}
           for stage, a, peer, b in rows]
    table = peer_table(rows, "stage (512x512x32 at 0.45x0.45x5 mm)")
    print(table)
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "benchmark-preprocess.json").write_text(json.dumps({"threads": torch_threads, "stages": out}, indent=2) + "\n")
    (dest / "benchmark-preprocess.md").write_text(
        "# Preprocessing: ichkit vs numpy / scipy.ndimage / torch\n\n"
        f"Measured by `benchmarks/run.py --suite preprocess` on {torch_threads} cores, median of {args.repeats} runs "
        "after a warm-up; torch with the same thread count. Peers: `benchmarks/preprocess_peers.py`.\n\n" + table + "\n\n"
        "ichkit recycles large freed voxel buffers (`BufferCache` in `include/ichkit/core/volume.h`, 256 MiB by "
        "default), so a step repeated scan after scan writes into memory that is already mapped; numpy, scipy and "
        "torch take fresh pages from the kernel on every call and pay its page faults and zero-fill, which for the "
        "one-window case is most of their time. `ICHKIT_BUFFER_CACHE_MB=0` measures ichkit without the cache.\n")


def model_suite(args):
    """ResNet-18 (the paper's model: width 32, 3 windows, volume + prognosis heads) forward and
    training step, batch 2, at 64x128x128 and 32x256x256: ichkit (C++, oneDNN fast path) against
    the same network and weights in Python torch, eager and traced + frozen; the oneDNN ceiling
    (every convolution of the forward timed alone in oneDNN's blocked layout) measured in the same
    run. Writes benchmark-model.{md,json}."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch  # noqa: E402

    import model_peers as peers  # noqa: E402

    threads = ichkit.available_cores()  # as ichkit's default: this process's cores
    torch.set_num_threads(threads)
    ichkit.set_num_threads(threads)
    cpp = run_cpp(Path(args.build) / "benchmarks" / "bench_model", Path(args.out), max(3, args.repeats // 2))
    ensure_built(Path(args.build) / "benchmarks" / "bench_model")
    cpp_json = subprocess.run([str(Path(args.build) / "benchmarks" / "bench_model"), "--benchmark_format=json",
                               "--benchmark_filter=BM_Forward/", "--benchmark_min_time=0.01"],
                              check=True, capture_output=True, text=True).stdout
    gflop = {b["run_name"].replace("/real_time", ""): b["GFLOP"] for b in json.loads(cpp_json)["benchmarks"]}
    m = ichkit.model.Model(ichkit.model.default_config(), seed=0)
    cfg = m.config
    cfg.pop("pipeline", None)
    net = peers.build(cfg, m.state_dict())
    shapes = dict(enumerate(peers.SHAPES))  # BM_Forward/0, /1 of bench_model
    # the same eager network in a process that never imported ichkit: PyTorch as it comes
    # (this process's peers share the heap setting that ichkit's import makes, see runtime.cpp)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(cfg))
        np.savez(Path(tmp) / "state.npz", **m.state_dict())
        stock = json.loads(subprocess.run(
            [sys.executable, str(Path(__file__).resolve().parent / "model_peers.py"), str(Path(tmp) / "config.json"),
             str(Path(tmp) / "state.npz"), str(threads), str(max(3, args.repeats // 2))],
            check=True, capture_output=True, text=True).stdout)
    rows, out = [], {}
    for k, shape in shapes.items():
        torch.manual_seed(1)
        x = torch.rand(*shape)
        targets = peers.targets()
        reps = max(3, args.repeats // 2)
        eager = timeit(lambda: peers.eager_forward(net, x), reps)
        frozen = peers.frozen(net, x)
        frz = timeit(lambda: peers.frozen_forward(frozen, x), reps)
        step = timeit(lambda: peers.train_step(net, x, targets), reps)
        g = gflop[f"BM_Forward/{k}"]
        fwd, ceil = cpp[f"BM_Forward/{k}"], cpp[f"BM_ConvCeiling/{k}"]
        mod, cstep = cpp[f"BM_ForwardModule/{k}"], cpp[f"BM_TrainStep/{k}"]
        label = "x".join(map(str, shape[2:]))
        best_py = min(eager["median_ms"], frz["median_ms"])
        rows += [
            (f"forward {label}, batch 2", fwd, "torch eager", eager),
            (f"forward {label}, batch 2", fwd, "torch traced + frozen", frz),
            (f"forward {label}, batch 2 (ichkit plain module)", mod, "torch eager", eager),
            (f"training step {label}, batch 2 (fwd + bwd)", cstep, "torch eager", step),
            (f"forward {label}, batch 2", fwd, "torch eager, stock process", stock[label]["eager"]),
            (f"training step {label}, batch 2 (fwd + bwd)", cstep, "torch eager, stock process", stock[label]["train_step"]),
        ]
        out[label] = {"gflop_forward": g, "ichkit_forward": fwd, "ichkit_module": mod, "ichkit_train_step": cstep,
                      "ceiling": ceil, "torch_eager": eager, "torch_frozen": frz, "torch_train_step": step,
                      "stock_torch_eager": stock[label]["eager"], "stock_torch_train_step": stock[label]["train_step"],
                      "train_step_at_ceiling_ms": 3 * ceil["median_ms"],
                      "ichkit_gflops": g / (fwd["median_ms"] / 1000), "ceiling_gflops": g / (ceil["median_ms"] / 1000),
                      "fraction_of_ceiling": ceil["median_ms"] / fwd["median_ms"],
                      "vs_best_python": best_py / fwd["median_ms"]}
    table = peer_table(rows, ratio_decimals=2)
    ceil_lines = ["| input | forward GFLOP | ichkit GFLOP/s | oneDNN ceiling GFLOP/s | ichkit / ceiling |", "|---|---|---|---|---|"]
    for label, o in out.items():
        ceil_lines.append(f"| {label} | {o['gflop_forward']:.1f} | {o['ichkit_gflops']:.0f} | {o['ceiling_gflops']:.0f} | "
                          f"**{100 * o['fraction_of_ceiling']:.0f} %** |")
    ceil_lines += ["", "| training step | ichkit ms | torch eager ms (same process) | its half | convolutions alone at the "
                   "ceiling ms (3x the forward's) | torch eager ms (stock process) |", "|---|---|---|---|---|---|"]
    for label, o in out.items():
        ceil_lines.append(f"| {label} | {o['ichkit_train_step']['median_ms']:.0f} | {o['torch_train_step']['median_ms']:.0f} | "
                          f"{o['torch_train_step']['median_ms'] / 2:.0f} | {o['train_step_at_ceiling_ms']:.0f} | "
                          f"{o['stock_torch_train_step']['median_ms']:.0f} |")
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "benchmark-model.json").write_text(json.dumps({"threads": threads, "torch": torch.__version__, "results": out},
                                                          indent=2) + "\n")
    text = ("# Model: ichkit vs the same network in Python torch\n\n"
            f"Measured by `benchmarks/run.py --suite model` on {threads} cores, torch {torch.__version__} with the same thread "
            "count, ResNet-18 width 32 (3 windows, volume + prognosis heads), batch 2, the same weights on both sides; "
            "medians. Peers: `benchmarks/model_peers.py` (ichkit.nets.MultiTaskNet, eager and torch.jit.trace + freeze "
            "+ optimize_for_inference). The ceiling is every convolution of the forward timed alone in oneDNN's "
            "blocked layout (best of 3 each), summed.\n\n"
            "The peers run in this process, which imported ichkit - and with it ichkit's heap setting (glibc keeps freed "
            "blocks instead of returning every activation to the kernel, `src/core/runtime.cpp`), which speeds eager torch "
            "up about 2x. The 'stock process' rows run the same eager network in a process that never imported ichkit: "
            "PyTorch as a researcher's script gets it. A training step cannot beat its convolutions: at the ceiling "
            "(backward = 2x the forward's convolution work) it would take 3x the forward ceiling, which the last table "
            "sets beside half of the same-process eager step.\n\n" + table + "\n\n" + "\n".join(ceil_lines) + "\n")
    (dest / "benchmark-model.md").write_text(text)
    print(text)


def explain_suite(args):
    """Grad-CAM of both heads (volume, prognosis) of the paper's model (ResNet-18 width 32) at
    layer4 on a 32 x 256 x 256 phantom scan: ichkit (C++; one shared pass, maps on the scan grid)
    against the hook-based Python references on the same network and weights (lean, and the
    pytorch-grad-cam way, once per head), plus one forward + backward of the network in ichkit as
    the yardstick of the issue. Writes benchmark-explain.{md,json}."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch  # noqa: E402

    import explain_peers as peers  # noqa: E402
    import model_peers  # noqa: E402

    threads = ichkit.available_cores()  # as ichkit's default: this process's cores
    torch.set_num_threads(threads)
    ichkit.set_num_threads(threads)
    cpp = run_cpp(Path(args.build) / "benchmarks" / "bench_explain", Path(args.out), max(3, args.repeats // 2))
    cfg = ichkit.model.default_config()
    cfg["pipeline"] = json.loads(ichkit.preprocess.Pipeline().window().to_json())
    m = ichkit.model.Model(cfg, seed=0)
    scan = ichkit.phantom.make_case(shape=[256, 256, 32], spacing=[0.9, 0.9, 5.0], supersample=1, seed=1)["image"]
    x = torch.from_numpy(m.pipeline.run(scan).input[None].copy())
    c = dict(cfg)
    c.pop("pipeline")
    net = model_peers.build(c, m.state_dict())
    reps = max(3, args.repeats // 2)
    # the lean reference and ichkit compute the same maps: check before timing
    e = ichkit.explain.explain(m, scan, ["volume", ("prognosis", 1)], to_scan=False)
    ref = peers.lean(net, x)
    for h, r in zip(e.maps, ref):
        want = r[0].numpy().transpose(2, 1, 0)
        err = float(np.abs(h.network.array - want).max() / max(np.abs(want).max(), 1e-12))
        assert err < 1e-3, f"ichkit and the lean reference disagree on {h.head}: {err:.2g}"
    lean = timeit(lambda: peers.lean(net, x), reps)
    pgc = timeit(lambda: peers.pytorch_grad_cam_style(net, x), reps)
    both, both3 = cpp["BM_GradCamBothHeads/0"], cpp["BM_GradCamBothHeads/1"]
    fwd, fb = cpp["BM_Forward"], cpp["BM_ForwardBackward"]
    rows = [("Grad-CAM, both heads, layer4", both, "hook-based, lean (one pass)", lean),
            ("Grad-CAM, both heads, layer4", both, "pytorch-grad-cam way (a pass per head)", pgc)]
    table = peer_table(rows, ratio_decimals=1)
    own = ["| ichkit | median ms (min..max) | / one forward + backward |", "|---|---|---|"]
    for name, t in [("Grad-CAM both heads, layer4 (on the scan grid)", both), ("Grad-CAM both heads, layer3", both3),
                    ("inference forward (oneDNN fast path)", fwd), ("one forward + backward (module, into every weight)", fb)]:
        own.append(f"| {name} | {ms(t)} | **{t['median_ms'] / fb['median_ms']:.2f}** |")
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "benchmark-explain.json").write_text(json.dumps(
        {"threads": threads, "torch": torch.__version__, "input": [1, 3, 32, 256, 256],
         "ichkit": {"gradcam_both_layer4": both, "gradcam_both_layer3": both3, "forward": fwd, "forward_backward": fb},
         "peers": {"lean": lean, "pytorch_grad_cam_style": pgc},
         "ratios": {"lean_over_ichkit": lean["median_ms"] / both["median_ms"],
                    "pgc_over_ichkit": pgc["median_ms"] / both["median_ms"],
                    "ichkit_over_forward_backward": both["median_ms"] / fb["median_ms"]}}, indent=2) + "\n")
    text = ("# Grad-CAM: ichkit vs hook-based Python\n\n"
            f"Measured by `benchmarks/run.py --suite explain` on {threads} cores, torch {torch.__version__} with the same "
            "thread count. The paper's model (ResNet-18 width 32, 3 windows, volume + prognosis heads), the same weights on "
            "both sides, one 32 x 256 x 256 phantom scan (batch 1); Grad-CAM of the volume output and the 'poor' logit at "
            "layer4. ichkit's time is the whole call: windowing, one forward pass shared by both maps, gradients to layer4 "
            "only, upsampling and the way back onto the scan grid, the prediction. Peers: `benchmarks/explain_peers.py` "
            "(before timing, the lean peer's maps are checked equal to ichkit's).\n\n" + table + "\n\n" + "\n".join(own) + "\n")
    (dest / "benchmark-explain.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
