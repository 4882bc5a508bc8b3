"""model.py: KV-cache generation equals full recomputation for every architecture knob, the knobs themselves (RoPE,
ALiBi, norms, MLPs, tying, inits) against hand-computed values, sampling controls, MFU peak lookup."""

import math

import pytest
import torch

from model import (GPT, GPTConfig, KVCache, LayerNorm, MLP, RMSNorm, CausalSelfAttention, alibi_slopes,
                   rope_cos_sin, sample_next)

# Every pos_encoding, and the other knobs that change the forward pass, in the combinations that matter
# (HF Llama and Qwen3 shapes among them). The KV-cache tests below run on each.
VARIANTS = {
    "learned": {},
    "rope": dict(pos_encoding="rope"),
    "alibi": dict(pos_encoding="alibi"),
    "llama": dict(pos_encoding="rope", norm="rmsnorm", mlp="swiglu", bias=False, tie_embeddings=False),
    "qwen3": dict(pos_encoding="rope", norm="rmsnorm", mlp="swiglu", qk_norm=True, bias=False, tie_embeddings=False),
    "rope_relu2_scaled": dict(pos_encoding="rope", norm="rmsnorm", mlp="relu2", init="scaled", mlp_hidden=48,
                              rope_theta=500.0),
    "alibi_swiglu_qk_norm": dict(pos_encoding="alibi", norm="rmsnorm", mlp="swiglu", qk_norm=True, tie_embeddings=False),
    "alibi_relu2_untied": dict(pos_encoding="alibi", mlp="relu2", tie_embeddings=False, bias=False),
    "learned_rmsnorm_relu2": dict(norm="rmsnorm", mlp="relu2", init="scaled"),
}
from runtime import device_peak_flops


def tiny_model(block_size=32, vocab_size=64, seed=0, **knobs):
    """A float64 model that behaves like a trained one under greedy decoding. float64 keeps cache/no-cache rounding
    differences far below any logit gap; an untied output layer and large block/position weights make greedy
    decoding wander over many tokens, where a fresh random model repeats a single token forever.
    (A zero_proj init is overwritten here on purpose: the cache tests need blocks that do something.)"""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=2, n_head=2, n_embd=32, **knobs))
    with torch.no_grad():
        model.lm_head.weight = torch.nn.Parameter(torch.randn(vocab_size, 32))
        if model.transformer.wpe is not None:
            model.transformer.wpe.weight.mul_(3)
        for name, p in model.named_parameters():
            if name.endswith("c_proj.weight") and not p.any():
                p.normal_(0.0, 0.02)
            if name.startswith("transformer.h") and p.dim() == 2:
                p.mul_(50)
    return model.double().eval()


