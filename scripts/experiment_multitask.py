#!/usr/bin/env python3
"""The paper's claim tested on phantoms (issue 5, must-show 1 and 2): single-task volume,
single-task outcome, joint multi-task and two-stage multi-task (Gong et al. 2023), each over
several seeds, on one fixed phantom cohort; plus a joint model with a segmentation head, whose
mask volume is a second volume estimate. Writes docs/results/phantom-multitask.{md,json}.

Run (about an hour on 2 cores with the defaults):
    .venv/bin/python scripts/experiment_multitask.py
Interrupted runs resume: each finished run is kept under --data/runs (record + model file).
Smaller: --n-train 80 --n-val 20 --n-test 40 --epochs 5 --seeds 1 (minutes).
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np

import ichkit

ROOT = Path(__file__).resolve().parents[1]


def pipeline(args):
    return json.loads(ichkit.preprocess.Pipeline().reorient("RAS").resample_to_spacing(args.net_spacing)
                      .center_crop_or_pad(args.net_shape).window().to_json())


def config(args, heads):
    spec = {
        "volume": {"name": "volume", "type": "regression", "target": "volume_ml", "params": {"transform": "log1p"}},
        "prognosis": {"name": "prognosis", "type": "classification", "target": "outcome",
                      "params": {"classes": ["good", "poor"]}},
        "seg": {"name": "seg", "type": "segmentation", "target": "mask", "weight": 1.0, "params": {"channels": 16}},
    }
    return {"encoder": {"depth": args.depth, "width": args.width, "in_channels": 3, "stem_stride": [1, 2, 2]},
            "heads": [spec[h] for h in heads], "pipeline": pipeline(args)}


CONFIGS = {
    "single-task volume": (["volume", "prognosis"], {"mode": "single-task", "task": "volume"}),
    "single-task outcome": (["volume", "prognosis"], {"mode": "single-task", "task": "prognosis"}),
    "joint multi-task": (["volume", "prognosis"], {"mode": "joint"}),
    "two-stage multi-task": (["volume", "prognosis"], {"mode": "two-stage"}),
    "joint + segmentation": (["volume", "prognosis", "seg"], {"mode": "joint"}),
}


def mean_sd(values):
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return "n/a"
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if v.size > 1 else f"{v.mean():.3f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "build" / "experiment-multitask"), help="cohort and cache folder")
    ap.add_argument("--n-train", type=int, default=400)
    ap.add_argument("--n-val", type=int, default=100)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--head-epochs", type=int, default=8)
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--shape", type=int, nargs=3, default=[256, 256, 32], help="phantom grid")
    ap.add_argument("--spacing", type=float, nargs=3, default=[0.9, 0.9, 5.0], help="phantom voxel size (mm)")
    ap.add_argument("--net-spacing", type=float, nargs=3, default=[3.0, 3.0, 5.0])
    ap.add_argument("--net-shape", type=int, nargs=3, default=[64, 64, 32])
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS))
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "phantom-multitask"))
    ap.add_argument("--report-only", action="store_true", help="write the report from the finished runs; train nothing")
    args = ap.parse_args()

    data = Path(args.data)
    n = args.n_train + args.n_val + args.n_test
    cohort = data / f"cohort-{n}-{'x'.join(map(str, args.shape))}"
    if not (cohort / "manifest.csv").exists():
        t = time.time()
        ichkit.phantom.make_cohort(str(cohort), n=n, seed=2023, shape=args.shape, spacing=args.spacing, compress=False)
        print(f"cohort of {n} phantoms in {time.time() - t:.0f} s")
    m = ichkit.model.Manifest.read(str(cohort / "manifest.csv"))
    idx = list(range(n))
    train = m.subset(idx[:args.n_train])
    val = m.subset(idx[args.n_train:args.n_train + args.n_val])
    test = m.subset(idx[args.n_train + args.n_val:])

    results = {}
    runs = data / "runs"
    runs.mkdir(parents=True, exist_ok=True)

    def report():
        write_report(args, results)

    for seed in range(args.seeds):  # every configuration once before the next seed
        for name in args.configs:
            heads, opts = CONFIGS[name]
            # one record (with per-case rows) and one model file per run: an interrupted experiment
            # resumes where it stopped, and the explain issue reuses the models
            slug = name.replace(" ", "-").replace("+", "plus")
            record = runs / f"{slug}-seed{seed}.json"
            if record.exists():
                results.setdefault(name, []).append(json.loads(record.read_text()))
                print(f"{name} seed {seed}: done before ({record.name})", flush=True)
                report()
                continue
            if args.report_only:
                continue
            t = time.time()
            o = {"epochs": args.epochs, "head_epochs": args.head_epochs, "batch_size": 8, "lr": 2e-3, "head_lr": 2e-3,
                 "seed": seed, "patience": 8, "cache_dir": str(data / "cache"), **opts}
            model, summary = ichkit.train(config(args, heads), train, val, o)
            metrics, rows = ichkit.evaluate(model, test)
            run = {"seed": seed, "metrics": metrics, "rows": rows, "best_epoch": summary["best_epoch"],
                   "seconds": time.time() - t}
            model.save(str(runs / f"{slug}-seed{seed}.ichkit"))
            tmp = record.with_suffix(".tmp")
            tmp.write_text(json.dumps(run))
            tmp.replace(record)
            results.setdefault(name, []).append(run)
            print(f"{name} seed {seed}: {time.time() - t:.0f} s, best epoch {summary['best_epoch']}, "
                  + ", ".join(f"{h} " + ", ".join(f"{k}={v:.3f}" for k, v in mm.items() if isinstance(v, float) and k in
                                                  ("mae", "r2", "icc2_1", "auc", "dice_mean"))
                              for h, mm in metrics.items()), flush=True)
            report()


def write_report(args, results):
    # volume MAE restricted to hematomas <= 80 mL, and ABC/2 of the true mask on the same cases
    def small_mae(rows, key):
        t = np.array([r["volume_ml"] for r in rows])
        p = np.array([r[key] for r in rows])
        keep = t <= 80
        return float(np.mean(np.abs(p[keep] - t[keep])))

    lines = ["# Multi-task vs single-task on phantoms (Gong et al. 2023's claim)", "",
             f"`scripts/experiment_multitask.py` (defaults): one phantom cohort (seed 2023) of {args.n_train} train / "
             f"{args.n_val} validation / {args.n_test} test cases, {args.shape[0]}x{args.shape[1]}x{args.shape[2]} at "
             f"{args.spacing[0]}x{args.spacing[1]}x{args.spacing[2]} mm; network input 3 windows x "
             f"{args.net_shape[2]}x{args.net_shape[1]}x{args.net_shape[0]} at {args.net_spacing[0]}x{args.net_spacing[1]}x"
             f"{args.net_spacing[2]} mm; ResNet-{args.depth} width {args.width}; AdamW, {args.epochs} epochs "
             f"(two-stage: + {args.head_epochs} head epochs on the frozen encoder), batch 8, best epoch by validation "
             f"loss; {args.seeds} seeds (weights, order, augmentation). Mean ± sd over seeds on the test set.", "",
             "| configuration | volume MAE (mL) | RMSE | R² | ICC(2,1) | ICC(3,1) | MAE ≤ 80 mL | outcome AUC | AUC 95 % CI (seed 0) | accuracy | F1 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, runs in results.items():
        def g(head, key):
            return [r["metrics"].get(head, {}).get(key) for r in runs]
        vol = [r for r in runs if "volume" in r["metrics"]]
        small = [small_mae(r["rows"], "volume") for r in vol]
        ci = runs[0]["metrics"].get("prognosis", {}).get("auc_ci")
        lines.append(f"| {name} ({len(runs)} seed{'s' if len(runs) > 1 else ''}) | {mean_sd(g('volume', 'mae'))} | {mean_sd(g('volume', 'rmse'))} | {mean_sd(g('volume', 'r2'))} | "
                     f"{mean_sd(g('volume', 'icc2_1'))} | {mean_sd(g('volume', 'icc3_1'))} | {mean_sd(small)} | "
                     f"{mean_sd(g('prognosis', 'auc'))} | {'n/a' if not ci else f'{ci[0]:.3f}–{ci[1]:.3f}'} | "
                     f"{mean_sd(g('prognosis', 'accuracy'))} | {mean_sd(g('prognosis', 'f1'))} |")
        if name == "joint + segmentation":
            seg_mae = []
            for r in runs:
                t = np.array([x["volume_ml"] for x in r["rows"]])
                p = np.array([x["seg_ml"] for x in r["rows"]])
                seg_mae.append(float(np.mean(np.abs(p - t))))
            lines.append(f"| ↳ volume of the segmentation mask | {mean_sd(seg_mae)} | | | | | "
                         f"{mean_sd([small_mae(r['rows'], 'seg_ml') for r in runs])} | Dice {mean_sd(g('seg', 'dice_mean'))} | | | |")
    first = next(iter(results.values()))[0]
    done = sum(len(v) for v in results.values())
    if done < len(args.configs) * args.seeds:
        missing = [f"{n} ({args.seeds - len(results.get(n, []))} of {args.seeds} seeds)" for n in args.configs
                   if len(results.get(n, [])) < args.seeds]
        lines.insert(2, f"**Partial: {done} of {len(args.configs) * args.seeds} runs done; not yet run: {', '.join(missing)}.** "
                        "The script resumes where it stopped.\n")
    if "abc2_true_mask" in first["metrics"]:
        a = first["metrics"]["abc2_true_mask"]
        lines.append(f"| ABC/2 of the true mask (baseline) | {a['mae']:.3f} | {a['rmse']:.3f} | {a['r2']:.3f} | "
                     f"{a['icc2_1']:.3f} | {a['icc3_1']:.3f} | {small_mae(first['rows'], 'abc2_true_mask_ml'):.3f} | | | | |")
    lines += ["", "Seconds per run: " + ", ".join(f"{k} {np.mean([r['seconds'] for r in v]):.0f}" for k, v in results.items()), ""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # a person's reading of the results, under its own heading, survives a rewrite
    md = out.with_suffix(".md")
    old = md.read_text() if md.exists() else ""
    kept = old[old.index("\n## What came out"):] if "\n## What came out" in old else ""
    md.write_text("\n".join(lines) + kept)
    slim = {k: [{kk: vv for kk, vv in r.items() if kk != "rows"} for r in v] for k, v in results.items()}
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "results": slim}, indent=1) + "\n")
    if done == len(args.configs) * args.seeds:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
