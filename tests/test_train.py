"""train.py end to end on tiny data: gradient accumulation, exact resume (also mid batch-size ramp), signals,
the non-finite guards (faults injected by monkeypatching, in process), scratch runs, resume rules, DDP."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import runtime
import schedule
import train
from core_data import make_dataset
from model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4", "--eval_iters=2",
        "--log_interval=1", "--warmup_iters=2", "--lr_decay_iters=20", "--learning_rate=3e-3", "--device=cpu",
        "--dataset=tiny"]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def solgpt_hash():
    try:
        from tokenizer import get_tokenizer
        return get_tokenizer().hash
    except Exception as e:  # bits per byte needs the dataset's tokenizer; it is another part of the project
        pytest.skip(f"default tokenizer unavailable: {e}")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_dataset(root, "tiny", tokenizer="solgpt", tokenizer_hash=solgpt_hash())  # ids 0..95: one byte each
    return root


@pytest.fixture()
def one_thread():
    """Bit-for-bit comparisons of two runs: with two threads about 1 run in 15 here differs from the others in the
    last bit of a loss, resumed or not (a multi-threaded CPU kernel's summation order)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_train(data_root, out_dir, *args, env=None, check=True):
    cmd = [sys.executable, str(ROOT / "train.py"), *TINY, f"--data_root={data_root}", f"--out_dir={out_dir}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def train_here(data_root, out_dir, *args):
    """train.main in this process (faults are injected by monkeypatching); returns its exit code."""
    return train.main([*TINY, f"--data_root={data_root}", f"--out_dir={out_dir}", *args])


def metrics(out_dir):
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


def train_losses(out_dir):
    return {r["iter"]: r["loss"] for r in metrics(out_dir) if "loss" in r}


def periodic_evals(out_dir):
    """(iter, val_loss) of the periodic evaluations; a final record's sampled loss is the periodic one's."""
    return [(r["iter"], r.get("sampled_val_loss", r["val_loss"])) for r in metrics(out_dir) if "val_loss" in r]


# ----------------------------------------------------------------------------------------------------------------
# pieces


def test_gradient_accumulation_equals_big_batch():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=32)).double()
    x = torch.randint(0, 50, (8, 16))
    y = torch.randint(0, 50, (8, 16))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    ctx = runtime.autocast(torch.device("cpu"), torch.float32)

    k = 4
    micro = iter([(x[i::k], y[i::k]) for i in range(k)])  # 4 micro-batches of 2 rows
    loss_acc = train.accumulate_gradients(model, micro, ctx, scaler, k)
    grads_acc = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)

    loss_big = train.accumulate_gradients(model, iter([(x, y)]), ctx, scaler, 1)
    grads_big = [p.grad.clone() for p in model.parameters()]
    torch.testing.assert_close(loss_acc, loss_big)
    for a, b in zip(grads_acc, grads_big):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_get_lr_warmup_cosine_and_floor():
    cfg = dict(decay_lr=True, learning_rate=1.0, min_lr=0.1, warmup_iters=4, lr_decay_iters=14)
    assert schedule.get_lr(0, cfg) == pytest.approx(1 / 5)  # (it + 1) / (warmup + 1): never 0
    assert schedule.get_lr(3, cfg) == pytest.approx(4 / 5)
    assert schedule.get_lr(4, cfg) == pytest.approx(1.0)  # cosine starts at the peak
    assert schedule.get_lr(9, cfg) == pytest.approx(0.55)  # half way: min + (max - min) / 2
    assert schedule.get_lr(14, cfg) == pytest.approx(0.1) and schedule.get_lr(100, cfg) == 0.1
    assert schedule.get_lr(7.5, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.35)))
    assert schedule.get_lr(9, dict(cfg, decay_lr=False)) == 1.0


def test_batch_ramp_micro_batches():
    cfg = dict(gradient_accumulation_steps=8, batch_ramp_tokens=1000, batch_ramp_start=0.25)
    assert [schedule.micro_batches(t, cfg) for t in (0, 1, 500, 999, 1000, 5000)] == [2, 3, 5, 8, 8, 8]
    # 0.25 + 0.75 * t / 1000 of 8 micro-batches, rounded up: 2.0 -> 2, 2.006 -> 3, 5.0 -> 5, 7.99 -> 8
    assert [schedule.micro_batches(t, cfg, world_size=4) for t in (0, 500, 1000)] == [4, 8, 8]  # multiples of 4
    assert schedule.micro_batches(0, dict(cfg, batch_ramp_tokens=0)) == 8


def test_time_budget_pays_the_start_up_and_every_session():
    """budget 600 s, warmup 50, 4,096-token iterations: the first step takes 20.5 s (compilation), the others 0.5 s,
    so 580 s at 2 iterations/s fit: 1,160 iterations. A run stopped at iteration 30 (35 s spent) and resumed with a
    10.5 s first step has spent 55 s at the decision: 50 + 545 s x 2 = 1,140, wherever it stopped."""
    def session(budget, start, stop, first_step_s, state=None):
        if state:
            budget.load_state_dict(state)
        budget.begin(start * 4096)
        seconds = 0.0
        for progress in range(start, stop):
            seconds += first_step_s if progress == start else 0.5
            decided = budget.observe((progress + 1) * 4096, seconds)
            if decided is not None:
                return decided
        return budget.state_dict()
    budget = schedule.TimeBudget(600, 50, 4096)
    assert session(budget, 0, 60, 20.5) == 1160 and budget.tokens_per_s == 8192 and budget.iters == 1160
    assert schedule.iters_for_budget(600, 8192, 4096, compile_s=20) == 1160  # bench.py's formula agrees
    for stop in (30, 49):  # resumed mid-measurement, or on the warmup's last step (nothing left to measure there)
        state = session(schedule.TimeBudget(600, 50, 4096), 0, stop, 20.5)
        assert state["iters"] is None and state["spent_s"] == 20.5 + (stop - 1) * 0.5
        assert session(schedule.TimeBudget(600, 50, 4096), stop, 60, 10.5, state) == 1140
    assert session(schedule.TimeBudget(5, 50, 4096), 0, 60, 20.5) == 50  # a budget smaller than the warmup ends there


