#!/usr/bin/env python3
"""Table of an end-to-end benchmark run: bench_device's JSON (ichkit) beside device_peers.py's
(the default and tuned Python pipelines), as Markdown (and the merged JSON beside it).

    python3 benchmarks/device_report.py ICHKIT.json PEERS.json --out table.md
    python3 benchmarks/device_report.py ICHKIT.json --precision-only --reduced BF16.json FP16.json --out p.md
"""
import argparse
import json
import re
from pathlib import Path

from timing import ms

STAGES = [  # (key, label)
    ("read_nii_gz", "read .nii.gz (512x512x32 int16)"),
    ("window3", "3 windows"),
    ("resample_1mm", "resample to 1x1x5 mm (ichkit: with Gaussian anti-aliasing, its default)"),
    ("resample_1mm_noaa", "resample to 1x1x5 mm, linear without anti-aliasing (the peers' job: scipy zoom / torch interpolate)"),
    ("skull_strip", "skull strip (512x512x32)"),
    ("skull_strip_1mm", "skull strip on the 1x1x5 mm grid, cropped to the head (the pipeline's)"),
    ("preprocess", "whole preprocessing (resample, crop, skull strip, crop/pad, windows)"),
    ("forward_b1", "forward, batch 1"),
    ("forward_b{batch}", "forward, batch {batch}"),
    ("gradcam_both", "Grad-CAM of both heads (from the network input)"),
    ("gradcam_both_from_scan", "Grad-CAM of both heads from the scan (ichkit: + preprocessing, maps on the scan grid)"),
    ("write_heatmap", "write a heatmap .nii.gz"),
    ("end_to_end", "**end to end per scan** (file in, prediction + 2 heatmaps out)"),
]


def ratio(peer, ours):
    return f"**{peer['median_ms'] / ours['median_ms']:.1f}x**" if peer and ours else "-"


def batch_of(ich):
    """The batch of the batched forward: the cohort's, or the forward_bN stage's (N > 1)."""
    sizes = [int(m.group(1)) for k in ich["stages"] if (m := re.fullmatch(r"forward_b(\d+)", k))]
    return ich.get("cohort", {}).get("batch") or next((b for b in sizes if b != 1), 4)


def precision_sections(ich, reduced, batch):
    """Each precision's prediction and maps against the CPU's, and each reduced precision's times
    against float32's (ich) on the device."""
    lines = []
    refs = [(r["precision"], r.get("cpu_reference"), r.get("prediction")) for r in (ich, *reduced)]
    if any(r for _, r, _ in refs):
        lines += ["", "Against the CPU (the same weights and scan, float32 on the CPU):", "",
                  "| on the device | volume mL (CPU) | difference | P(poor) (CPU) | difference | maps: max abs difference "
                  "(normalized, [0, 1]) / Pearson r |", "|---|---|---|---|---|---|"]
        for prec, r, pred in refs:
            if not r:
                continue
            maps = ", ".join(f"{m['head']} {m['max_abs_diff_normalized']:.1e} / {m['pearson']:.6f}" for m in r["maps"])
            lines.append(f"| {prec}: volume {pred['volume_ml']:.4f}, P(poor) {pred['p_poor']:.5f} | {r['volume_ml']:.4f} | "
                         f"{r['volume_abs_diff_ml']:.1e} | {r['p_poor']:.5f} | {r['p_poor_abs_diff']:.1e} | {maps} |")
    for red in reduced:
        p = red["precision"]
        lines += ["", f"| {p} against float32 on the device | float32 ms | {p} ms | float32 / {p} |",
                  "|---|---|---|---|"]
        for key in ("forward_b1", f"forward_b{batch}", "gradcam_both", "gradcam_both_from_scan", "end_to_end"):
            a, b = ich["stages"].get(key), red["stages"].get(key)
            if a and b:
                lines.append(f"| {key} | {ms(a)} | {ms(b)} | {a['median_ms'] / b['median_ms']:.2f}x |")
    return lines


