import json
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
