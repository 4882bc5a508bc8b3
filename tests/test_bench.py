"""bench.py's own logic. Speed is measured by bench.py, never asserted here."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bench
import checkpoint
import model
from model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]


def test_stats_median_min_max():
    assert bench.stats([3, 1, 2, 10]) == {"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}


def test_unknown_section_is_one_line_error():
    r = subprocess.run([sys.executable, str(ROOT / "bench.py"), "--only=sample,nope"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "nope" in r.stderr


def real_tokenizer():
    try:
        from tokenizer import get_tokenizer
        return get_tokenizer()
    except Exception as e:  # the tokenizer is another part of the project
        pytest.skip(f"default tokenizer unavailable: {e}")


def wandering_checkpoint(path):
    """A small model whose greedy decoding wanders over many tokens (a fresh random model repeats one token, which
    would make cache == recomputation true of almost any cache): large block weights, block_size 64 so that 512
    new tokens slide the window many times."""
    tok = real_tokenizer()
    args = dict(block_size=64, vocab_size=16448, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=False,
                pos_encoding="learned")
    torch.manual_seed(0)
    model = GPT(GPTConfig(**args))
    with torch.no_grad():
        model.transformer.wpe.weight.mul_(3)
        for name, p in model.named_parameters():
            if name.startswith("transformer.h") and p.dim() == 2:
                p.mul_(50)
    checkpoint.atomic_torch_save(checkpoint.model_checkpoint(model, args, tok.name, tok.hash, 1, None), path)
    return path


def test_sample_section_compares_cache_with_recomputation(tmp_path):
    ck = wandering_checkpoint(tmp_path / "model.pt")
    out = tmp_path / "report.json"
    subprocess.run([sys.executable, str(ROOT / "bench.py"), "--only=sample", "--quick", f"--ckpt={ck}", f"--out={out}"],
                   check=True, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    report = json.loads(out.read_text())
    s = report["sample"]
    assert s["greedy_tokens_equal"] is True and s["distinct_new_tokens"] > 100
    assert s["new_tokens"] == 512 and s["prompt_tokens"] + s["new_tokens"] > 5 * s["block_size"]
    assert s["stats"]["kv_tokens_per_s"]["n"] == s["repeats"] == 2
    assert set(report["machine"]) >= {"cpu", "cores", "torch"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "report.json"]  # atomic: no temp file left


def test_sample_section_catches_a_broken_cache(tmp_path, monkeypatch):
    ck = wandering_checkpoint(tmp_path / "model.pt")
    real_update = model.KVCache.update

    def off_by_a_little(self, layer, k, v):  # a cache that stores slightly wrong keys
        keys, values = real_update(self, layer, k, v)
        return keys * 1.01, values

    monkeypatch.setattr(model.KVCache, "update", off_by_a_little)
    with pytest.raises(SystemExit, match="KV-cache and full-recomputation greedy tokens differ"):
        bench.bench_sample(None, "cpu", 512, 1, ckpt=ck)


def test_quality_reports_the_whole_split_bpb_and_keeps_the_model(tmp_path):
    from core_data import make_dataset
    tok = real_tokenizer()
    make_dataset(tmp_path / "data", "tiny", tokenizer=tok.name, tokenizer_hash=tok.hash)
    config = tmp_path / "tiny_config.py"
    config.write_text(f"dataset = 'tiny'\ndata_root = {str(tmp_path / 'data')!r}\nn_layer = 1\nn_head = 2\n"
                      f"n_embd = 16\nblock_size = 32\nbatch_size = 4\neval_iters = 2\nlog_interval = 1\n")
    q = bench.bench_quality(config, "cpu", 1.0, 1.0, iters=4, keep_model=tmp_path / "kept")
    final = [json.loads(line) for line in (tmp_path / "kept" / "metrics.jsonl").read_text().splitlines()][-1]
    assert final["final"] is True and q["val_bpb"] == final["val_bpb"] and q["val_tokens"] == 3999
    assert q["model_dir"] == str(tmp_path / "kept") and (tmp_path / "kept" / "model.pt").is_file()
    r = subprocess.run([sys.executable, str(ROOT / "bench.py"), "--only=sample", f"--keep_model={tmp_path / 'k2'}"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "add quality to --only" in r.stderr and r.stderr.strip().count("\n") == 0


def test_child_peak_memory_is_the_childs_own():
    # The parent holds 300 MB: a measurement that counted the pages shared between fork and exec would report more
    # than that for a child that only ever touches ~100 MB.
    ballast = bytearray(300 * 2**20)
    ballast[::4096] = b"x" * len(ballast[::4096])
    code, wall, peak_mb, output = bench.run_child(
        [sys.executable, "-c", "import time; b = bytearray(100 * 2**20); b[::4096] = b'y' * len(b[::4096]); "
                               "time.sleep(0.3); print('done')"])
    assert code == 0 and output.strip() == "done"
    assert 80 < peak_mb < 250, peak_mb
    del ballast