def test_clipping_caps_the_global_norm_and_reports_the_norm_before():
    model = torch.nn.Linear(2, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    model.weight.grad = torch.tensor([[3.0, 4.0]])  # norm 5
    assert float(train.clip_and_norm(model, opt, scaler, 1.0)) == pytest.approx(5.0)
    torch.testing.assert_close(model.weight.grad, torch.tensor([[0.6, 0.8]]))  # scaled to norm 1
    model.weight.grad = torch.tensor([[3.0, 4.0]])
    assert float(train.clip_and_norm(model, opt, scaler, 0.0)) == pytest.approx(5.0)  # 0: no clipping
    torch.testing.assert_close(model.weight.grad, torch.tensor([[3.0, 4.0]]))


def test_resolve_dtype_on_a_v100_is_float16(monkeypatch):
    # torch only emulates bfloat16 before Ampere: is_bf16_supported() says True unless asked without emulation
    asked = []

    def is_bf16_supported(including_emulation=True):
        asked.append(including_emulation)
        return including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "device", lambda d: __import__("contextlib").nullcontext())
    assert runtime.resolve_dtype("auto", torch.device("cuda", 1)) == torch.float16
    assert asked == [False]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # an A100
    assert runtime.resolve_dtype("auto", torch.device("cuda", 0)) == torch.bfloat16
    assert runtime.resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert runtime.resolve_dtype("float16", torch.device("cpu")) == torch.float16


def test_auto_dtype_trains_in_bf16_only_on_a_cpu_with_amx(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert runtime.resolve_dtype("auto", cpu, training=True) == torch.bfloat16
    assert runtime.resolve_dtype("auto", cpu) == torch.float32  # decoding one token at a time: float32 is faster
    assert runtime.resolve_dtype("float32", cpu, training=True) == torch.float32  # asked for: kept
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)  # e.g. AMD EPYC
    assert runtime.resolve_dtype("auto", cpu, training=True) == torch.float32


def test_compile_without_a_cpp_compiler_runs_eager_and_says_so(data_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runtime.shutil, "which", lambda name: None)
    assert runtime.compile_unavailable("cpu").startswith("torch.compile on a CPU needs a C++ compiler on PATH")
    assert runtime.compile_unavailable("mps") == "torch.compile on MPS is experimental"
    assert train_here(data_root, tmp_path / "o", "--max_iters=2", "--compile=True") == 0
    out = capsys.readouterr().out
    assert "needs a C++ compiler on PATH (none found: install g++ or clang): running without it" in out
    assert torch.load(tmp_path / "o" / "train_state.pt", weights_only=True)["config"]["compile"] is False


def test_second_signal_gets_the_default_handler_back():
    before = signal.getsignal(signal.SIGINT)
    with train.StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert stop.signum == signal.SIGINT  # the first one only asks the loop to stop ...
        assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL  # ... a second one would kill
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is before


# ----------------------------------------------------------------------------------------------------------------
# whole runs


def test_one_optimizer_step_per_accumulation(data_root, tmp_path):
    assert train_here(data_root, tmp_path / "o", "--max_iters=3", "--eval_interval=100",
                      "--gradient_accumulation_steps=4") == 0
    state = torch.load(tmp_path / "o" / "train_state.pt", weights_only=True)
    assert state["optimizer"]["state"][0]["step"].item() == 3  # 3 iterations x 4 micro-steps -> 3 AdamW steps
    assert state["sampler"]["step"] == 12  # ... drawing 12 micro-batches (the prefetched 13th is not counted)
    rec = [r for r in metrics(tmp_path / "o") if "loss" in r][-1]
    assert rec["tokens"] == 3 * 4 * 4 * 32


