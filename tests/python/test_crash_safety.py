"""Crash safety: `ichkit train` killed with SIGKILL in the middle of an epoch, and again in the
middle of writing its checkpoint, resumes to exactly the weights of an uninterrupted run, and
no file under a final name is ever truncated.

The kills land at exact places through the library's fault points ($ICHKIT_FAULT, see
src/core/fault.h): "train.step@K" dies after the K-th optimiser step, "atomic.write@K" dies
halfway through the bytes of the K-th atomically written file (before its rename)."""
import json
import os
import signal
import subprocess

import numpy as np
import pytest

import ichkit

CONFIG = {
    "encoder": {"depth": 10, "width": 4},
    "heads": [{"name": "volume", "type": "regression", "target": "volume_ml", "params": {"transform": "log1p"}},
              {"name": "prognosis", "type": "classification", "target": "outcome", "params": {"classes": ["good", "poor"]}}],
    "pipeline": {"version": 1, "steps": [
        {"op": "reorient", "code": "RAS"}, {"op": "resample_to_spacing", "spacing": [6, 6, 20], "interp": "linear"},
        {"op": "center_crop_or_pad", "shape": [32, 32, 8], "fill": -1024}, {"op": "window"}]},
}
CASES, BATCH, EPOCHS = 8, 2, 3
STEPS_PER_EPOCH = CASES // BATCH
END = b"ICHKEND\n"


def run(cli, args, fault=None):
    env = dict(os.environ)
    env.pop("ICHKIT_FAULT", None)
    if fault:
        env["ICHKIT_FAULT"] = fault
    return subprocess.run([cli, "--quiet", "--threads", "2", *args], capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def cohort(cli, tmp_path_factory):
    d = tmp_path_factory.mktemp("crash")
    r = run(cli, ["phantom", "--n", str(CASES), "--out", str(d / "c"), "--seed", "4", "--shape", "64", "64", "8",
                  "--spacing", "3.6", "3.6", "20", "--uncompressed"])
    assert r.returncode == 0, r.stderr
    (d / "cfg.json").write_text(json.dumps(CONFIG))
    return d


def train_args(d, out, checkpoint=None):
    a = ["train", "--config", str(d / "cfg.json"), "--manifest", str(d / "c" / "manifest.csv"), "--out", str(out),
         "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--seed", "3"]
    return a + (["--checkpoint", str(checkpoint)] if checkpoint else [])


def weights(path):
    return ichkit.model.Model.load(str(path)).state_dict()


def assert_complete(path):
    """A file under its final name is whole: it ends with the container's end marker (written
    last, after the CRC; the resumed run then reads the checkpoint, checksum included)."""
    b = path.read_bytes()
    assert b.endswith(END), f"{path} is truncated"


def test_killed_mid_epoch_and_mid_checkpoint_resumes_to_the_uninterrupted_weights(cli, cohort):
    d = cohort
    ref = d / "ref.ichkit"
    r = run(cli, train_args(d, ref))
    assert r.returncode == 0, r.stderr

    out, ck = d / "model.ichkit", d / "run.ckpt"
    # 1. SIGKILL in the middle of epoch 2 (after its second step)
    r = run(cli, train_args(d, out, ck), fault=f"train.step@{STEPS_PER_EPOCH + 2}")
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    assert not out.exists()
    assert_complete(ck)  # epoch 1's checkpoint
    epoch1 = ck.read_bytes()
    assert not list(d.glob("run.ckpt.tmp-*"))

    # 2. resume, and SIGKILL halfway through writing epoch 2's checkpoint (the first atomic
    #    write of this process): the checkpoint is still epoch 1's, whole; the half-written
    #    bytes sit in a temporary file, never under the final name
    r = run(cli, train_args(d, out, ck), fault="atomic.write@1")
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    assert ck.read_bytes() == epoch1
    tmp = list(d.glob("run.ckpt.tmp-*"))
    assert len(tmp) == 1 and 0 < tmp[0].stat().st_size < len(epoch1) * 1.5
    assert not tmp[0].read_bytes().endswith(END)
    assert not out.exists()

    # 3. resume to the end: the same weights as the uninterrupted run; the stale temporary is gone
    r = run(cli, train_args(d, out, ck))
    assert r.returncode == 0, r.stderr
    assert not list(d.glob("run.ckpt.tmp-*"))
    assert_complete(out)
    got, want = weights(out), weights(ref)
    assert got.keys() == want.keys()
    worst = max(float(np.max(np.abs(np.asarray(got[k]) - np.asarray(want[k])))) if np.asarray(got[k]).size else 0.0
                for k in want)
    assert worst <= 1e-6, worst
    # and the resumed run's history covers all epochs once
    assert len(ichkit.model.Model.load(str(out)).metadata["training"]["history"]) == EPOCHS


def test_killed_while_writing_the_model_leaves_no_model(cli, cohort):
    """The last write of a run (the model file) interrupted: no file under the model's name."""
    d = cohort
    out = d / "late.ichkit"
    # atomic writes of a run without a checkpoint: only the model file
    r = run(cli, train_args(d, out), fault="atomic.write@1")
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    assert not out.exists()
    assert len(list(d.glob("late.ichkit.tmp-*"))) == 1