def report(ich, peers, alone=None, reduced=()):
    batch = batch_of(ich)
    d, t = peers.get("default", {}), peers.get("tuned", {})
    dev = ich["device"] + (f" ({t.get('gpu') or d.get('gpu')})" if ich["device"] != "cpu" else "")
    cpu = ich.get("cpu") or {}
    if cpu.get("name"):  # the host of this VM changes between runs, and the ratios with it
        fms = "/".join(str(cpu[k]) for k in ("family", "model", "stepping") if k in cpu)
        dev += (f"; CPU {cpu['name']}" + (f" (family/model/stepping {fms})" if fms else "") +
                (", AVX-512" if cpu.get("avx512f") else "") +
                "".join(f", {lvl.upper()} {cpu[lvl]}" for lvl in ("l2", "l3") if cpu.get(lvl)))
    lines = [f"Device: **{dev}**, {ich['threads']} CPU threads on both sides; ichkit {ich['ichkit']} (LibTorch "
             f"{ich['torch']}, {ich['precision']}), Python peers on torch {t.get('torch', d.get('torch', '?'))}. "
             f"Network input {'x'.join(str(v) for v in ich['network_input'][1:])} (C, D, H, W). Medians of "
             f"the timed runs after a warm-up (min..max); slow peer stages (> 2 s) 5 runs.", "",
             "| stage | ichkit ms | default peer ms | default / ichkit | tuned peer ms | tuned / ichkit |",
             "|---|---|---|---|---|---|"]
    for key, label in STAGES:
        key = key.format(batch=batch)
        label = label.format(batch=batch)
        a = ich["stages"].get(key)
        if a is None:
            continue
        peer_key = "resample_1mm" if key == "resample_1mm_noaa" else key  # the peers have one resampling
        pd, pt = d.get("stages", {}).get(peer_key), t.get("stages", {}).get(peer_key)
        lines.append(f"| {label} | {ms(a)} | {ms(pd)} | {ratio(pd, a)} | {ms(pt)} | {ratio(pt, a)} |")
    lines.append("")
    rss = [("ichkit", ich.get("peak_rss_mb")), ("default peer", d.get("peak_rss_mb")), ("tuned peer", t.get("peak_rss_mb"))]
    lines.append("Peak RSS after the per-scan stages: " + ", ".join(f"{n} {v:.0f} MB" for n, v in rss if v) + ".")
    if alone:
        ri, rp = alone
        parts = [f"ichkit {ri['peak_rss_mb']:.0f} MB"] + [
            f"{side} peer {rp[side]['peak_rss_mb']:.0f} MB" for side in ("default", "tuned") if side in rp]
        lines.append("**Peak RSS of a process that runs only the end-to-end job** (one scan file in, prediction + "
                     "2 heatmaps out, 3 times): " + ", ".join(parts) + ".")
    gpu = [(n, p.get("peak_gpu_mb")) for n, p in (("default peer", d), ("tuned peer", t)) if p.get("peak_gpu_mb")]
    if gpu:
        lines.append("Peak GPU memory allocated by torch: " + ", ".join(f"{n} {v:.0f} MB" for n, v in gpu) + ".")
    for key, files in (("cohort", ".nii.gz files"), ("cohort_nii", "the same files uncompressed (.nii)")):
        c = ich.get(key)
        if not c:
            continue
        rounds = c.get("rounds", [c])
        spread = (f" ({c['fraction_of_bound_min']:.2f}..{c['fraction_of_bound_max']:.2f} over {len(rounds)} rounds)"
                  if len(rounds) > 1 else "")
        bracketed = "model_only_seconds" in rounds[0]
        each = (", the model-only run timed just before and just after each cohort" if bracketed
                else ", each timing the forward alone and then the cohort")
        lines += ["", f"| cohort from {files} | scans/s | scans/min | note |", "|---|---|---|---|",
                  f"| ichkit `predict_files` ({c['scans']} scans, batch {c['batch']}, schedule {c.get('schedule', 'auto')}; "
                  f"the median of {len(rounds)} rounds{each}) | "
                  f"{c['scans_per_s']:.2f} | {60 * c['scans_per_s']:.0f} | "
                  f"**{c['fraction_of_bound']:.2f} of the model-only bound**{spread} |",
                  (f"| model-only bound (the same {c['scans']} scans already prepared: batches of {c['batch']} stacked, "
                   f"run and decoded; mean of the runs before and after the round's cohort) | "
                   if bracketed else f"| model-only bound (forward batch {c['batch']} alone, same round) | ") +
                  f"{c['model_bound_scans_per_s']:.2f} | "
                  f"{60 * c['model_bound_scans_per_s']:.0f} | |"]
        if "cores_shared_bound_scans_per_s" in c:
            b = c["cores_shared_bound_scans_per_s"]
            lines.append(f"| cores-shared bound (forward + reading and preprocessing, {c['prepare_ms_one_thread']:.0f} ms "
                         f"of one core per scan, on the same cores) | {b:.2f} | {60 * b:.0f} | ichkit at "
                         f"**{c['fraction_of_cores_shared_bound']:.2f}** of it |")
        if "readers_bound_scans_per_s" in c:
            b = c["readers_bound_scans_per_s"]
            lines.append(f"| readers bound (reading and preprocessing, {c['prepare_ms_one_thread']:.0f} ms of one core "
                         f"per scan, one reader per core but one) | {b:.1f} | {60 * b:.0f} | |")
        if "readers_alone_scans_per_s" in c:
            b = c["readers_alone_scans_per_s"]
            lines.append(f"| the {c.get('readers', '')} readers measured alone, side by side (no network) | {b:.1f} | "
                         f"{60 * b:.0f} | ichkit at **{c['scans_per_s'] / b:.2f}** of it |")
        tc = t.get(key)
        if tc:
            lines.append(f"| tuned peer, serial, the same files ({tc['scans']} scans timed) | {tc['scans_per_s']:.3f} | "
                         f"{60 * tc['scans_per_s']:.1f} | ichkit **{c['scans_per_s'] / tc['scans_per_s']:.1f}x** |")
    if ich.get("cuda_layout"):
        lay = ich["cuda_layout"]
        lines += ["", "Memory layout on CUDA (the model times both on its first batch of each shape and keeps the "
                  "faster; each forced, same run):", "",
                  "| forward | chosen | ms as chosen | NCDHW forced ms | NDHWC forced ms |", "|---|---|---|---|---|"]
        for b in ("1", str(batch)):
            row = [ich["stages"].get(f"forward_b{b}{tag}") for tag in ("", "_ncdhw", "_ndhwc")]
            if row[0]:
                lines.append(f"| batch {b} | {lay.get('b' + b, '?')} | " + " | ".join(ms(x) for x in row) + " |")
    lines += precision_sections(ich, reduced, batch)
    ce = ich.get("ceilings")
    if ce:
        def fraction(paired, unpaired):
            # paired: the stage and its ceiling alternating round by round at the end of the run (the
            # median round); unpaired: the stage's median from the table against the ceiling's best
            if not paired:
                return f"**{100 * unpaired:.0f} %**"
            return (f"**{100 * paired['fraction']:.0f} %** ({100 * paired['fraction_min']:.0f}-"
                    f"{100 * paired['fraction_max']:.0f} % over {paired['rounds']} paired rounds; "
                    f"{100 * unpaired:.0f} % unpaired)")
        lines += ["", "| ceiling (same run) | measured | ichkit | ichkit / ceiling |", "|---|---|---|---|"]
        for k in sorted(ce):
            if k.startswith("onednn_conv_b") and ce[k]:
                b = k[len("onednn_conv_b"):]
                ours = ce.get(f"forward_b{b}_gflops")
                lines.append(f"| oneDNN 3D convolutions, batch {b} (each alone, summed) | {ce[k]['gflops']:.0f} GFLOP/s "
                             f"({ce[k]['gflop']:.1f} GFLOP) | forward {ours:.0f} GFLOP/s | "
                             f"{fraction(ce[k].get('paired'), ours / ce[k]['gflops'])} |")
        if "memory_bandwidth_gbs" in ce:
            lines.append(f"| memory bandwidth (copy, all threads) | {ce['memory_bandwidth_gbs']:.1f} GB/s | 3 windows "
                         f"{ce['window3_gbs']:.1f} GB/s | "
                         f"{fraction(ce.get('window3_paired'), ce['window3_gbs'] / ce['memory_bandwidth_gbs'])} |")
        if any(isinstance(v, dict) and "paired" in v for v in ce.values()) or "window3_paired" in ce:
            lines += ["", "The ceilings are measured at the end of the run, minutes after the stages; this VM's speed "
                      "moves within seconds, so each stage's fraction is measured again beside its ceiling: a run of "
                      "the stage, then a run of the ceiling (every convolution alone, its best of 3; one copy), round after "
                      "round, each round's ratio its own; the median round is shown first. \"unpaired\" is the "
                      "stage's median from the table above against the ceiling's best."]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("ichkit")
    ap.add_argument("peers", nargs="?", help="device_peers.py's results (not with --precision-only)")
    ap.add_argument("--precision-only", action="store_true",
                    help="only the precisions against the CPU and against float32 (ICHKIT: the float32 run)")
    ap.add_argument("--out")
    ap.add_argument("--title", default="")
    ap.add_argument("--reduced", nargs="+", default=[], metavar="JSON",
                    help="bench_device's results for --precision bfloat16 / float16 (same device)")
    ap.add_argument("--rss", nargs=2, metavar=("ICHKIT", "PEERS"),
                    help="results of both sides run with --only end_to_end (their own peak RSS)")
    a = ap.parse_args()
    ich = json.loads(Path(a.ichkit).read_text())
    reduced = [json.loads(Path(f).read_text()) for f in a.reduced]
    if a.precision_only:
        if a.peers or a.rss or not reduced:
            ap.error("--precision-only takes ICHKIT (float32) and --reduced, nothing else")
        cpu = ich.get("cpu") or {}
        head = (f"Device: **{ich['device']}**, {ich['threads']} CPU threads (CPU {cpu.get('name', '?')}); ichkit "
                f"{ich['ichkit']}, LibTorch {ich['torch']}. Medians of the timed runs after a warm-up (min..max); "
                f"one run of bench_device per precision, in the order " +
                ", ".join(r["precision"] for r in [ich] + reduced) + ".")
        body = head + "\n" + "\n".join(precision_sections(ich, reduced, batch_of(ich))) + "\n"
        merged = {f"ichkit_{r['precision']}": r for r in [ich] + reduced}
    else:
        if not a.peers:
            ap.error("PEERS is required (or --precision-only)")
        peers = json.loads(Path(a.peers).read_text())
        if "side" in peers:  # a single side
            peers = {peers["side"]: peers}
        rss = None
        if a.rss:
            ri, rp = (json.loads(Path(f).read_text()) for f in a.rss)
            rss = (ri, {rp["side"]: rp} if "side" in rp else rp)
        body = report(ich, peers, rss, reduced)
        merged = {"ichkit": ich, "peers": peers, "end_to_end_alone": rss,
                  **{f"ichkit_{r['precision']}": r for r in reduced}}
    text = (f"{a.title}\n\n" if a.title else "") + body
    if a.out:
        Path(a.out).write_text(text)
        Path(a.out).with_suffix(".json").write_text(json.dumps(merged, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