def crop_reference(model, idx, n):
    """nanoGPT's generation: full forward over the last block_size tokens for every new token, greedy."""
    for _ in range(n):
        logits, _ = model(idx[:, -model.config.block_size:])
        idx = torch.cat((idx, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    return idx


@pytest.mark.parametrize("variant", VARIANTS)
def test_kv_cache_greedy_equals_nanogpt_crop_past_block_size(variant):
    model = tiny_model(**VARIANTS[variant])
    idx = torch.randint(0, 64, (2, 5), generator=torch.Generator().manual_seed(1))
    bs = model.config.block_size
    ref = crop_reference(model, idx, 300)  # 300 tokens: the window slides ~270 times past block_size 32
    out = model.generate(idx, 300, temperature=0, use_cache=True, window_keep=bs)
    assert torch.equal(out, ref)
    assert min(len(set(r[5:].tolist())) for r in ref) > 10  # a real sequence, not one token repeated


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("keep", [None, 1, 31])
def test_kv_cache_equals_recompute_for_any_window(keep, variant):
    model = tiny_model(**VARIANTS[variant])
    idx = torch.randint(0, 64, (1, 40), generator=torch.Generator().manual_seed(2))  # prompt longer than block
    with_cache = model.generate(idx, 300, temperature=0, use_cache=True, window_keep=keep)
    without = model.generate(idx, 300, temperature=0, use_cache=False, window_keep=keep)
    assert with_cache.shape == (1, 340)
    assert torch.equal(with_cache, without)
    assert len(set(without[0, 40:].tolist())) > 5  # not one token repeated


def test_sampling_with_cache_is_seeded_and_matches_recompute():
    model = tiny_model()
    idx = torch.zeros((1, 1), dtype=torch.long)
    runs = [model.generate(idx, 100, temperature=1.0, top_k=10, top_p=0.9, use_cache=c,
                           generator=torch.Generator().manual_seed(7)) for c in (True, False, True)]
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
    other = model.generate(idx, 100, temperature=1.0, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(runs[0], other)


@pytest.mark.parametrize("variant", VARIANTS)
def test_kv_cache_forward_matches_full_forward_logits(variant):
    model = tiny_model(**VARIANTS[variant])
    idx = torch.randint(0, 64, (2, 20), generator=torch.Generator().manual_seed(3))
    cache = KVCache(model.config, 2, "cpu", torch.float64)
    model(idx[:, :12], kv_cache=cache)
    logits_cached, _ = model(idx[:, 12:], kv_cache=cache)  # several new tokens at once: explicit mask path
    logits_full, _ = model(idx)
    assert cache.length == 20
    torch.testing.assert_close(logits_cached, logits_full)


@pytest.mark.parametrize("pos_encoding", ["rope", "alibi"])
def test_rope_and_alibi_evaluate_at_twice_block_size_with_and_without_cache(pos_encoding):
    model = tiny_model(pos_encoding=pos_encoding)
    idx = torch.randint(0, 64, (2, 64), generator=torch.Generator().manual_seed(5))  # 2 x block_size 32
    _, loss = model(idx, torch.roll(idx, -1, 1))
    assert torch.isfinite(loss)
    cache = KVCache(model.config, 2, "cpu", torch.float64, max_len=64)
    model(idx[:, :40], kv_cache=cache)
    logits_cached, _ = model(idx[:, 40:63], kv_cache=cache)
    logits_one, _ = model(idx[:, 63:], kv_cache=cache)  # a single query past block_size
    torch.testing.assert_close(logits_cached, model(idx[:, :63])[0])
    torch.testing.assert_close(logits_one, model(idx)[0])
    with pytest.raises(ValueError, match=f"sequence of length 65 exceeds 2x block_size = 64, the longest a "
                                         f"{pos_encoding} model evaluates"):
        model(torch.zeros((1, 65), dtype=torch.long))
    with pytest.raises(ValueError, match="sequence of length 33 exceeds the KV cache's 32 positions"):
        model(torch.zeros((1, 33), dtype=torch.long), kv_cache=KVCache(model.config, 1, "cpu"))


def test_forward_rejects_too_long_sequence():
    model = tiny_model()
    model(torch.zeros((1, 32), dtype=torch.long))
    with pytest.raises(ValueError, match="sequence of length 33 exceeds block_size 32: learned positions end there"):
        model(torch.zeros((1, 33), dtype=torch.long))


def draws(logits, n=2000, **kw):
    g = torch.Generator().manual_seed(0)
    return {int(sample_next(logits, generator=g, **kw)) for _ in range(n)}


def test_temperature_zero_is_argmax():
    logits = torch.tensor([[0.1, 3.0, 2.9, -1.0]])
    assert draws(logits, n=5, temperature=0) == {1}


def test_top_k_keeps_only_k_most_likely():
    # unsorted: the k best are ids 4 and 1, which only the gather back through topk's indices returns
    logits = torch.tensor([[1.7, 1.9, -5.0, 1.6, 2.0, 1.8]])
    assert draws(logits, top_k=2) == {4, 1}
    assert draws(logits, top_k=3) == {4, 1, 5}
    assert len(draws(logits)) >= 5


def test_top_p_keeps_smallest_nucleus():
    # unsorted: the nucleus is found in sorted order and must be scattered back to these ids
    probs = torch.tensor([[0.15, 0.05, 0.5, 0.3]])
    logits = probs.log()
    assert draws(logits, top_p=0.5) == {2}  # 0.5 alone reaches 0.5
    assert draws(logits, top_p=0.7) == {2, 3}  # 0.5 + 0.3 = 0.8 >= 0.7
    assert draws(logits, top_p=0.9) == {2, 3, 0}
    assert draws(logits, top_p=1.0) == {0, 1, 2, 3}


def test_top_k_then_top_p_on_unsorted_logits():
    probs = torch.tensor([[0.05, 0.3, 0.02, 0.5, 0.13]])
    # top_k=3 keeps ids 3, 1, 4 (renormalised 0.54, 0.32, 0.14); top_p=0.8 of those: 3 and 1
    assert draws(probs.log(), top_k=3, top_p=0.8) == {3, 1}


def test_vocab_limit_masks_padding_ids():
    logits = torch.tensor([[0.0, 0.0, 9.0, 9.0]])
    assert draws(logits, vocab_limit=2) == {0, 1}


def test_generation_stops_at_eot_and_pads_finished_rows():
    model = tiny_model()
    idx = torch.randint(0, 64, (2, 4), generator=torch.Generator().manual_seed(4))
    free = model.generate(idx, 30, temperature=0)
    eot = int(free[0, 4 + 3])  # the 4th token row 0 produces on its own
    out = model.generate(idx, 30, temperature=0, eot_token=eot)
    assert out[0, 4 + 3] == eot
    assert torch.equal(out[0, :4 + 4], free[0, :4 + 4])
    assert (out[0, 4 + 3:] == eot).all()  # finished row padded with eot
    row1 = free[1, 4:].tolist()
    if eot in row1:  # both rows finished: generation ends early
        assert out.size(1) == 4 + max(3, row1.index(eot)) + 1
    else:
        assert out.size(1) == 4 + 30 and torch.equal(out[1], free[1])


@pytest.mark.parametrize("key,value,choices", [("pos_encoding", "nope", "learned, rope, alibi"),
                                                ("norm", "batchnorm", "layernorm, rmsnorm"),
                                                ("mlp", "tanh", "gelu, swiglu, relu2"),
                                                ("init", "xavier", "gpt2, zero_proj, scaled")])
def test_unknown_knob_values_are_rejected(key, value, choices):
    with pytest.raises(ValueError, match=f"^{key} must be one of {choices}, got '{value}'$"):
        GPT(GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=1, n_embd=8, **{key: value}))


def test_rope_needs_an_even_head_size():
    with pytest.raises(ValueError, match="pos_encoding 'rope' needs an even head size, got n_embd/n_head = 3"):
        GPT(GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=2, n_embd=6, pos_encoding="rope"))


def test_peak_flops_table(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H100 PCIe")
    assert device_peak_flops("cuda") == 756e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H100 80GB HBM3")
    assert device_peak_flops("cuda") == 989e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA A100-SXM4-40GB")
    assert device_peak_flops("cuda") == 312e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Some Future GPU")
    assert device_peak_flops("cuda") == 0.0
    assert device_peak_flops("cpu") > 0
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert device_peak_flops("cpu", torch.bfloat16) == 16 * device_peak_flops("cpu")  # AMX: 1,024 vs 64 per cycle


def test_mfu_by_hand():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=64, n_layer=2, n_head=2, n_embd=32, bias=False))
    # parameters without the position table: tied embedding 64*32 = 2048; per layer ln_1 32 + c_attn 32*96 = 3072
    # + attn c_proj 1024 + ln_2 32 + c_fc 32*128 = 4096 + mlp c_proj 4096 = 12352, two layers; ln_f 32: 26784
    assert model.get_num_params() == 26784
    # PaLM: 6N + 12 * L * H * Q * T = 160704 + 12 * 2 * 2 * 16 * 32 = 185280 FLOPs per token
    assert model.flops_per_token() == 185280
    # 1000 tokens in 2 s on a 1 GFLOP/s device: 92.64 MFLOP/s achieved
    assert model.estimate_mfu(1000, 2.0, 1e9) == pytest.approx(0.09264)
    assert model.estimate_mfu(1000, 1.0, 0) == 0.0


