"""tracking.py: wandb mirrors metrics.jsonl (offline mode, read back from the run file); the ETA in the log line."""
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import tracking
from core_data import make_dataset

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4", "--eval_iters=2",
        "--log_interval=1", "--warmup_iters=2", "--lr_decay_iters=20", "--device=cpu", "--dataset=tiny",
        "--max_iters=6", "--eval_interval=3"]


def run_train(tmp_path, *args, env=None, pre=""):
    make_dataset(tmp_path / "data", "tiny")
    code = f"import sys; {pre}sys.argv[0] = 'train.py'; import train; sys.exit(train.main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *TINY, f"--data_root={tmp_path / 'data'}",
                           f"--out_dir={tmp_path / 'out'}", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def wandb_history(run_file):
    """History rows of a .wandb file: LevelDB-log framed protobuf Records (32 KiB blocks, 7-byte headers)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, buf, rows = run_file.read_bytes(), 32768, 7, b"", []  # the file header is 7 bytes too
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        buf, pos = buf + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL or LAST fragment
            record = pb.Record()
            record.ParseFromString(buf)
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
            buf = b""
    return rows


def test_wandb_offline_mirrors_metrics_jsonl(tmp_path):
    pytest.importorskip("wandb", reason="wandb is optional: pip install -r requirements-export.txt")
    r = run_train(tmp_path, "--wandb_log=True", "--wandb_project=solgpt-test", "--wandb_run_name=tiny-1",
                  env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert r.returncode == 0, r.stderr[-2000:]
    run_files = list((tmp_path / "out" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 1
    steps = {}
    for row in wandb_history(run_files[0]):
        steps.setdefault(row["_step"], {}).update(row)
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert sorted(steps) == sorted({rec["iter"] for rec in records}) == list(range(7))
    for rec in records:  # every value of metrics.jsonl, at its iteration, under eval/, train/ or health/<key>/<layer>
        kind = "eval" if "val_loss" in rec else "health" if "layer_grad_norm" in rec else "train"
        for key, value in rec.items():
            values = value.items() if isinstance(value, dict) else [(None, value)]
            for layer, v in values:
                name = f"{kind}/{key}" + (f"/{layer}" if layer else "")
                if key != "iter" and v is not None:
                    assert steps[rec["iter"]][name] == pytest.approx(v, rel=1e-12), (rec["iter"], name)
    assert any("layer_grad_norm" in rec for rec in records)  # the health records were mirrored too
    assert sum("val_loss" in rec for rec in records) == 3 and sum("loss" in rec for rec in records) == 6




def test_missing_wandb_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    cfg = dict(wandb_log=True, wandb_project="p", wandb_run_name="", out_dir="out")
    assert tracking.start(dict(cfg, wandb_log=False), master=True) is None
    assert tracking.start(cfg, master=False) is None  # only rank 0 tracks
    with pytest.raises(SystemExit) as e:
        tracking.start(cfg, master=True)
    assert str(e.value.code) == ("error: --wandb_log=True needs wandb: pip install wandb "
                                 "(or -r requirements-export.txt), or drop --wandb_log")


def test_default_run_logs_progress_and_eta_without_wandb(tmp_path):
    r = run_train(tmp_path, pre="sys.modules['wandb'] = None; ")  # importing wandb would raise ImportError
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (tmp_path / "out" / "wandb").exists()
    lines = [line for line in r.stdout.splitlines() if line.startswith("iter ")]
    assert [re.search(r", (\d+)/6 eta \S+$", line).group(1) for line in lines] == ["1", "2", "3", "4", "5", "6"]
    assert lines[-1].endswith("6/6 eta 0s")


def test_eta_is_iterations_left_times_recent_median():
    assert tracking.eta_seconds(120, [0.5, 0.4, 10.0]) == 60.0  # median 0.5 s: one slow iteration is ignored
    assert tracking.eta_seconds(0, [1.0]) == 0.0 and tracking.eta_seconds(5, []) == 0.0
    assert [tracking.format_duration(s) for s in (0, 59.4, 60, 125, 3600, 3725, 90000)] == \
        ["0s", "59s", "1m00s", "2m05s", "1h00m", "1h02m", "25h00m"]
