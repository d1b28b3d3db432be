"""ichkit.Volume: zero-copy views, nibabel's index order, torch interop, errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import ichkit


def make(shape=(5, 4, 3), dtype=np.float32):
    return np.arange(np.prod(shape), dtype=dtype).reshape(shape)


def test_array_indexes_like_the_input_and_is_a_view():
    a = make()
    aff = np.diag([0.5, 0.6, 5.0, 1.0])
    v = ichkit.Volume(a, aff)
    assert v.shape == (5, 4, 3)
    np.testing.assert_array_equal(v.array, a)
    assert v.array[2, 3, 1] == a[2, 3, 1]
    # i fastest in memory: a Fortran-ordered view
    assert v.array.flags.f_contiguous
    view = v.array
    view[1, 2, 0] = -7
    assert v.array[1, 2, 0] == -7
    assert np.shares_memory(view, v.array)
    np.testing.assert_array_equal(v.affine, aff)
    assert v.spacing == pytest.approx((0.5, 0.6, 5.0))
    assert v.orientation == "RAS"


def test_construction_copies_and_copy_is_deep():
    a = make()
    v = ichkit.Volume(a)
    a[0, 0, 0] = 99
    assert v.array[0, 0, 0] == 0
    c = v.copy()
    c.array[0, 0, 0] = 5
    assert v.array[0, 0, 0] == 0
    assert not c.shares_memory_with(v)


def test_view_outlives_volume():
    v = ichkit.Volume(make())
    arr = v.array
    del v
    import gc

    gc.collect()
    assert arr[4, 3, 2] == make()[4, 3, 2]


def test_torch_is_zero_copy_dhw():
    v = ichkit.Volume(make())
    t = v.torch()
    assert tuple(t.shape) == (3, 4, 5)  # (D, H, W) = (nk, nj, ni)
    assert t[2, 3, 4].item() == v.array[4, 3, 2]
    t[0, 1, 2] = 123.0
    assert v.array[2, 1, 0] == 123.0
    assert t.data_ptr() == v.array.ctypes.data


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64,
                                   np.float32, np.float64])
def test_dtypes_are_kept(dtype):
    v = ichkit.Volume(make(dtype=dtype))
    assert v.dtype == np.dtype(dtype)
    assert v.array.dtype == np.dtype(dtype)
    assert v.astype(np.float64).array.dtype == np.float64


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError):
        ichkit.Volume(np.zeros((3, 3)))
    with pytest.raises(ichkit.InvalidArgument):
        ichkit.Volume(np.zeros((3, 3, 3)), np.eye(3))
    with pytest.raises(ichkit.GeometryError):
        ichkit.Volume(np.zeros((3, 3, 3)), np.zeros((4, 4)))
    with pytest.raises(ValueError):
        ichkit.Volume(np.zeros((3, 3, 3), dtype=np.complex64))
    bad = np.eye(4)
    bad[0, 3] = np.nan
    with pytest.raises(ichkit.GeometryError):
        ichkit.Volume(np.zeros((2, 2, 2)), bad)


def test_exception_hierarchy():
    assert issubclass(ichkit.FormatError, ValueError) and issubclass(ichkit.FormatError, ichkit.Error)
    assert issubclass(ichkit.IoError, OSError)
    assert issubclass(ichkit.GeometryError, ValueError)
    assert issubclass(ichkit.ResourceError, MemoryError)
    assert issubclass(ichkit.Error, RuntimeError)


def test_world_index_round_trip():
    aff = np.array([[-0.45, 0, 0, 115.0], [0, 0.45, 0, -98.0], [0, 1.6, 4.7, -40.0], [0, 0, 0, 1]])
    v = ichkit.Volume(np.zeros((4, 4, 4), np.int16), aff)
    xyz = v.index_to_world([1.0, 2.0, 3.0])
    np.testing.assert_allclose(xyz, aff[:3, :3] @ [1, 2, 3] + aff[:3, 3])
    np.testing.assert_allclose(v.world_to_index(xyz), [1, 2, 3], atol=1e-12)


def test_threads_and_version():
    ichkit.set_num_threads(1)
    assert ichkit.num_threads() == 1
    assert ichkit.runtime_info()["torch_threads"] == 1
    ichkit.set_num_threads(0)
    assert ichkit.num_threads() >= 1
    assert ichkit.__version__.count(".") == 2


def _threads_in_child(env=None, cpus=None):
    """ichkit's thread counts in a fresh interpreter (they are fixed when ichkit starts), with
    its CPU affinity cut to `cpus` and $OMP_NUM_THREADS as `env` gives it."""
    code = ("import json, ichkit; r = ichkit.runtime_info(); "
            "print(json.dumps([ichkit.num_threads(), ichkit.available_cores(), r['torch_threads'], r['cores']]))")
    e = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    e.update(env or {})
    pre = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    out = subprocess.run([sys.executable, "-c", code], env=e, preexec_fn=pre, capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_default_threads_follow_affinity_and_omp_num_threads():
    allowed = sorted(os.sched_getaffinity(0))
    threads, cores, torch_threads, info_cores = _threads_in_child()
    assert cores == info_cores <= len(allowed)  # at most the CPUs it may run on (a cgroup quota may cut it)
    assert threads == torch_threads == cores
    # pinned to one CPU (taskset, a Slurm / Docker cpuset): one thread, not one per CPU of the machine
    assert _threads_in_child(cpus={allowed[0]}) == [1, 1, 1, 1]
    # $OMP_NUM_THREADS (set by Dask's workers and batch scripts) wins over the cores
    assert _threads_in_child(env={"OMP_NUM_THREADS": "3"})[0::2] == [3, 3]
    assert _threads_in_child(env={"OMP_NUM_THREADS": "1,2"})[0] == 1  # nested levels: the first
    # more than 1024 is capped (16384 OpenMP threads on 2 cores took minutes to start)
    assert _threads_in_child(env={"OMP_NUM_THREADS": "100000"})[0] == 1024
    with pytest.raises(ValueError, match="at most 1024"):
        ichkit.set_num_threads(1025)
    # a value that is not a positive integer is ignored, as libgomp ignores it
    for bad in ["0", "-2", "two", ""]:
        assert _threads_in_child(env={"OMP_NUM_THREADS": bad})[0] == cores