def test_per_token_losses_are_the_mean_losses_parts():
    model = tiny_model()
    idx = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(5))
    targets = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(6))
    logits, mean = model(idx, targets)
    _, per_token = model(idx, targets, reduction="none")
    assert per_token.shape == (2, 12)
    log_probs = torch.log_softmax(logits, dim=-1)
    torch.testing.assert_close(per_token, -log_probs.gather(-1, targets[..., None])[..., 0])
    torch.testing.assert_close(per_token.mean(), mean)


def test_eot_check_interval_does_not_change_the_result():
    model = tiny_model()
    idx = torch.randint(0, 64, (1, 4), generator=torch.Generator().manual_seed(4))
    free = model.generate(idx, 40, temperature=0)
    eot = int(free[0, 4 + 5])
    every = model.generate(idx, 40, temperature=0, eot_token=eot, eot_check_every=1)
    assert every.size(1) <= 4 + 6 and int(every[0, -1]) == eot  # stopped at the first end-of-text
    for n in (7, 16, 100):  # as on a GPU, where checking every token would stall it
        assert torch.equal(model.generate(idx, 40, temperature=0, eot_token=eot, eot_check_every=n), every)


@pytest.mark.parametrize("pos_encoding", ["learned", "rope", "alibi"])
def test_kv_cache_dtype_follows_autocast(pos_encoding):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=32, n_layer=1, n_head=2, n_embd=16, pos_encoding=pos_encoding))
    cache = KVCache(model.config, 1, "cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.zeros((1, 4), dtype=torch.long), kv_cache=cache)
    assert cache.k.dtype == cache.v.dtype == torch.bfloat16
    plain = KVCache(model.config, 1, "cpu")
    model(torch.zeros((1, 4), dtype=torch.long), kv_cache=plain)
    assert plain.k.dtype == torch.float32


# ----------------------------------------------------------------------------------------------------------------
# the architecture knobs, against hand-computed values

GPT2_KEYS_ONE_LAYER = {  # what model.py wrote before the knobs existed: old checkpoints must keep loading
    "transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight", "transformer.ln_f.bias",
    "lm_head.weight",
    *(f"transformer.h.0.{m}.{t}" for m in ("ln_1", "ln_2", "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
      for t in ("weight", "bias")),
}


def test_defaults_reproduce_the_gpt2_model_of_earlier_versions():
    # Numbers printed by model.py at commit b9e5ceb (before the knobs) for this config and seed: same parameters,
    # same random draws in the same order, same forward.
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=32, n_layer=2, n_head=2, n_embd=16))
    sd = model.state_dict()
    assert len(sd) == 29
    assert sum(v.double().sum().item() for v in sd.values()) == 80.12651898553395
    assert sum(v.double().abs().sum().item() for v in sd.values()) == 178.27365234170884
    assert sd["transformer.h.1.mlp.c_proj.weight"][0, :3].tolist() == [-0.00688302842900157, -0.021020706743001938,
                                                                       0.003146842122077942]
    x = torch.arange(12).view(1, 12)
    _, loss = model.double()(x, x + 1)
    assert loss.item() == pytest.approx(3.4607155881425213, rel=1e-12)


