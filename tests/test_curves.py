"""flare-train curves: reads a PPO run's metrics.jsonl and writes a PNG; a missing run is a clear error."""
import json
import subprocess
import sys

from flare_training.curves import plot, read_metrics


def _run(tmp_path, name, succ):
    d = tmp_path / name
    d.mkdir()
    with open(d / "metrics.jsonl", "w") as f:
        for i, s in enumerate(succ):
            rec = {"global_step": 2048 * (i + 1), "charts/success_rate": s}
            if i % 2 == 1:
                rec["eval/success"] = s + 0.05
            f.write(json.dumps(rec) + "\n")
        f.write(json.dumps({"global_step": 0, "event/resume": 1}) + "\n")  # records without success are skipped
    return d


def test_curves_read_and_plot(tmp_path):
    a = _run(tmp_path, "a", [0.1, 0.2, 0.4, 0.5])
    train, evals = read_metrics(a)
    assert train == [(2048, 0.1), (4096, 0.2), (6144, 0.4), (8192, 0.5)]
    assert evals == [(4096, 0.25), (8192, 0.55)]
    out = plot([str(a), str(_run(tmp_path, "b", [0.3] * 4))], tmp_path / "c.png", bc=0.2, smooth=2)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curves_end_to_end_offsets_each_stage(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn = []
    real_plot = matplotlib.axes.Axes.plot

    def spy(self, x, y, *args, **kw):
        if kw.get("label") == "b" or (len(args) and args[0] == "o-" and len(x)):
            drawn.append((kw.get("label"), list(x)))
        return real_plot(self, x, y, *args, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    a, b = _run(tmp_path, "a", [0.1, 0.2, 0.4, 0.5]), _run(tmp_path, "b", [0.3] * 4)
    plot([str(a), str(b)], tmp_path / "c.png", smooth=1, labels=["a", "b"], end_to_end=True)
    train_b = next(x for label, x in drawn if label == "b")
    assert train_b == [8192 + 2048, 8192 + 4096, 8192 + 6144, 8192 + 8192]  # b starts where a ended
    evals = [x for label, x in drawn if label is None]
    assert evals == [[4096, 8192], [8192 + 4096, 8192 + 8192]]


def test_curves_missing_run(tmp_path):
    r = subprocess.run([sys.executable, "-m", "flare_training.cli", "curves", str(tmp_path / "nope"), "--out",
                        str(tmp_path / "c.png")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "metrics.jsonl not found" in r.stderr