@pytest.mark.parametrize("ramp", [False, True])
def test_exact_resume(data_root, tmp_path, one_thread, ramp):
    common = ["--eval_interval=5", "--dropout=0.1"]  # dropout: the RNG state must be restored too
    if ramp:  # 4 micro-batches per step at full batch; the ramp covers the first ~12 of 20 iterations' tokens
        common += ["--gradient_accumulation_steps=4", "--batch_size=2", f"--batch_ramp_tokens={12 * 4 * 2 * 32}"]
    assert train_here(data_root, tmp_path / "straight", "--max_iters=20", *common) == 0
    assert train_here(data_root, tmp_path / "resumed", "--max_iters=10", *common) == 0
    assert train_here(data_root, tmp_path / "resumed", "--max_iters=20", "--init_from=resume", *common) == 0
    straight, resumed = metrics(tmp_path / "straight"), metrics(tmp_path / "resumed")
    assert train_losses(tmp_path / "resumed") == train_losses(tmp_path / "straight")  # bit for bit
    steps = [r for r in straight if "loss" in r]
    if ramp:
        assert [r["micro_batches"] for r in steps[:3]] == [1, 2, 2] and steps[-1]["micro_batches"] == 4
        # lr and tokens follow real tokens: 20 full iterations' worth of tokens, in more (smaller) steps
        assert len(steps) > 20 and steps[-2]["tokens"] < 20 * 4 * 2 * 32 <= steps[-1]["tokens"]
        cfg = {**train.DEFAULTS, "warmup_iters": 2, "lr_decay_iters": 20, "learning_rate": 3e-3}
        before = [0] + [r["tokens"] for r in steps[:-1]]
        assert [r["lr"] for r in steps] == [schedule.get_lr(t / (4 * 2 * 32), cfg) for t in before]
        assert all(b - a == r["micro_batches"] * 2 * 32 for a, b, r in zip(before, [r["tokens"] for r in steps], steps))
    else:
        assert len(steps) == 20 and [r["iter"] for r in resumed] == [r["iter"] for r in straight]
    # the first run's final evaluation stays in its metrics; the periodic losses are the straight run's
    assert {i: v for i, v in periodic_evals(tmp_path / "straight")}.items() <= \
        {i: v for i, v in periodic_evals(tmp_path / "resumed")}.items()
    final = [r for r in straight if r.get("final")]
    assert len(final) == 1 and final[0] == [r for r in resumed if r.get("final")][-1]
    for name in ("model.pt", "best_model.pt", "train_state.pt"):
        a = torch.load(tmp_path / "straight" / name, weights_only=True)
        b = torch.load(tmp_path / "resumed" / name, weights_only=True)
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), key


def test_metrics_checkpoints_and_final_whole_split_eval(data_root, tmp_path):
    out = tmp_path / "o"
    assert train_here(data_root, out, "--max_iters=4", "--eval_interval=2") == 0
    recs = metrics(out)
    train_rec = [r for r in recs if "loss" in r]
    eval_rec = [r for r in recs if "val_loss" in r]
    assert {"iter", "loss", "lr", "grad_norm", "tokens", "dt_ms", "tok_per_s", "mfu", "micro_batches"} <= set(train_rec[0])
    assert [r["iter"] for r in eval_rec] == [0, 2, 4] and [r.get("final") for r in eval_rec] == [None, None, True]
    final = eval_rec[-1]
    # the whole val split, in non-overlapping windows: every token but the first is a target once; the fixture's
    # tokens are 1 byte each, so bits per byte is the loss in bits
    assert final["val_tokens"] == 4000 - 1 and final["val_bytes"] == 3999
    assert final["val_bpb"] == pytest.approx(final["val_loss"] / math.log(2))
    assert final["sampled_val_loss"] != final["val_loss"]
    weights = torch.load(out / "model.pt", weights_only=True)
    assert set(weights) == {"model_args", "model", "tokenizer", "tokenizer_hash", "iter_num", "val_loss"}
    assert weights["tokenizer"] == "solgpt" and weights["iter_num"] == 4
    assert weights["val_loss"] == pytest.approx(final["val_loss"])
    assert weights["model_args"]["vocab_size"] == 128  # 96 rounded up to a multiple of 64
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert set(state) == {"model_args", "model", "tokenizer", "tokenizer_hash", "optimizer", "scaler", "rng",
                          "sampler", "iter_num", "best_val_loss", "evaluated", "final_evaluated", "budget",
                          "config"}
    for key in weights["model"]:
        assert torch.equal(state["model"][key], weights["model"][key]), key
    assert state["evaluated"] is True and state["final_evaluated"] is True and state["sampler"]["seed"] == 1337
    assert (out / "best_model.pt").is_file() and "final eval 4" in (out / "log.txt").read_text()
    # resuming a finished run does nothing
    assert train_here(data_root, out, "--max_iters=4", "--init_from=resume") == 0
    assert len(metrics(out)) == len(recs)


def test_scratch_run_sets_the_earlier_run_aside(data_root, tmp_path, capsys):
    out = tmp_path / "o"
    assert train_here(data_root, out, "--max_iters=4", "--eval_interval=2") == 0
    first = {name: (out / name).read_bytes() for name in train.RUN_FILES}
    # the same command again (or a forgotten --init_from=resume): nothing of the first run is lost ...
    assert train_here(data_root, out, "--max_iters=1", "--eval_interval=100") == 0
    assert "moved the earlier run's metrics.jsonl, log.txt, train_state.pt, model.pt, best_model.pt" in \
        capsys.readouterr().out
    for name, data in first.items():
        assert (out / "previous" / name).read_bytes() == data, name
    # ... and nothing of it is mixed into the new run
    assert sorted(r["iter"] for r in metrics(out) if "loss" in r) == [0]
    for name in ("train_state.pt", "model.pt", "best_model.pt"):
        assert torch.load(out / name, weights_only=True)["iter_num"] == 1, name
    # a run that saved nothing does not push a trained model out of previous/
    (out / "train_state.pt").unlink(), (out / "model.pt").unlink(), (out / "best_model.pt").unlink()
    (out / "previous" / "marker").write_text("run 1")
    assert train_here(data_root, out, "--max_iters=1", "--eval_interval=100") == 0
    assert (out / "previous" / "marker").read_text() == "run 1"
    assert sorted(r["iter"] for r in metrics(out) if "loss" in r) == [0]


