"""`ichkit demo --quick`: the whole method end to end on built-in data - a report with tables,
plots and overlays, loadable models whose metrics agree with `ichkit evaluate`-style numbers."""
import json
import subprocess

import pytest

import ichkit


@pytest.fixture(scope="module")
def demo(cli, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    r = subprocess.run([cli, "demo", "--quick", "--out", str(out), "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout)


def test_demo_writes_a_self_contained_report(demo):
    out, summary = demo
    html = (out / "report.html").read_text()
    assert html.count("<svg") == 3  # predicted vs true, Bland-Altman, ROC
    assert html.count("data:image/png;base64,") == 6  # 3 test cases x 2 heads
    assert "not for clinical use" in html.lower()
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched from elsewhere
    assert summary == json.loads((out / "summary.json").read_text())


def test_demo_models_are_loadable_and_their_metrics_reproduce(demo):
    out, summary = demo
    assert set(summary["models"]) == {"multi-task (joint)", "single-task volume", "single-task outcome"}
    c = summary["cohort"]
    assert c["train"] + c["validation"] + c["test"] == c["n"]
    m = ichkit.model.Model.load(summary["models"]["multi-task (joint)"]["file"])
    assert m.head_names == ["volume", "prognosis"]
    assert ichkit.model.Model.load(summary["models"]["single-task volume"]["file"]).head_names == ["volume"]
    # evaluating the saved model on the test cases gives the reported metrics
    manifest = ichkit.model.Manifest.read(str(out / "cohort" / "manifest.csv"))
    test = manifest.subset(list(range(c["n"] - c["test"], c["n"])))
    metrics, _ = ichkit.evaluate(m, test)
    want = summary["models"]["multi-task (joint)"]["metrics"]
    assert metrics["volume"]["mae"] == pytest.approx(want["volume"]["mae"], rel=1e-6)
    assert metrics["prognosis"]["auc"] == pytest.approx(want["prognosis"]["auc"], rel=1e-6)
    assert len(summary["localisation"]) == 6
