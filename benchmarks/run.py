#!/usr/bin/env python3
"""ichkit against its Python peers, side by side in one run.

    .venv/bin/python benchmarks/run.py [--repeats 7] [--out docs/results]

Stage 'io' (NIfTI): a 512 x 512 x 32 int16 head CT (phantom, seed 1) as .nii and .nii.gz.
  ichkit: the C++ google-benchmark program build/release/benchmarks/bench_io (median of the
          repetitions) - reading to float32 HU, writing int16.
  peer:   nibabel on the very same files: nib.load(p).get_fdata(dtype=np.float32) and
          nib.save(Nifti1Image(int16 array, affine)) (nibabel's default gzip level 1).
Both use every core they can: nibabel/zlib is single-threaded; ichkit writes gzip in parallel
members. Prints a table of medians (min..max) and peer/ichkit ratios, and writes JSON + Markdown.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
import ichkit  # noqa: E402  (the installed package: run with .venv/bin/python)


def timeit(fn, repeats):
    fn()  # warm-up (page cache, allocator)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": statistics.median(ts), "min_ms": min(ts), "max_ms": max(ts), "n": repeats}


def run_cpp(binary, bench_dir, repeats):
    env = dict(os.environ, ICHKIT_BENCH_DIR=str(bench_dir))
    out = subprocess.run([str(binary), "--benchmark_format=json", f"--benchmark_repetitions={repeats}",
                          "--benchmark_min_time=0.05", "--benchmark_report_aggregates_only=false"],
                         env=env, check=True, capture_output=True, text=True).stdout
    res = {}
    for b in json.loads(out)["benchmarks"]:
        if b.get("run_type") != "iteration":
            continue
        name = b["run_name"].replace("/real_time", "")  # e.g. BM_ReadNifti/nii_gz
        res.setdefault(name, []).append(b["real_time"])
    return {k: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v), "n": len(v)} for k, v in res.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--build", default=str(ROOT / "build" / "release"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "results"))
    args = ap.parse_args()

    threads = os.cpu_count()
    ichkit.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        case = ichkit.phantom.make_case(seed=1)
        hu = np.round(case["image"].array).astype(np.int16)
        aff = case["image"].affine
        nib.save(nib.Nifti1Image(hu, aff), str(tmp / "ct.nii"))
        nib.save(nib.Nifti1Image(hu, aff), str(tmp / "ct.nii.gz"))  # nibabel's own files for both readers

        cpp = run_cpp(Path(args.build) / "benchmarks" / "bench_io", tmp, args.repeats)
        rows = []
        for ext, key in ((".nii", "nii"), (".nii.gz", "nii_gz")):
            p = str(tmp / ("ct" + ext))
            peer_read = timeit(lambda: nib.load(p).get_fdata(dtype=np.float32), args.repeats)
            outp = str(tmp / ("peer-out" + ext))
            peer_write = timeit(lambda: nib.save(nib.Nifti1Image(hu, aff), outp), args.repeats)
            rows.append(("read " + ext, cpp[f"BM_ReadNifti/{key}"], peer_read))
            rows.append(("write " + ext, cpp[f"BM_WriteNifti/{key}"], peer_write))
        size = {ext: os.path.getsize(tmp / ("ct" + ext)) for ext in (".nii", ".nii.gz")}

    result = {
        "machine": {"cpus": threads, "platform": platform.platform(), "python": platform.python_version(),
                    "nibabel": nib.__version__, "numpy": np.__version__, "ichkit": ichkit.__version__},
        "input": {"shape": [512, 512, 32], "dtype": "int16", "bytes": size},
        "stages": [{"stage": s, "ichkit": a, "nibabel": b, "ratio": b["median_ms"] / a["median_ms"]} for s, a, b in rows],
    }
    lines = ["| stage (512x512x32 int16) | ichkit median ms (min..max) | nibabel median ms (min..max) | nibabel / ichkit |",
             "|---|---|---|---|"]
    for r in result["stages"]:
        a, b = r["ichkit"], r["nibabel"]
        lines.append(f"| {r['stage']} | {a['median_ms']:.1f} ({a['min_ms']:.1f}..{a['max_ms']:.1f}) | "
                     f"{b['median_ms']:.1f} ({b['min_ms']:.1f}..{b['max_ms']:.1f}) | **{r['ratio']:.2f}x** |")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark-io.json").write_text(json.dumps(result, indent=2) + "\n")
    md = ["# NIfTI IO: ichkit vs nibabel", "",
          f"Measured by `benchmarks/run.py` on {threads} cores ({platform.platform()}), nibabel {nib.__version__}, "
          f"median of {args.repeats} runs after a warm-up, page cache warm. Read = to float32 HU "
          "(`read_nifti<float>` vs `get_fdata(dtype=float32)`); write = int16 (`write_nifti` vs `nib.save`, both gzip "
          "level 1 for .nii.gz; ichkit compresses independent gzip members on all cores, nibabel/zlib uses one).", "",
          table, ""]
    (out / "benchmark-io.md").write_text("\n".join(md))


if __name__ == "__main__":
    main()