def test_stale_temp_files_of_dead_writers_are_swept(data_root, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / f".train_state.pt.tmp{dead.pid}").write_bytes(b"half a checkpoint")  # a kill during a write
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        (out / f".model.pt.tmp{live.pid}").write_bytes(b"a live writer's")  # work in progress: not touched
        assert train_here(data_root, out, "--max_iters=1", "--eval_interval=100") == 0
    finally:
        live.kill()
        live.wait()
    assert not (out / f".train_state.pt.tmp{dead.pid}").exists()
    assert (out / f".model.pt.tmp{live.pid}").exists()
    assert f".train_state.pt.tmp{dead.pid}" in (out / "log.txt").read_text()


def nan_loss_at(monkeypatch, bad_iter):
    """Make iteration bad_iter's loss (and so its gradients) NaN, as a diverging run would."""
    real, calls = train.accumulate_gradients, []

    def patched(model, batches, ctx, scaler, n_micro):
        loss = real(model, batches, ctx, scaler, n_micro)
        calls.append(1)
        if len(calls) - 1 == bad_iter:
            for p in model.parameters():
                p.grad.fill_(float("nan"))
            return loss * float("nan")
        return loss

    monkeypatch.setattr(train, "accumulate_gradients", patched)


def nan_grad_at(monkeypatch, bad_iter):
    """Make one gradient of iteration bad_iter NaN while its loss stays finite."""
    real, calls = train.clip_and_norm, []

    def patched(model, optimizer, scaler, grad_clip):
        calls.append(1)
        if len(calls) - 1 == bad_iter:
            next(model.parameters()).grad.fill_(float("nan"))
        return real(model, optimizer, scaler, grad_clip)

    monkeypatch.setattr(train, "clip_and_norm", patched)


@pytest.mark.parametrize("every_step", [True, False])  # False: the single-GPU path, checked at log_interval
def test_non_finite_loss_stops_and_keeps_last_checkpoint(data_root, tmp_path, monkeypatch, capsys, every_step):
    nan_loss_at(monkeypatch, 7)
    monkeypatch.setattr(train, "checks_every_step", lambda device, dist_info: every_step)
    out = tmp_path / "o"
    assert train_here(data_root, out, "--max_iters=20", "--eval_interval=5", "--log_interval=3") == 1
    err = capsys.readouterr().err
    assert ("loss is nan at iter 7" if every_step else "loss is not finite at iter 7") in err
    weights = torch.load(out / "model.pt", weights_only=True)
    assert weights["iter_num"] == 5  # the checkpoint before the NaN, not overwritten
    assert all(torch.isfinite(v).all() for v in weights["model"].values())
    assert torch.load(out / "train_state.pt", weights_only=True)["iter_num"] == 5
    assert max(train_losses(out)) == 6  # nothing logged for the bad iteration (or after it)


@pytest.mark.parametrize("every_step", [True, False])
def test_non_finite_grad_norm_stops_without_saving(data_root, tmp_path, monkeypatch, capsys, every_step):
    nan_grad_at(monkeypatch, 7)
    monkeypatch.setattr(train, "checks_every_step", lambda device, dist_info: every_step)
    out = tmp_path / "o"
    assert train_here(data_root, out, "--max_iters=20", "--eval_interval=5", "--log_interval=3") == 1
    err = capsys.readouterr().err
    assert ("gradient norm is nan at iter 7" if every_step else "gradient norm is not finite at iter 7") in err
    weights = torch.load(out / "model.pt", weights_only=True)
    assert weights["iter_num"] == 5 and all(torch.isfinite(v).all() for v in weights["model"].values())
    assert max(train_losses(out)) == 6


def test_non_finite_weights_are_never_saved(data_root, tmp_path):
    cfg = train.configure(train.DEFAULTS, [*TINY, f"--data_root={data_root}", f"--out_dir={tmp_path / 'o'}"])
    dist_info, device = runtime.Dist(), torch.device("cpu")
    sampler = train.load_data(cfg, dist_info, device)
    args = train.model_args_from(cfg, sampler.meta["vocab_size"])
    trainer = train.Trainer(cfg, dist_info, device, torch.float32, sampler, train.build_model(args, None, device, 0),
                            args, torch.ones(128, dtype=torch.long))
    trainer.log = train.RunLog(trainer.out_dir, True)
    trainer.iter_num = 5
    with torch.no_grad():
        next(trainer.model.parameters())[0] = float("inf")
    try:
        assert trainer.evaluate_and_save() is False
        assert trainer.save() is False
    finally:
        trainer.log.close()
    assert not (tmp_path / "o" / "model.pt").exists() and not (tmp_path / "o" / "train_state.pt").exists()


def stop_at(monkeypatch, stop_iter):
    """Deliver a real SIGINT to this process during iteration stop_iter, as a user's Ctrl-C would."""
    real, calls = train.clip_and_norm, []

    def patched(*args):
        calls.append(1)
        if len(calls) - 1 == stop_iter:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args)

    monkeypatch.setattr(train, "clip_and_norm", patched)