def test_old_checkpoint_without_the_new_fields_loads():
    old_args = dict(block_size=16, vocab_size=32, n_layer=1, n_head=2, n_embd=16, dropout=0.0, bias=True,
                    pos_encoding="learned")
    old_weights = {k: v.clone() for k, v in GPT(GPTConfig(**old_args)).state_dict().items()}
    assert set(old_weights) == GPT2_KEYS_ONE_LAYER
    model = GPT(GPTConfig.from_dict({**old_args, "some_future_field": 1}))
    model.load_state_dict(old_weights)  # strict: the same names, no extra buffers in the state dict
    cfg = model.config
    assert (cfg.norm, cfg.mlp, cfg.qk_norm, cfg.tie_embeddings, cfg.init) == ("layernorm", "gelu", False, True, "gpt2")


def test_llama_and_qwen3_parameter_names_and_shapes():
    """The names the Hugging Face export maps (HELPERS.md): q_norm/k_norm only with qk_norm, c_gate only with swiglu,
    no wpe without learned positions, a separate lm_head when untied, no biases with bias=False."""
    cfg = GPTConfig(block_size=16, vocab_size=32, n_layer=1, n_head=2, n_embd=48, pos_encoding="rope", norm="rmsnorm",
                    mlp="swiglu", qk_norm=True, bias=False, tie_embeddings=False)
    model = GPT(cfg)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {
        "transformer.wte.weight": (32, 48), "lm_head.weight": (32, 48), "transformer.ln_f.weight": (48,),
        "transformer.h.0.ln_1.weight": (48,), "transformer.h.0.ln_2.weight": (48,),
        "transformer.h.0.attn.c_attn.weight": (144, 48), "transformer.h.0.attn.c_proj.weight": (48, 48),
        "transformer.h.0.attn.q_norm.weight": (24,), "transformer.h.0.attn.k_norm.weight": (24,),
        "transformer.h.0.mlp.c_fc.weight": (128, 48), "transformer.h.0.mlp.c_gate.weight": (128, 48),
        "transformer.h.0.mlp.c_proj.weight": (48, 128),
    }
    assert model.lm_head.weight is not model.transformer.wte.weight
    tied = GPT(GPTConfig(block_size=16, vocab_size=32, n_layer=1, n_head=2, n_embd=48))
    assert tied.lm_head.weight is tied.transformer.wte.weight
    # untied: the token table does no FLOPs, so the count (and MFU) leaves it out like the position table
    assert model.get_num_params() == sum(p.numel() for p in model.parameters()) - 32 * 48
    assert model.get_num_params(non_embedding=False) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("mlp,n_embd,hidden,expected", [("gelu", 100, 0, 400), ("relu2", 100, 0, 400),
                                                         ("swiglu", 192, 0, 512), ("swiglu", 100, 0, 288),
                                                         ("swiglu", 768, 0, 2048), ("gelu", 100, 40, 40)])
