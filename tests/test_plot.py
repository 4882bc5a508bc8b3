import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import plot

ROOT = Path(__file__).resolve().parents[1]


def write_metrics(path, torn_tail=False):
    lines = []
    for it in range(0, 50):
        lines.append(json.dumps({"iter": it, "loss": 5.0 - it * 0.05, "lr": 1e-3, "grad_norm": 1.0,
                                 "tokens": (it + 1) * 1024, "dt_ms": 10.0, "tok_per_s": 1e5, "mfu": 0.0}))
        if it % 10 == 0:
            lines.append(json.dumps({"iter": it, "train_loss": 5.0 - it * 0.05, "val_loss": 5.1 - it * 0.05,
                                     "val_bpb": 2.0 - it * 0.01}))
    # a resumed run re-logs iterations 40..49 with different numbers: the later record must win
    lines.append(json.dumps({"iter": 45, "loss": 1.234, "tokens": 46 * 1024}))
    text = "\n".join(lines) + "\n"
    if torn_tail:
        text += '{"iter": 50, "lo'
    path.write_text(text)


def test_read_metrics_splits_dedups_and_skips_torn_line(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    write_metrics(metrics, torn_tail=True)
    steps, evals = plot.read_metrics(metrics)
    assert [r["iter"] for r in steps] == list(range(50))
    assert next(r for r in steps if r["iter"] == 45)["loss"] == 1.234
    assert [r["iter"] for r in evals] == [0, 10, 20, 30, 40]
    assert plot.tokens_per_iter(steps) == 1024


def test_plot_writes_png(tmp_path):
    write_metrics(tmp_path / "metrics.jsonl")
    out = tmp_path / "sub" / "loss.png"
    subprocess.run([sys.executable, str(ROOT / "plot.py"), f"--out_dir={tmp_path}", f"--out={out}"], check=True)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.parent.iterdir() if p.name != "loss.png"]  # no temp file left behind


def test_plot_missing_metrics_is_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "plot.py"), f"--out_dir={tmp_path}"], capture_output=True, text=True)
    assert r.returncode != 0
    assert r.stderr.strip().count("\n") == 0 and "metrics.jsonl not found" in r.stderr


