"""optim.py: which parameters Muon and AdamW train, one scheduled lr driving both, Muon + AdamW == torch's two
optimizers stepped by hand, state round trips, GradScaler, and train.py's exact resume with muon."""

import copy
import io

import pytest
import torch

import train
from model import GPT, GPTConfig
from optim import MuonWithAdamW, build_optimizer, set_lr
from test_train import data_root, metrics, periodic_evals, run_train, train_losses  # noqa: F401 (data_root: fixture)

CFG = dict(train.DEFAULTS, optimizer="muon", learning_rate=1e-3, muon_lr=0.05, muon_momentum=0.9, weight_decay=0.1,
           beta1=0.8, beta2=0.9)
HIDDEN = {f"transformer.h.{i}.{m}.weight" for i in range(2)
          for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_gate", "mlp.c_proj")}


def llama_model(seed=0):
    """Untied head and biases, so that every kind of parameter is there (matrices, embeddings, head, gains, biases)."""
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_embd=32, pos_encoding="rope",
                         norm="rmsnorm", mlp="swiglu", qk_norm=True, bias=True, tie_embeddings=False))


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 64, (4, 16), generator=g)
    return x, torch.randint(0, 64, (4, 16), generator=g)


def train_steps(model, opt, lrs, first_batch=0, scaler=None):
    for i, lr in enumerate(lrs):
        set_lr(opt, lr)
        _, loss = model(*batch(first_batch + i))
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            scaler.step(opt)
            scaler.update()
        opt.zero_grad(set_to_none=True)


def assert_same_weights(a, b):
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


def test_adamw_groups_are_todays():
    model = llama_model()
    opt = build_optimizer(model, dict(CFG, optimizer="adamw"))
    assert type(opt) is torch.optim.AdamW  # the state dict of earlier checkpoints loads into it unchanged
    names = {id(p): n for n, p in model.named_parameters()}
    decayed, plain = ({names[id(p)] for p in g["params"]} for g in opt.param_groups)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert decayed == HIDDEN | {"transformer.wte.weight", "lm_head.weight"}
    assert plain == {n for n, p in model.named_parameters() if p.dim() == 1}
    assert opt.defaults["betas"] == (0.8, 0.9)


def test_muon_trains_the_block_matrices_and_adamw_the_rest():
    model = llama_model()
    opt = build_optimizer(model, CFG)
    names = {id(p): n for n, p in model.named_parameters()}
    assert isinstance(opt.muon, torch.optim.Muon) and isinstance(opt.adamw, torch.optim.AdamW)
    assert {names[id(p)] for g in opt.muon.param_groups for p in g["params"]} == HIDDEN
    in_adamw = {names[id(p)] for g in opt.adamw.param_groups for p in g["params"]}
    assert in_adamw == set(names.values()) - HIDDEN
    assert {"transformer.wte.weight", "lm_head.weight", "transformer.h.0.attn.q_norm.weight",
            "transformer.h.1.mlp.c_fc.bias"} <= in_adamw
    assert opt.muon.param_groups[0]["momentum"] == 0.9 and opt.muon.param_groups[0]["weight_decay"] == 0.1


def test_one_scheduled_lr_drives_both():
    opt = build_optimizer(llama_model(), CFG)
    set_lr(opt, 4e-4)  # the schedule's lr: AdamW gets it, Muon muon_lr / learning_rate = 50 times it
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.02, 4e-4, 4e-4])
    assert opt.muon.param_groups[0]["lr"] == pytest.approx(0.02)


