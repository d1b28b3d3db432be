"""Cohort inference on a Dask distributed cluster: one result row per scan, in manifest order.

>>> from dask.distributed import Client, LocalCluster
>>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))
>>> rows = ichkit.distributed.predict_cohort("cohort/manifest.csv", "model.ichkit", client)
>>> [r for r in rows if not r["ok"]]        # scans that failed, with their error

The model travels to each worker once (its bytes, scattered; no pickled code) and is loaded
there once per process. A scan that cannot be read or predicted gives a row with ``ok=False``
and the error (its type and message); the other scans go on. Each worker runs ichkit with
``threads`` threads (default: its share of the machine's cores).
"""
from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path
from typing import Any, Iterable, List, Optional, Sequence, Union

from ._core import available_cores

_MODELS: dict = {}  # per worker process: sha256 of the model bytes -> loaded Model


def _rows_from(manifest) -> List[dict]:
    if isinstance(manifest, (str, os.PathLike)) and str(manifest).endswith(".csv"):
        base = Path(manifest).resolve().parent
        with open(manifest, newline="") as f:
            rows = list(csv.DictReader(f))
        if rows and "image" not in rows[0]:
            raise ValueError(f"{manifest}: a manifest needs an 'image' column")
        out = []
        for i, r in enumerate(rows):
            p = Path(r["image"])
            out.append({"id": r.get("id") or f"row{i}", "scan": str(p if p.is_absolute() else base / p)})
        return out
    if isinstance(manifest, (str, os.PathLike)):
        raise ValueError(f"{manifest}: give a manifest .csv or a list of scan paths")
    return [{"id": Path(str(p)).name.split(".")[0] or f"row{i}", "scan": str(p)} for i, p in enumerate(manifest)]


def _model_bytes(model) -> bytes:
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    if isinstance(model, (str, os.PathLike)):
        return Path(model).read_bytes()
    return model.to_bytes()


def _explain_dir(explain_dir: Optional[str]) -> Optional[str]:
    """The heatmap folder, created, as an absolute path (workers may run elsewhere)."""
    if not explain_dir:
        return None
    Path(explain_dir).mkdir(parents=True, exist_ok=True)
    return str(Path(explain_dir).resolve())


def _predict_one(item: dict, model_bytes: bytes, digest: str, threads: int, explain_dir: Optional[str]) -> dict:
    import ichkit

    row = dict(item)
    try:
        if threads > 0 and ichkit.num_threads() != threads:
            ichkit.set_num_threads(threads)
        m = _MODELS.get(digest)
        if m is None:
            m = _MODELS[digest] = ichkit.model.Model.from_bytes(model_bytes)
        vol = ichkit.read(item["scan"])
        if explain_dir:
            heads = [h["name"] for h in m.config["heads"] if h["type"] != "segmentation"]
            e = ichkit.explain.explain(m, vol, heads)
            pred = e.prediction
            for h in e.maps:
                path = Path(explain_dir) / f"{item['id']}_{h.head}_heatmap.nii.gz"
                ichkit.write_nifti(h.normalized, str(path))
                row[f"{h.head}_heatmap"] = str(path)
        else:
            pred = m.predict(vol)
        for name, p in pred.items():
            if p["type"] == "segmentation":
                row[f"{name}_ml"] = p["value"]
                row[f"{name}_abc2_ml"] = p["abc2_ml"]
            elif "probabilities" in p:
                for cls, prob in zip(p["classes"], p["probabilities"]):
                    row[f"{name}_p_{cls}"] = prob
                row[name] = p["classes"][int(p["value"])]
            else:
                row[name] = p["value"]
        row["ok"] = True
        row["error"] = ""
    except Exception as exc:  # noqa: BLE001 - every failure becomes a reported row
        row["ok"] = False
        row["error"] = f"{type(exc).__name__}: {exc}"
    return row


def predict_cohort(manifest: Union[str, os.PathLike, Sequence[Any]], model, client, *, threads: int = 0,
                   explain_dir: Optional[str] = None, as_frame: bool = False):
    """Predict every scan of ``manifest`` (a manifest CSV with an ``image`` column, or a list of
    NIfTI files / DICOM folders) with ``model`` (a path, a Model or model-file bytes) on the Dask
    ``client``'s workers. Returns one dict per scan in input order (``id``, ``scan``, ``ok``,
    ``error`` and the predictions as ``ichkit predict`` names them), or a pandas DataFrame with
    ``as_frame=True``. ``explain_dir`` adds each head's heatmap NIfTI (written by the workers)."""
    items = _rows_from(manifest)
    data = _model_bytes(model)
    digest = hashlib.sha256(data).hexdigest()
    if threads <= 0:
        info = client.scheduler_info().get("workers", {})
        per = [w.get("nthreads", 1) for w in info.values()] or [1]
        threads = max(1, available_cores() // max(1, sum(per)))  # this process's cores, not the machine's
    explain_dir = _explain_dir(explain_dir)
    [shared] = client.scatter([data], broadcast=True)
    futures = [client.submit(_predict_one, it, shared, digest, threads, explain_dir, pure=False) for it in items]
    rows = client.gather(futures)
    if as_frame:
        import pandas as pd

        return pd.DataFrame(rows)
    return rows


def predict_serial(manifest, model, *, explain_dir: Optional[str] = None) -> List[dict]:
    """The same rows computed in this process, one scan after another (the reference)."""
    items = _rows_from(manifest)
    data = _model_bytes(model)
    digest = hashlib.sha256(data).hexdigest()
    explain_dir = _explain_dir(explain_dir)
    return [_predict_one(it, data, digest, 0, explain_dir) for it in items]


__all__ = ["predict_cohort", "predict_serial"]