def test_mlp_hidden_size(mlp, n_embd, hidden, expected):
    # swiglu: round(8/3 * 100) = 267 -> 288, the next multiple of 32; 8/3 * 192 = 512 exactly
    assert GPTConfig(n_embd=n_embd, mlp=mlp, mlp_hidden=hidden).mlp_hidden_size == expected


@pytest.mark.parametrize("kind", ["gelu", "swiglu", "relu2"])
def test_mlp_forms(kind):
    torch.manual_seed(0)
    mlp = MLP(GPTConfig(n_embd=8, mlp=kind, mlp_hidden=12, bias=False)).double()
    x = torch.randn(3, 8, dtype=torch.float64)
    up = x @ mlp.c_fc.weight.T
    if kind == "gelu":  # exact GELU: x * Phi(x)
        h = up * 0.5 * (1 + torch.erf(up / math.sqrt(2)))
    elif kind == "relu2":
        h = up.clamp(min=0) ** 2
    else:  # silu(gate) * up, silu(g) = g * sigmoid(g)
        gate = x @ mlp.c_gate.weight.T
        h = gate * torch.sigmoid(gate) * up
    torch.testing.assert_close(mlp(x), h @ mlp.c_proj.weight.T)


def test_norms_by_hand():
    x = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    rms = RMSNorm(2).double()
    with torch.no_grad():
        rms.weight.copy_(torch.tensor([2.0, 0.5]))
    torch.testing.assert_close(rms(x), torch.tensor([[6.0, 2.0]], dtype=torch.float64) / math.sqrt(12.5 + 1e-6))
    ln = LayerNorm(2, bias=False).double()  # mean 3.5, variance 0.25
    torch.testing.assert_close(ln(x), torch.tensor([[-0.5, 0.5]], dtype=torch.float64) / math.sqrt(0.25 + 1e-5))


def test_alibi_slopes_follow_press_et_al():
    assert alibi_slopes(8).tolist() == [2.0 ** -i for i in range(1, 9)]
    assert alibi_slopes(4).tolist() == [2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8]
    assert alibi_slopes(1).tolist() == [2.0 ** -8]
    # not a power of two: the 4 of n=4, then every other slope of n=8 (2^-1, 2^-3)
    assert alibi_slopes(6).tolist() == [2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8, 2.0 ** -1, 2.0 ** -3]
    assert len(set(alibi_slopes(12).tolist())) == 12


def test_alibi_attention_by_hand():
    torch.manual_seed(0)
    attn = CausalSelfAttention(GPTConfig(block_size=8, n_head=2, n_embd=4, bias=False, pos_encoding="alibi")).double()
    assert attn.attention_bias(torch.tensor([2]), 3).tolist() == [[[-2 / 16, -1 / 16, 0.0]], [[-2 / 256, -1 / 256, 0.0]]]
    x = torch.randn(1, 3, 4, dtype=torch.float64)
    q, k, v = (x @ attn.c_attn.weight.T).split(4, dim=2)
    out = []
    for h, slope in enumerate([1 / 16, 1 / 256]):
        qh, kh, vh = (t[0, :, 2 * h:2 * h + 2] for t in (q, k, v))
        scores = qh @ kh.T / math.sqrt(2)
        for i in range(3):
            for j in range(3):
                scores[i, j] = scores[i, j] - slope * (i - j) if j <= i else float("-inf")
        out.append(torch.softmax(scores, dim=-1) @ vh)
    expected = torch.cat(out, dim=1) @ attn.c_proj.weight.T
    torch.testing.assert_close(attn(x, torch.arange(3))[0], expected)


