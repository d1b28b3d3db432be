"""Synthetic non-contrast head CTs with a known hematoma mask, volume, location and outcome."""
from ._core import phantom as _p

outcome_logit = _p.outcome_logit
make_case = _p.make_case

__all__ = ["make_case", "make_cohort", "outcome_logit"]


def make_cohort(out_dir, *, n=10, seed=1, shape=(512, 512, 32), spacing=(0.45, 0.45, 5.0), tilt=0.0, noise=6.0,
                compress=True, progress=False):
    """Write ``n`` cases into ``out_dir`` (``images/``, ``masks/``, ``manifest.csv``).

    ``progress=True`` shows a tqdm bar (when tqdm is installed); a callable
    ``progress(total=..., desc=...)`` returning a tqdm-like object is used as is.
    Returns the manifest rows as dicts.
    """
    bar = None
    if progress is True:
        try:
            from tqdm.auto import tqdm as bar
        except ImportError:  # pragma: no cover - tqdm is optional
            bar = None
    elif callable(progress):
        bar = progress
    return _p.make_cohort(str(out_dir), n=n, seed=seed, shape=list(shape), spacing=list(spacing), tilt=tilt,
                          noise=noise, compress=compress, progress=bar)
