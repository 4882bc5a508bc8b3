"""model.py: KV-cache generation equals full recomputation, sampling controls, MFU peak lookup."""

import pytest
import torch

from model import GPT, GPTConfig, KVCache, sample_next
from runtime import device_peak_flops


def tiny_model(block_size=32, vocab_size=64, seed=0):
    """A float64 model that behaves like a trained one under greedy decoding. float64 keeps cache/no-cache rounding
    differences far below any logit gap; an untied output layer and large block/position weights make greedy
    decoding wander over many tokens, where a fresh random model repeats a single token forever."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=2, n_head=2, n_embd=32))
    with torch.no_grad():
        model.lm_head.weight = torch.nn.Parameter(torch.randn(vocab_size, 32))
        model.transformer.wpe.weight.mul_(3)
        for name, p in model.named_parameters():
            if name.startswith("transformer.h") and p.dim() == 2:
                p.mul_(50)
    return model.double().eval()


def crop_reference(model, idx, n):
    """nanoGPT's generation: full forward over the last block_size tokens for every new token, greedy."""
    for _ in range(n):
        logits, _ = model(idx[:, -model.config.block_size:])
        idx = torch.cat((idx, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    return idx


def test_kv_cache_greedy_equals_nanogpt_crop_past_block_size():
    model = tiny_model()
    idx = torch.randint(0, 64, (2, 5), generator=torch.Generator().manual_seed(1))
    bs = model.config.block_size
    ref = crop_reference(model, idx, 300)  # 300 tokens: the window slides ~270 times past block_size 32
    out = model.generate(idx, 300, temperature=0, use_cache=True, window_keep=bs)
    assert torch.equal(out, ref)
    assert min(len(set(r[5:].tolist())) for r in ref) > 10  # a real sequence, not one token repeated


@pytest.mark.parametrize("keep", [None, 1, 31])
def test_kv_cache_equals_recompute_for_any_window(keep):
    model = tiny_model()
    idx = torch.randint(0, 64, (1, 40), generator=torch.Generator().manual_seed(2))  # prompt longer than block
    with_cache = model.generate(idx, 300, temperature=0, use_cache=True, window_keep=keep)
    without = model.generate(idx, 300, temperature=0, use_cache=False, window_keep=keep)
    assert with_cache.shape == (1, 340)
    assert torch.equal(with_cache, without)


def test_sampling_with_cache_is_seeded_and_matches_recompute():
    model = tiny_model()
    idx = torch.zeros((1, 1), dtype=torch.long)
    runs = [model.generate(idx, 100, temperature=1.0, top_k=10, top_p=0.9, use_cache=c,
                           generator=torch.Generator().manual_seed(7)) for c in (True, False, True)]
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
    other = model.generate(idx, 100, temperature=1.0, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(runs[0], other)


def test_kv_cache_forward_matches_full_forward_logits():
    model = tiny_model()
    idx = torch.randint(0, 64, (2, 20), generator=torch.Generator().manual_seed(3))
    cache = KVCache(model.config, 2, "cpu", torch.float64)
    model(idx[:, :12], kv_cache=cache)
    logits_cached, _ = model(idx[:, 12:], kv_cache=cache)  # several new tokens at once: explicit mask path
    logits_full, _ = model(idx)
    assert cache.length == 20
    torch.testing.assert_close(logits_cached, logits_full)


def test_forward_rejects_too_long_sequence():
    model = tiny_model()
    with pytest.raises(ValueError, match="block_size"):
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


def test_unknown_pos_encoding_is_rejected():
    with pytest.raises(ValueError, match="pos_encoding"):
        GPT(GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=1, n_embd=8, pos_encoding="nope"))


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


def test_kv_cache_dtype_follows_autocast():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=32, n_layer=1, n_head=2, n_embd=16))
    cache = KVCache(model.config, 1, "cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.zeros((1, 4), dtype=torch.long), kv_cache=cache)
    assert cache.k.dtype == cache.v.dtype == torch.bfloat16
    plain = KVCache(model.config, 1, "cpu")
    model(torch.zeros((1, 4), dtype=torch.long), kv_cache=plain)
    assert plain.k.dtype == torch.float32