def test_usage_error_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        plot.main(["--bogus"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: unrecognized arguments: --bogus") and err.count("\n") == 1


def write_unhealthy_run(path):
    """A run going wrong: from iteration 30 the gradient norm grows 30% per step, every step is clipped, layer h.1's
    gradient and update/weight ratio run away; per-layer records every 10 iterations."""
    lines = []
    clipped_iters = []
    for it in range(50):
        norm = 0.5 if it < 30 else 0.5 * 1.3 ** (it - 29)
        clipped = norm > 1.0
        clipped_iters += [it] if clipped else []
        lines.append({"iter": it, "loss": 4.0, "lr": 1e-3, "grad_norm": norm, "clipped": clipped,
                      "clip_frac": 1.0 if clipped else 0.0, "tokens": (it + 1) * 1024})
        if it % 10 == 0:
            bad = 10.0 ** (it / 10)
            lines.append({"iter": it, "layer_grad_norm": {"wte": 0.1, "h.0": 0.2, "h.1": 0.2 * bad, "ln_f": 0.01},
                          "layer_update_ratio": {"wte": 1e-3, "h.0": 1e-3, "h.1": 1e-3 * bad, "ln_f": 1e-4}})
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return clipped_iters


def test_health_figure_shows_the_unhealthy_run(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    clipped_iters = write_unhealthy_run(metrics)
    steps, health = plot.read_health(metrics)
    assert [r["iter"] for r in health] == [0, 10, 20, 30, 40]
    fig = plot.health_figure(steps, health)
    try:
        ax_norm, ax_clip, ax_layer, ax_ratio = fig.get_axes()
        by_label = {line.get_label(): line for line in ax_norm.get_lines()}
        assert list(by_label["clipped"].get_xdata()) == clipped_iters == list(range(32, 50))  # 0.5 * 1.3**3 > 1
        assert ax_norm.get_yscale() == "log"
        assert list(ax_clip.get_lines()[0].get_ydata()) == [0.0] * 32 + [1.0] * 18
        for ax, h1 in ((ax_layer, [0.2, 2.0, 20.0, 200.0, 2000.0]), (ax_ratio, [1e-3, 1e-2, 1e-1, 1.0, 10.0])):
            lines = {line.get_label(): line for line in ax.get_lines()}
            assert {"wte", "h.0", "h.1", "ln_f"} <= set(lines)
            assert list(lines["h.1"].get_xdata()) == [0, 10, 20, 30, 40]
            assert list(lines["h.1"].get_ydata()) == pytest.approx(h1)
            assert ax.get_yscale() == "log"
        ref = [line for line in ax_ratio.get_lines() if line.get_label().startswith("1e-3")]
        assert len(ref) == 1 and list(ref[0].get_ydata()) == [1e-3, 1e-3]
        assert ax_layer.get_title() == "per-layer gradient norm"
        assert ax_ratio.get_title() == "per-layer update/weight ratio"
    finally:
        import matplotlib.pyplot as plt
        plt.close(fig)


def test_plot_cli_writes_loss_and_health(tmp_path):
    write_unhealthy_run(tmp_path / "metrics.jsonl")
    r = subprocess.run([sys.executable, str(ROOT / "plot.py"), f"--out_dir={tmp_path}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for name in ("loss.png", "health.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["health.png", "loss.png", "metrics.jsonl"]


def test_health_plot_skipped_without_gradient_records(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"iter": 0, "train_loss": 5.0, "val_loss": 5.0}) + "\n")
    assert plot.plot_health(tmp_path / "metrics.jsonl", tmp_path / "health.png") is None
    assert not (tmp_path / "health.png").exists()


def test_health_figure_without_layer_records_says_how_to_get_them(tmp_path):
    steps = [{"iter": i, "loss": 1.0, "grad_norm": 0.5} for i in range(5)]  # a run from before health.py
    fig = plot.health_figure(steps, [])
    try:
        texts = [t.get_text() for t in fig.get_axes()[2].texts]
        assert texts == ["no per-layer records\n(train with --health_interval > 0)"]
    finally:
        import matplotlib.pyplot as plt
        plt.close(fig)


def test_compare_spreads_each_runs_iterations_over_the_budget(tmp_path):
    def run(name, iters, bpbs):
        d = tmp_path / name
        d.mkdir()
        recs = [{"iter": i, "loss": 5.0, "tokens": 4096 * i} for i in range(10, iters + 1, 10)]
        points = range(iters // len(bpbs), iters + 1, iters // len(bpbs))
        recs += [{"iter": i, "train_loss": 5.0, "val_loss": 5.0, "val_bpb": b} for i, b in zip(points, bpbs)]
        recs.append({"iter": iters, "train_loss": 5.0, "val_loss": 5.0, "val_bpb": bpbs[-1] - 0.01, "final": True})
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        return str(d)
    old, new = run("old", 600, [2.5, 2.2, 1.95]), run("new", 300, [2.3, 2.0, 1.8])
    runs = [(label, *plot.read_metrics(os.path.join(d, "metrics.jsonl"))) for label, d in (("old", old), ("new", new))]
    fig = plot.compare_figure(runs, budget_s=600)
    try:
        lines = [ln for ln in fig.get_axes()[0].get_lines() if not ln.get_label().startswith("_")]
        assert [ln.get_label() for ln in lines] == ["old (final 1.9400)", "new (final 1.7900)"]
        for ln in lines:  # both runs end at the budget, whatever their iterations
            assert ln.get_xdata()[-1] == 600
        assert list(lines[1].get_xdata()) == [200, 400, 600]  # 100 of 300 iterations -> 200 s, ...
    finally:
        import matplotlib.pyplot as plt
        plt.close(fig)
    out = tmp_path / "cmp.png"
    r = subprocess.run([sys.executable, str(ROOT / "plot.py"), f"--compare={old},{new}", "--labels=old,new",
                        "--budget_s=600", f"--out={out}"], capture_output=True, text=True)
    assert r.returncode == 0 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", r.stderr
    r = subprocess.run([sys.executable, str(ROOT / "plot.py"), f"--compare={old},{new}", "--labels=old",
                        f"--out={out}"], capture_output=True, text=True)
    assert r.returncode != 0 and "as many --labels as directories" in r.stderr