def test_muon_with_adamw_equals_torchs_two_optimizers_stepped_by_hand():
    model, reference = llama_model(), llama_model()
    opt = build_optimizer(model, CFG)
    by_name = dict(reference.named_parameters())
    muon = torch.optim.Muon([by_name[n] for n in sorted(HIDDEN)], lr=0.05, weight_decay=0.1, momentum=0.9)
    rest = [p for n, p in reference.named_parameters() if n not in HIDDEN]
    adamw = torch.optim.AdamW([{"params": [p for p in rest if p.dim() == 2], "weight_decay": 0.1},
                               {"params": [p for p in rest if p.dim() == 1], "weight_decay": 0.0}],
                              lr=1e-3, betas=(0.8, 0.9))
    lrs = [1e-3, 5e-4, 2e-4]
    train_steps(model, opt, lrs)
    for i, lr in enumerate(lrs):
        for g in muon.param_groups:
            g["lr"] = lr * 50
        for g in adamw.param_groups:
            g["lr"] = lr
        _, loss = reference(*batch(i))
        loss.backward()
        muon.step()
        adamw.step()
        muon.zero_grad()
        adamw.zero_grad()
    assert_same_weights(model, reference)
    assert not torch.equal(model.transformer.h[0].attn.c_attn.weight, llama_model().transformer.h[0].attn.c_attn.weight)


def test_state_dict_round_trip_continues_exactly():
    model = llama_model()
    opt = build_optimizer(model, CFG)
    train_steps(model, opt, [1e-3, 8e-4])
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buf)  # as train.py checkpoints
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    resumed = llama_model(seed=1)
    resumed.load_state_dict(saved["model"])
    opt2 = build_optimizer(resumed, dict(CFG, muon_lr=0.1))  # a new --muon_lr wins over the checkpoint's
    opt2.load_state_dict(saved["optimizer"])
    assert opt2.muon.param_groups[0]["lr_scale"] == pytest.approx(100)
    opt2.muon.param_groups[0]["lr_scale"] = 50  # the same lr as the straight run from here
    straight = copy.deepcopy(model)
    opt_straight = build_optimizer(straight, CFG)
    opt_straight.load_state_dict(opt.state_dict())
    train_steps(straight, opt_straight, [6e-4, 4e-4], first_batch=2)
    train_steps(resumed, opt2, [6e-4, 4e-4], first_batch=2)
    assert_same_weights(straight, resumed)
    with pytest.raises(ValueError, match="the checkpoint's optimizer state is not Muon \\+ AdamW's"):
        opt2.load_state_dict(build_optimizer(llama_model(), dict(CFG, optimizer="adamw")).state_dict())


def test_grad_scaler_unscales_and_skips_inf_steps():
    """float16 training: GradScaler drives MuonWithAdamW as it drives one torch optimizer."""
    model, reference = llama_model(), llama_model()
    opt, ref_opt = build_optimizer(model, CFG), build_optimizer(reference, CFG)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    train_steps(model, opt, [1e-3, 5e-4], scaler=scaler)
    train_steps(reference, ref_opt, [1e-3, 5e-4])  # a power-of-two scale unscales exactly
    assert_same_weights(model, reference)
    before = [p.detach().clone() for p in model.parameters()]
    _, loss = model(*batch(9))
    scaler.scale(loss).backward()
    model.transformer.h[1].mlp.c_fc.weight.grad[0, 0] = float("inf")  # an overflow in one Muon matrix
    scaler.step(opt)
    scaler.update()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # both optimizers skipped
    assert scaler.get_scale() == 2.0 ** 9


def test_build_optimizer_rejects_unknown():
    with pytest.raises(ValueError, match="optimizer must be one of adamw, muon, got 'sgd'"):
        build_optimizer(llama_model(), dict(CFG, optimizer="sgd"))
    assert isinstance(build_optimizer(llama_model(), CFG), MuonWithAdamW)