def test_stop_on_the_last_iteration_still_gets_the_final_evaluation(data_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "o"
    stop_at(monkeypatch, 5)
    assert train_here(data_root, out, "--max_iters=6", "--eval_interval=100") == 128 + signal.SIGINT
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert state["iter_num"] == 6 and state["evaluated"] is False
    monkeypatch.undo()
    capsys.readouterr()
    assert train_here(data_root, out, "--max_iters=6", "--eval_interval=100", "--init_from=resume") == 0
    stdout = capsys.readouterr().out
    assert "final eval 6" in stdout and "nothing to do" not in stdout
    assert [r["iter"] for r in metrics(out) if r.get("final")] == [6]
    assert train_here(data_root, out, "--max_iters=6", "--init_from=resume") == 0
    assert "nothing to do" in capsys.readouterr().out


def test_sigint_then_resume_equals_an_uninterrupted_run(data_root, tmp_path):
    out = tmp_path / "o"
    cmd = [sys.executable, str(ROOT / "train.py"), *TINY, f"--data_root={data_root}", f"--out_dir={out}",
           "--max_iters=100000", "--eval_interval=100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **ONE_THREAD})
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "metrics.jsonl").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) > 5:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "stopped by SIGINT" in stdout
    it = torch.load(out / "train_state.pt", weights_only=True)["iter_num"]
    assert torch.load(out / "model.pt", weights_only=True)["iter_num"] == it > 0
    run_train(data_root, out, f"--max_iters={it + 3}", "--eval_interval=100000", "--init_from=resume", env=ONE_THREAD)
    run_train(data_root, tmp_path / "straight", f"--max_iters={it + 3}", "--eval_interval=100000", env=ONE_THREAD)
    assert train_losses(out) == train_losses(tmp_path / "straight")  # same iterations, same losses, bit for bit
    assert sorted(train_losses(out)) == list(range(it + 3))


def test_a_time_budget_run_is_a_fixed_run_of_the_length_it_decided(data_root, tmp_path, monkeypatch, one_thread,
                                                                   capsys):
    """--budget_s fixes max_iters at the end of the warmup; stopped after that and resumed, it keeps that length, and
    every step (losses bit for bit, learning rates, final evaluation) is what --max_iters=N would have done."""
    args = ["--warmup_iters=10", "--eval_interval=7", "--min_lr=0"]
    stop_at(monkeypatch, 15)
    assert train_here(data_root, tmp_path / "budget", "--budget_s=1.5", *args) == 128 + signal.SIGINT
    monkeypatch.undo()
    n = torch.load(tmp_path / "budget" / "train_state.pt", weights_only=True)["budget"]["iters"]
    assert n > 15
    assert train_here(data_root, tmp_path / "budget", "--budget_s=1.5", "--init_from=resume", *args) == 0
    log = capsys.readouterr().out
    assert f"budget 1.5 s: {n} iterations fit" in log and log.count("iterations fit") == 1  # not decided again
    assert train_here(data_root, tmp_path / "fixed", f"--max_iters={n}", f"--lr_decay_iters={n}", *args) == 0
    assert train_losses(tmp_path / "budget") == train_losses(tmp_path / "fixed") and len(train_losses(tmp_path / "fixed")) == n
    lrs = lambda out: [r["lr"] for r in metrics(out) if "lr" in r]  # noqa: E731
    assert lrs(tmp_path / "budget") == lrs(tmp_path / "fixed") and lrs(tmp_path / "fixed")[-1] < 1e-4  # decays to 0
    final = lambda out: [r for r in metrics(out) if r.get("final")][-1]["val_bpb"]  # noqa: E731
    assert final(tmp_path / "budget") == final(tmp_path / "fixed")


def test_a_time_budget_run_stopped_in_its_warmup_decides_after_the_resume(data_root, tmp_path, monkeypatch, one_thread,
                                                                           capsys):
    args = ["--warmup_iters=10", "--eval_interval=5", "--min_lr=0"]  # an evaluation (and save) at the warmup's end
    stop_at(monkeypatch, 7)  # stopped during the speed measurement: saved at iteration 8, before the decision
    assert train_here(data_root, tmp_path / "budget", "--budget_s=1.5", *args) == 128 + signal.SIGINT
    monkeypatch.undo()
    state = torch.load(tmp_path / "budget" / "train_state.pt", weights_only=True)
    assert state["iter_num"] == 8 and state["budget"]["iters"] is None and state["budget"]["steady_s"] > 0
    assert train_here(data_root, tmp_path / "budget", "--budget_s=1.5", "--init_from=resume", *args) == 0
    n = torch.load(tmp_path / "budget" / "train_state.pt", weights_only=True)["budget"]["iters"]
    assert n > 10 and f"budget 1.5 s: {n} iterations fit" in capsys.readouterr().out
    assert train_here(data_root, tmp_path / "fixed", f"--max_iters={n}", f"--lr_decay_iters={n}", *args) == 0
    assert train_losses(tmp_path / "budget") == train_losses(tmp_path / "fixed") and len(train_losses(tmp_path / "fixed")) == n


