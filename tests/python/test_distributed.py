"""ichkit.distributed.predict_cohort on a Dask LocalCluster with 2 worker processes: 20 phantoms
and one deliberately corrupt file; every good scan's row equals the serial prediction, the
corrupt one is reported with its error and the others are done."""
import json

import pytest

distributed = pytest.importorskip("distributed")

import ichkit  # noqa: E402

from test_cli_model import CONFIG  # noqa: E402

# Debian's distributed 2022.12 / tornado 6.2 warn about their own event-loop API; not ours
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:.*unclosed.*:ResourceWarning")]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp("dask")
    ichkit.phantom.make_cohort(str(d / "c"), n=20, seed=7, shape=(64, 64, 8), spacing=(3.6, 3.6, 20), compress=True)
    lines = (d / "c" / "manifest.csv").read_text().splitlines()
    # a truncated gzip NIfTI as the 21st scan
    good = (d / "c" / "images" / "case_0000.nii.gz").read_bytes()
    (d / "c" / "images" / "broken.nii.gz").write_bytes(good[: len(good) // 3])
    cols = lines[0].split(",")
    broken = ["broken" if c == "id" else "images/broken.nii.gz" if c == "image" else "" for c in cols]
    (d / "c" / "manifest.csv").write_text("\n".join(lines + [",".join(broken)]) + "\n")
    model = d / "m.ichkit"
    ichkit.model.Model(CONFIG, seed=5).save(str(model))
    return d / "c" / "manifest.csv", model


def test_cohort_on_local_cluster_equals_serial(cohort, tmp_path):
    manifest, model = cohort
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        rows = ichkit.distributed.predict_cohort(str(manifest), str(model), client)
        workers = len(client.scheduler_info()["workers"])
    assert workers == 2
    serial = ichkit.distributed.predict_serial(str(manifest), str(model))
    assert len(rows) == 21 and [r["id"] for r in rows] == [r["id"] for r in serial]
    bad = [r for r in rows if not r["ok"]]
    assert [r["id"] for r in bad] == ["broken"]
    assert "Error" in bad[0]["error"] and bad[0]["error"] == serial[-1]["error"]
    m = ichkit.model.Model.load(str(model))
    for r, s in zip(rows[:-1], serial[:-1]):
        assert r["ok"] and s["ok"]
        assert r["volume"] == pytest.approx(s["volume"], rel=1e-5)
        assert r["prognosis_p_poor"] == pytest.approx(s["prognosis_p_poor"], rel=1e-5)
        assert r["seg_ml"] == pytest.approx(s["seg_ml"], rel=1e-6, abs=1e-9)
        # and both equal the plain API
        p = m.predict(ichkit.read(r["scan"]))
        assert r["volume"] == pytest.approx(p["volume"]["value"], rel=1e-5)
    json.dumps(rows)  # rows are plain JSON-able values


def test_explain_dir_writes_one_heatmap_per_head_and_scan(cohort, tmp_path):
    manifest, model = cohort
    rows = ichkit.distributed.predict_serial(str(manifest), str(model), explain_dir=str(tmp_path / "maps"))
    good = [r for r in rows if r["ok"]]
    assert len(good) == 20
    for r in good:
        for head in ("volume", "prognosis"):
            h = ichkit.read(r[f"{head}_heatmap"])
            assert h.shape == ichkit.read(r["scan"]).shape