def test_rope_by_hand():
    # head_dim 4, theta 10000: inv_freq = [1, 1/100]; dims (0, 2) rotate by p radians, dims (1, 3) by p/100
    cos, sin = rope_cos_sin(4, 3, 10000.0)
    torch.testing.assert_close(cos[2], torch.tensor([math.cos(2), math.cos(0.02), math.cos(2), math.cos(0.02)]))
    torch.testing.assert_close(sin[2], torch.tensor([math.sin(2), math.sin(0.02), math.sin(2), math.sin(0.02)]))
    attn = CausalSelfAttention(GPTConfig(block_size=8, n_head=1, n_embd=4, pos_encoding="rope")).double()
    q = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64).view(1, 1, 1, 4)
    k = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64).view(1, 1, 1, 4)
    rq, rk = attn.position_qk(q, k, torch.tensor([1]))  # rotate_half([a, b, c, d]) = [-c, -d, a, b]
    torch.testing.assert_close(rq.flatten(), torch.tensor([math.cos(1), 0, math.sin(1), 0], dtype=torch.float64))
    torch.testing.assert_close(rk.flatten(), torch.tensor([0, math.cos(0.01), 0, math.sin(0.01)], dtype=torch.float64))
    # q.k depends on the distance only: (5, 2) and (9, 6) score the same, (5, 3) does not
    q, k = torch.randn(2, 1, 1, 1, 4, dtype=torch.float64)

    def score(m, n):
        return float((attn.position_qk(q, q, torch.tensor([m]))[0] * attn.position_qk(k, k, torch.tensor([n]))[1]).sum())
    assert score(5, 2) == pytest.approx(score(9, 6), rel=1e-6)  # cos/sin tables are float32
    assert score(5, 2) != pytest.approx(score(5, 3), rel=1e-3)


def test_qk_norm_applies_before_rope():
    """With qk_norm, q and k are RMS-normalised per head and then rotated (Qwen3): so every rotated head vector has
    RMS 1 whatever the scale of c_attn's weights."""
    torch.manual_seed(0)
    attn = CausalSelfAttention(GPTConfig(block_size=8, n_head=2, n_embd=8, pos_encoding="rope", qk_norm=True)).double()
    seen = {}
    original = attn.position_qk
    attn.position_qk = lambda q, k, pos: seen.setdefault("qk", original(q, k, pos))
    with torch.no_grad():
        attn.c_attn.weight.mul_(100)
    attn(torch.randn(1, 5, 8, dtype=torch.float64), torch.arange(5))
    for t in seen["qk"]:
        torch.testing.assert_close(t.pow(2).mean(-1), torch.ones(1, 2, 5, dtype=torch.float64), rtol=1e-5, atol=1e-5)


def test_inits():
    def weights(init, n_layer=4, n_embd=256):
        torch.manual_seed(0)
        model = GPT(GPTConfig(block_size=8, vocab_size=64, n_layer=n_layer, n_head=4, n_embd=n_embd, init=init))
        return dict(model.named_parameters())
    zero = weights("zero_proj")
    projections = [n for n in zero if n.endswith("c_proj.weight")]
    assert len(projections) == 8 and all(not zero[n].any() for n in projections)
    assert zero["transformer.h.0.attn.c_attn.weight"].std().item() == pytest.approx(0.02, rel=0.02)
    gpt2 = weights("gpt2")
    assert gpt2["transformer.h.3.mlp.c_proj.weight"].std().item() == pytest.approx(0.02 / math.sqrt(8), rel=0.02)
    scaled = weights("scaled")  # NeoX: small_init sqrt(2 / (5 * 256)) = 0.0395, wang_init 2 / (4 * 16) = 0.03125
    assert scaled["transformer.h.0.attn.c_attn.weight"].std().item() == pytest.approx(0.03953, rel=0.02)
    assert scaled["transformer.wte.weight"].std().item() == pytest.approx(0.03953, rel=0.02)
    assert scaled["transformer.h.1.mlp.c_proj.weight"].std().item() == pytest.approx(0.03125, rel=0.02)


@pytest.fixture(scope="module")
def compile_runs():
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(3))
    except Exception as e:  # no C++ compiler, unsupported Python, ...: nothing to test here
        pytest.skip(f"torch.compile cannot run on this machine: {type(e).__name__}: {str(e).splitlines()[0][:200]}")


@pytest.mark.parametrize("pos_encoding", ["rope", "alibi"])
def test_compiled_forward_equals_eager(pos_encoding, compile_runs):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_embd=32, pos_encoding=pos_encoding,
                          norm="rmsnorm", mlp="swiglu", qk_norm=True)).eval()
    idx = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    targets = torch.roll(idx, -1, 1)
    compiled = torch.compile(model, dynamic=False)
    logits_c, loss_c = compiled(idx, targets)
    logits_e, loss_e = model(idx, targets)
    torch.testing.assert_close(logits_c, logits_e, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-6)