def test_time_budget_rules(data_root, tmp_path, capsys):
    with pytest.raises(SystemExit, match="^error: --budget_s measures the speed during the warmup.*--warmup_iters "
                                         ">= 10 \\(got 2\\)"):
        train_here(data_root, tmp_path / "o", "--budget_s=60")
    # --max_iters on the command line turns a config file's budget off (so does --budget_s=0)
    config = tmp_path / "budget.py"
    config.write_text("budget_s = 3600.0\nwarmup_iters = 10\n")
    assert train.main([str(config), *TINY, f"--data_root={data_root}", f"--out_dir={tmp_path / 'o'}",
                       "--max_iters=12", "--eval_interval=100"]) == 0
    assert len(train_losses(tmp_path / "o")) == 12 and "iterations fit" not in capsys.readouterr().out
    no_decay_arg = [a for a in TINY if not a.startswith("--lr_decay_iters=")]  # ... and the cosine ends with it
    assert train.main([str(config), *no_decay_arg, f"--data_root={data_root}", f"--out_dir={tmp_path / 'o3'}",
                       "--max_iters=12", "--eval_interval=100"]) == 0
    assert torch.load(tmp_path / "o3" / "train_state.pt", weights_only=True)["config"]["lr_decay_iters"] == 12
    with pytest.raises(SystemExit, match="^error: --budget_s and --max_iters both given"):
        train_here(data_root, tmp_path / "o2", "--budget_s=60", "--warmup_iters=10", "--max_iters=5")
    # a run trained for a fixed length cannot be resumed on a budget once past its warmup
    with pytest.raises(SystemExit, match="^error: cannot resume with --budget_s: the checkpoint is past its warmup"):
        train_here(data_root, tmp_path / "o", "--budget_s=60", "--warmup_iters=10", "--init_from=resume")


def test_resume_applies_dropout_and_refuses_shape_changes(data_root, tmp_path, capsys):
    out = tmp_path / "o"
    assert train_here(data_root, out, "--max_iters=2", "--eval_interval=100") == 0
    for bad in ("--n_layer=3", "--block_size=16", "--bias=True"):
        with pytest.raises(SystemExit) as e:
            train_here(data_root, out, "--max_iters=4", "--init_from=resume", bad)
        msg = str(e.value)
        assert msg.startswith(f"error: cannot resume with {bad}: the checkpoint's model has ") and "\n" not in msg
    # shape keys not given are the checkpoint's (n_layer 2, not the default 6), dropout is applied
    argv = [a for a in TINY if not a.startswith("--n_layer")]
    assert train.main([*argv, f"--data_root={data_root}", f"--out_dir={out}", "--max_iters=4", "--eval_interval=100",
                       "--init_from=resume", "--dropout=0.2"]) == 0
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert state["model_args"]["dropout"] == 0.2 and state["config"]["dropout"] == 0.2
    assert state["model_args"]["n_layer"] == 2 == state["config"]["n_layer"]


def test_resume_with_another_dtype(data_root, tmp_path, capsys):
    out = tmp_path / "o"
    assert train_here(data_root, out, "--max_iters=2", "--eval_interval=100") == 0
    # fp32 -> float16 (+ GradScaler, which CPU autocast also runs): the loss scale starts fresh
    assert train_here(data_root, out, "--max_iters=4", "--eval_interval=100", "--init_from=resume",
                      "--dtype=float16") == 0
    assert "the float16 loss scale starts fresh" in capsys.readouterr().out
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert state["iter_num"] == 4 and state["scaler"]["scale"] > 0
    assert all(math.isfinite(v) for v in train_losses(out).values())
    # and back: the saved loss scale is not used
    assert train_here(data_root, out, "--max_iters=5", "--eval_interval=100", "--init_from=resume") == 0
    assert "is not used" in capsys.readouterr().out


def test_float16_with_grad_scaler_trains_on_cpu(data_root, tmp_path):
    out = tmp_path / "o"
    assert train_here(data_root, out, "--max_iters=6", "--eval_interval=100", "--dtype=float16") == 0
    losses = train_losses(out)
    assert losses[5] < losses[0]
    scaler = torch.load(out / "train_state.pt", weights_only=True)["scaler"]
    assert scaler["scale"] == 65536.0 and scaler["_growth_tracker"] == 6  # 6 steps, none skipped for overflow


def test_resume_reads_train_state_alone_and_refuses_bad_ones(data_root, tmp_path):
    out = tmp_path / "o"
    run_train(data_root, out, "--max_iters=4", "--eval_interval=2")
    good = torch.load(out / "train_state.pt", weights_only=True)
    (out / "model.pt").unlink()  # resume needs only train_state.pt (one atomic write: no torn pair possible)
    for change, why in [(lambda st: st.pop("model"), "missing model"),
                        (lambda st: st["sampler"].update(seed=1), "--seed=1"),
                        (lambda st: st["sampler"].update(dataset="other:1.0"), "--dataset=other:1.0")]:
        state = {**good, "sampler": dict(good["sampler"])}
        change(state)
        torch.save(state, out / "train_state.pt")
        proc = run_train(data_root, out, "--max_iters=6", "--init_from=resume", check=False)
        assert proc.returncode != 0 and proc.stderr.startswith("error: cannot resume") and "Traceback" not in proc.stderr
        assert why in proc.stderr and proc.stderr.strip().count("\n") == 0
    torch.save(good, out / "train_state.pt")
    run_train(data_root, out, "--max_iters=6", "--eval_interval=2", "--init_from=resume")
    assert torch.load(out / "model.pt", weights_only=True)["iter_num"] == 6


