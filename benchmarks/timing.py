"""Timing shared by the benchmark driver (run.py) and the Python peers (model_peers.py,
device_peers.py). Standard library only: the peer processes must not import ichkit."""
import statistics
import time


def summary(ms):
    """{median_ms, min_ms, max_ms, n} of a list of times in ms."""
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms), "n": len(ms)}


def timeit(fn, repeats, sync=None, slow_s=None):
    """Times `repeats` calls of fn after one warm-up call (page cache, allocator, lazy init).
    `sync` runs after every call (a CUDA synchronise); when the warm-up took more than `slow_s`
    seconds, 5 timed calls are enough for a stable median."""
    sync = sync or (lambda: None)
    t0 = time.perf_counter()
    fn()
    sync()
    if slow_s is not None and time.perf_counter() - t0 > slow_s:
        repeats = min(repeats, 5)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append((time.perf_counter() - t0) * 1000)
    return summary(ts)


def ms(t):
    """'median (min..max)' of a timing, in ms; '-' for none."""
    return f"{t['median_ms']:.1f} ({t['min_ms']:.1f}..{t['max_ms']:.1f})" if t else "-"