@pytest.mark.parametrize("override,message", [
    (dict(optimizer="sgd"), "--optimizer must be one of adamw, muon, got 'sgd'"),
    (dict(muon_lr=0.0), "--muon_lr must be > 0, got 0.0"),
    (dict(muon_momentum=1.0), "--muon_momentum must be in [0, 1), got 1.0"),
    (dict(norm="batchnorm"), "--norm must be one of layernorm, rmsnorm, got 'batchnorm'"),
    (dict(mlp="tanh"), "--mlp must be one of gelu, swiglu, relu2, got 'tanh'"),
    (dict(init="xavier"), "--init must be one of gpt2, zero_proj, scaled, got 'xavier'"),
    (dict(pos_encoding="nope"), "--pos_encoding must be one of learned, rope, alibi, got 'nope'"),
    (dict(pos_encoding="rope", n_embd=30, n_head=2), "--pos_encoding=rope needs an even head size, got n_embd/n_head = 15"),
    (dict(rope_theta=0.0), "--rope_theta must be > 0, got 0.0"),
    (dict(mlp_hidden=-1), "--mlp_hidden must be >= 0 (0 = the default width), got -1"),
])
def test_train_validates_the_new_knobs(override, message):
    with pytest.raises(SystemExit, match="^error: " + message.replace("[", "\\[").replace("(", "\\(")
                       .replace(")", "\\)") + "$"):
        train.validate_config(dict(train.DEFAULTS, **override))


def test_model_args_carry_every_knob():
    cfg = dict(train.DEFAULTS, pos_encoding="alibi", rope_theta=5e5, norm="rmsnorm", mlp="relu2", mlp_hidden=96,
               qk_norm=True, tie_embeddings=False, init="zero_proj")
    config = GPTConfig(**train.model_args_from(cfg, 100))
    assert (config.pos_encoding, config.rope_theta, config.norm, config.mlp, config.mlp_hidden, config.qk_norm,
            config.tie_embeddings, config.init) == ("alibi", 5e5, "rmsnorm", "relu2", 96, True, False, "zero_proj")


MUON = ["--optimizer=muon", "--muon_lr=0.02", "--pos_encoding=rope", "--norm=rmsnorm", "--mlp=swiglu"]


def test_exact_resume_with_muon(data_root, tmp_path):  # noqa: F811
    common = ["--eval_interval=5", "--dropout=0.1", *MUON]
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one thread: see test_train.test_exact_resume
    run_train(data_root, tmp_path / "straight", "--max_iters=20", *common, env=env)
    run_train(data_root, tmp_path / "resumed", "--max_iters=10", *common, env=env)
    run_train(data_root, tmp_path / "resumed", "--max_iters=20", "--init_from=resume", *common, env=env)
    straight = train_losses(tmp_path / "straight")
    assert len(straight) == 20 and straight == train_losses(tmp_path / "resumed")  # bit for bit
    # the first run's final (whole-split) evaluation stays in its metrics; the periodic losses are the straight run's
    assert dict(periodic_evals(tmp_path / "straight")).items() <= dict(periodic_evals(tmp_path / "resumed")).items()
    final = [r for r in metrics(tmp_path / "straight") if r.get("final")]
    assert len(final) == 1 and final[0] == [r for r in metrics(tmp_path / "resumed") if r.get("final")][-1]
    state = torch.load(tmp_path / "resumed" / "train_state.pt", weights_only=True)
    assert set(state["optimizer"]) == {"muon", "adamw"}
    assert state["model_args"]["pos_encoding"] == "rope" and state["model_args"]["mlp"] == "swiglu"
    assert straight[19] < straight[0] - 0.3  # it learns


def test_resume_with_another_optimizer_is_refused(data_root, tmp_path):  # noqa: F811
    run_train(data_root, tmp_path / "o", "--max_iters=2", "--eval_interval=100", *MUON)
    proc = run_train(data_root, tmp_path / "o", "--max_iters=4", "--init_from=resume", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("error: cannot resume with --optimizer=adamw: the checkpoint was trained with "
                                   "muon; resume with --optimizer=muon")


def test_float16_with_muon_trains(data_root, tmp_path):  # noqa: F811
    """GradScaler + Muon end to end (CPU float16 autocast): the loss falls and the checkpoint holds the scaler."""
    run_train(data_root, tmp_path / "o", "--max_iters=8", "--eval_interval=100", "--dtype=float16", *MUON)
    losses = train_losses(tmp_path / "o")
    assert len(losses) == 8 and losses[7] < losses[0]
    state = torch.load(tmp_path / "o" / "train_state.pt", weights_only=True)
    assert state["scaler"]["scale"] > 0 and set(state["optimizer"]) == {"muon", "adamw"}