def test_resume_evaluates_a_checkpoint_that_was_not_evaluated(data_root, tmp_path, capsys):
    out = tmp_path / "o"
    assert train_here(data_root, out, "--max_iters=4", "--eval_interval=2") == 0
    state = torch.load(out / "train_state.pt", weights_only=True)
    state["evaluated"] = state["final_evaluated"] = False  # as a Ctrl-C save at iter 4 would be
    torch.save(state, out / "train_state.pt")
    capsys.readouterr()
    assert train_here(data_root, out, "--max_iters=5", "--eval_interval=2", "--init_from=resume") == 0
    assert "eval 4:" in capsys.readouterr().out
    assert [r["iter"] for r in metrics(out) if "val_loss" in r] == [0, 2, 4, 5]  # one eval record per iteration


def test_missing_dataset_and_tokenizer_mixture_errors(data_root, tmp_path):
    proc = run_train(data_root, tmp_path / "o", "--dataset=nope", check=False)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0
    assert "run python data/nope/prepare.py" in proc.stderr
    make_dataset(data_root, "other", tokenizer="gpt2", tokenizer_hash="f" * 64)
    proc = run_train(data_root, tmp_path / "o", "--dataset=tiny:0.7,other:0.3", check=False)
    assert proc.returncode != 0 and "re-prepare them with the same tokenizer" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    make_dataset(data_root, "unknown_tok", tokenizer="nosuch", tokenizer_hash="e" * 64)
    with pytest.raises(SystemExit, match="^error: bits per byte needs the dataset's tokenizer: unknown tokenizer"):
        train_here(data_root, tmp_path / "o", "--dataset=unknown_tok")


