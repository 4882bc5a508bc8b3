"""health.py: clip bookkeeping, per-layer gradient norms and update/weight ratios against hand computations, and the
records train.py writes with them."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core_data import make_dataset
from health import Health, layer_of
from model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]


def tiny_model():
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=16)).double()


def test_layer_of():
    assert layer_of("transformer.h.3.attn.c_proj.weight") == "h.3"
    assert layer_of("transformer.h.12.mlp.c_fc.weight") == "h.12"
    assert layer_of("_orig_mod.transformer.h.0.ln_1.weight") == "h.0"
    assert layer_of("transformer.wte.weight") == "wte"
    assert layer_of("transformer.ln_f.weight") == "ln_f"
    assert layer_of("lm_head.weight") == "lm_head"


def test_clip_bookkeeping_per_log_line():
    h = Health(tiny_model(), grad_clip=1.0, interval=0)
    for norm in (0.5, 2.0, 3.0, 0.1):
        h.observe(norm)
    assert h.log_fields() == {"clipped": False, "clip_frac": 0.5}  # 2 of the 4 steps since the last line
    h.observe(1.5)
    assert h.log_fields() == {"clipped": True, "clip_frac": 1.0}  # the count restarted at the previous line
    h.observe(float("inf"))  # an fp16 overflow: the scaler skips that step, nothing was clipped
    assert h.log_fields() == {"clipped": False, "clip_frac": 0.0}

    off = Health(tiny_model(), grad_clip=0.0, interval=0)
    off.observe(1e6)
    assert off.log_fields() == {"clipped": False, "clip_frac": 0.0}


def hand_layer(name):
    for prefix, layer in (("transformer.wte.", "wte"), ("transformer.wpe.", "wpe"), ("transformer.ln_f.", "ln_f"),
                          ("transformer.h.0.", "h.0"), ("transformer.h.1.", "h.1")):
        if name.startswith(prefix):
            return layer
    raise AssertionError(name)


@pytest.mark.parametrize("max_norm", [1e-3, 1e9])  # clipped, and not clipped
def test_layer_norms_and_update_ratios_by_hand(max_norm):
    model = tiny_model()
    x = torch.randint(0, 50, (4, 16), generator=torch.Generator().manual_seed(1))
    _, loss = model(x, x.roll(1, dims=1))
    loss.backward()
    raw = {n: p.grad.clone() for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    clipped = {n: p.grad.clone() for n, p in model.named_parameters()}

    lr = 0.1
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    h = Health(model, grad_clip=max_norm, interval=5)
    h.observe(grad_norm)
    h.before_update(7, grad_norm)  # 7 is not a health iteration: nothing measured
    opt.step()
    h.after_update()
    assert h.pop_record() is None

    h.before_update(10, grad_norm)
    opt.step()
    h.after_update()
    record = h.pop_record()
    assert h.pop_record() is None
    assert record["iter"] == 10

    def by_layer(tensors):
        sq = {}
        for n, t in tensors.items():
            sq[hand_layer(n)] = sq.get(hand_layer(n), 0.0) + float((t ** 2).sum())
        return sq

    raw_sq, clipped_sq = by_layer(raw), by_layer(clipped)
    # the weights right before the measured (second) step: SGD moved them once by lr * clipped grad
    w_sq = by_layer({n: before[n] - lr * clipped[n] for n in before})
    assert set(record["layer_grad_norm"]) == set(record["layer_update_ratio"]) == {"wte", "wpe", "h.0", "h.1", "ln_f"}
    for layer in raw_sq:
        assert record["layer_grad_norm"][layer] == pytest.approx(math.sqrt(raw_sq[layer]), rel=1e-6)
        # SGD's update is lr * (clipped) gradient
        expected = lr * math.sqrt(clipped_sq[layer]) / math.sqrt(w_sq[layer])
        assert record["layer_update_ratio"][layer] == pytest.approx(expected, rel=1e-6)
    assert math.sqrt(sum(v ** 2 for v in record["layer_grad_norm"].values())) == pytest.approx(grad_norm, rel=1e-6)
    assert (max_norm < grad_norm) == h.log_fields()["clipped"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_dataset(root, "tiny")
    return root


def run_train(data_root, out_dir, *args):
    cmd = [sys.executable, str(ROOT / "train.py"), "--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32",
           "--batch_size=4", "--eval_iters=2", "--eval_interval=100", "--warmup_iters=2", "--lr_decay_iters=20",
           "--device=cpu", "--dataset=tiny", f"--data_root={data_root}", f"--out_dir={out_dir}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


def test_train_writes_health_records(data_root, tmp_path):
    records = run_train(data_root, tmp_path / "a", "--max_iters=6", "--log_interval=3", "--health_interval=2",
                        "--grad_clip=1e-4", "--pos_encoding=learned")  # so small that every step is clipped; wpe too
    steps = [r for r in records if "loss" in r]
    health = [r for r in records if "layer_grad_norm" in r]
    assert [r["iter"] for r in steps] == [0, 3, 5]  # every 3rd, and the last
    assert all(r["clipped"] is True and r["clip_frac"] == 1.0 for r in steps)
    assert [r["iter"] for r in health] == [0, 2, 4]
    grad_norm = {r["iter"]: r["grad_norm"] for r in steps}
    h0 = health[0]
    assert set(h0["layer_grad_norm"]) == {"wte", "wpe", "h.0", "h.1", "ln_f"}
    rss = math.sqrt(sum(v ** 2 for v in h0["layer_grad_norm"].values()))
    assert rss == pytest.approx(grad_norm[0], rel=1e-4)  # pre-clip norms, although the step clipped
    assert all(0 < v < 1 for v in h0["layer_update_ratio"].values())

    records = run_train(data_root, tmp_path / "b", "--max_iters=4", "--log_interval=1", "--health_interval=0",
                        "--grad_clip=0")
    assert not [r for r in records if "layer_grad_norm" in r]
    assert [(r["clipped"], r["clip_frac"]) for r in records if "loss" in r] == [(False, 0.0)] * 4


def test_negative_health_interval_is_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--health_interval=-1", f"--out_dir={tmp_path}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip() == "error: --health_interval must be >= 0 (0 = off), got -1"