def test_ddp_two_gloo_processes_match_single_process(data_root, tmp_path):
    # 4 micro-batches on 2 ranks: each rank accumulates 2, so the first runs under no_sync (no all-reduce)
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    args = [*TINY, f"--data_root={data_root}", "--max_iters=6", "--eval_interval=3", "--gradient_accumulation_steps=4"]
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", str(ROOT / "train.py"), *args, f"--out_dir={tmp_path / 'ddp'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **ONE_THREAD})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "weights identical on all 2 ranks" in (tmp_path / "ddp" / "log.txt").read_text()
    run_train(data_root, tmp_path / "single", "--max_iters=6", "--eval_interval=3", "--gradient_accumulation_steps=4")
    a = torch.load(tmp_path / "ddp" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "single" / "model.pt", weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    ddp_losses, single_losses = train_losses(tmp_path / "ddp"), train_losses(tmp_path / "single")
    assert ddp_losses.keys() == single_losses.keys()
    for i in ddp_losses:
        assert ddp_losses[i] == pytest.approx(single_losses[i], rel=1e-5)
    final = [r for r in metrics(tmp_path / "ddp") if r.get("final")][0]  # the whole split, shared among ranks
    assert final["val_tokens"] == 3999
    assert final["val_loss"] == pytest.approx([r for r in metrics(tmp_path / "single") if r.get("final")][0]["val_loss"],
                                              rel=1e-4)


# ----------------------------------------------------------------------------------------------------------------
# --init_from=PATH: a new run (fine-tune) from a model.pt


@pytest.fixture(scope="module")
def source_model(data_root, tmp_path_factory):
    """A model.pt trained 5 iterations on the tiny data (its weights are what fine-tunes below must start from)."""
    out = tmp_path_factory.mktemp("source")
    assert train_here(data_root, out, "--max_iters=5", "--eval_interval=100") == 0
    return out / "model.pt"


def first_batch_loss(ckpt_path, data_root, dataset, fim=None):
    """The loss of the weights in ckpt_path on a fresh run's first training batch, computed here, outside train.py."""
    from checkpoint import load_model
    from dataloader import BatchSampler

    model, _ = load_model(ckpt_path)
    x, y = BatchSampler(dataset, 32, 4, seed=1337, data_root=data_root, fim=fim).get_batch("train")
    with torch.no_grad():
        return model(x, y)[1].item(), x


def test_init_from_a_model_starts_from_its_weights_and_trains(data_root, source_model, tmp_path, one_thread, capsys):
    out = tmp_path / "ft"
    out.mkdir()
    (out / "log.txt").write_text("an earlier run that saved nothing\n")  # a scratch run's rules apply to out_dir
    # float32: first_batch_loss computes in it (dtype=auto trains in bf16 on a CPU with AMX)
    assert train_here(data_root, out, "--max_iters=6", "--eval_interval=100", f"--init_from={source_model}",
                      "--dtype=float32") == 0
    stdout = capsys.readouterr().out
    assert f"initialised from {source_model} (iter 5)" in stdout and "removed log.txt" in stdout
    losses = train_losses(out)
    expected, _ = first_batch_loss(source_model, data_root, "tiny")
    assert losses[0] == expected  # iteration 0 ran on the source's weights, bit for bit
    assert sorted(losses) == list(range(6)) and losses[5] < losses[0]
    steps = [r for r in metrics(out) if "loss" in r]
    assert steps[0]["lr"] == pytest.approx(3e-3 / 3)  # a fresh schedule: warmup from iteration 0
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert state["iter_num"] == 6 and state["optimizer"]["state"][0]["step"].item() == 6  # a fresh optimizer
    assert state["config"]["init_from"] == str(source_model)
    assert torch.load(out / "model.pt", weights_only=True)["iter_num"] == 6
    source = torch.load(source_model, weights_only=True)["model"]
    assert not torch.equal(state["model"]["transformer.wte.weight"], source["transformer.wte.weight"])  # trained


def test_init_from_with_fim(data_root, source_model, tmp_path, one_thread):
    from tokenizer import get_tokenizer
    tok = get_tokenizer()
    # FIM needs the sentinel tokens in the vocabulary: the tiny pattern, labelled with the whole solgpt vocabulary
    make_dataset(data_root, "tiny_full_vocab", vocab_size=tok.n_vocab, eot_token=tok.eot_token)
    base = ["--dataset=tiny_full_vocab", "--eval_interval=100", "--dtype=float32"]  # first_batch_loss's dtype
    source = tmp_path / "src"
    assert train_here(data_root, source, "--max_iters=3", *base) == 0
    out = tmp_path / "ft"
    assert train_here(data_root, out, "--max_iters=4", *base, f"--init_from={source / 'model.pt'}",
                      "--fim_rate=0.5") == 0
    fim = dict(rate=0.5, spm_rate=0.5, syntax_rate=0.5)
    expected, x = first_batch_loss(source / "model.pt", data_root, "tiny_full_vocab", fim)
    assert set(x.flatten().tolist()) & {tok.special_tokens[s] for s in ("<|fim_prefix|>", "<|fim_middle|>")}
    losses = train_losses(out)
    assert losses[0] == expected and sorted(losses) == [0, 1, 2, 3]
    assert torch.load(out / "train_state.pt", weights_only=True)["sampler"]["fim"] == fim


def test_init_from_errors_are_one_line(data_root, source_model, tmp_path):
    proc = run_train(data_root, tmp_path / "o", f"--init_from={tmp_path / 'nope.pt'}", check=False)
    hint = "--init_from takes scratch, resume (out_dir's run) or the path of a model.pt / best_model.pt"
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr == f"error: --init_from={tmp_path / 'nope.pt'}: no such file; {hint}\n"
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")  # a torch file, but no solGPT model
    cases = [(tmp_path, f"error: --init_from={tmp_path} is a directory; {hint} (such as {tmp_path / 'model.pt'})"),
             (tmp_path / "notes.txt", f"error: --init_from={tmp_path / 'notes.txt'} is not a solGPT weights file: "
                                      f"checkpoint {tmp_path / 'notes.txt'} is corrupt or not a solGPT checkpoint"),
             (tmp_path / "other.pt", f"error: --init_from={tmp_path / 'other.pt'} is not a solGPT weights file: "
                                     f"checkpoint {tmp_path / 'other.pt'} holds no model weights")]
    for path, start in cases:
        with pytest.raises(SystemExit) as e:
            train_here(data_root, tmp_path / "o", f"--init_from={path}")
        msg = str(e.value)
        assert msg.startswith(start) and (hint in msg) and "\n" not in msg, msg
    with pytest.raises(SystemExit, match="^error: --init_from must be 'scratch', 'resume' or the path of a model.pt"):
        train_here(data_root, tmp_path / "o", "--init_from=")
    # the dataset's tokenizer must be the model's
    make_dataset(data_root, "other_tokenizer", tokenizer="solgpt", tokenizer_hash="f" * 64)
    with pytest.raises(SystemExit) as e:
        train_here(data_root, tmp_path / "o", "--dataset=other_tokenizer", f"--init_from={source_model}")
    assert str(e.value) == (f"error: cannot initialise from {source_model}: the checkpoint was trained with tokenizer "
                            f"solgpt but --dataset=other_tokenizer uses solgpt (hashes differ)")
    assert not (tmp_path / "o").exists()  # nothing written by a refused run


def test_init_from_takes_the_shape_from_the_model_and_applies_dropout(data_root, source_model, tmp_path):
    out = tmp_path / "o"
    for bad in ("--n_layer=3", "--block_size=16", "--mlp=gelu"):
        with pytest.raises(SystemExit) as e:
            train_here(data_root, out, "--max_iters=2", f"--init_from={source_model}", bad)
        msg = str(e.value)
        assert msg.startswith(f"error: cannot initialise from {source_model} with {bad}: the checkpoint's model has ")
        assert "\n" not in msg
    argv = [a for a in TINY if not a.startswith("--n_layer")]  # the default n_layer (6) was not asked for
    assert train.main([*argv, f"--data_root={data_root}", f"--out_dir={out}", "--max_iters=2", "--eval_interval=100",
                       f"--init_from={source_model}", "--dropout=0.2"]) == 0
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert state["model_args"]["n_layer"] == 2 == state["config"]["n_layer"]
    assert state["model_args"]["dropout"] == 0.2 and state["config"]["dropout"] == 0.2


def test_init_from_then_resume_equals_a_straight_run(data_root, source_model, tmp_path, one_thread):
    common = ["--eval_interval=5", "--dropout=0.1", f"--init_from={source_model}"]
    assert train_here(data_root, tmp_path / "straight", "--max_iters=20", *common) == 0
    assert train_here(data_root, tmp_path / "resumed", "--max_iters=10", *common) == 0
    assert train_here(data_root, tmp_path / "resumed", "--max_iters=20", *common[:2], "--init_from=resume") == 0
    assert train_losses(tmp_path / "resumed") == train_losses(tmp_path / "straight")  # bit for bit
    assert sorted(train_losses(tmp_path / "straight")) == list(range(20))
    for name in ("model.pt", "best_model.pt", "train_state.pt"):
        a = torch.load(tmp_path / "straight" / name, weights_only=True)
        b = torch.load(tmp_path / "resumed" / name, weights_only=True)
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), key
