"""
solGPT model: a GPT-2 style decoder in one file, after nanoGPT.

Pre-norm blocks, causal self-attention through F.scaled_dot_product_attention, tied input/output embeddings,
a preallocated KV cache for generation, and an MFU estimate against the peak FLOP/s of the device it runs on.

Position encoding is a config field. 'learned' (GPT-2's absolute table) is the one implemented; attention is shaped
so that the others are each one small addition:
  - 'rope':  fill in CausalSelfAttention.position_qk (rotate q and k by their absolute positions);
  - 'alibi': fill in CausalSelfAttention.attention_bias (a per-head additive bias from query/key positions).
Both receive absolute positions, so they work unchanged with the KV cache.
"""

import math
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
from torch.nn import functional as F

POS_ENCODINGS = ("learned",)  # 'rope' and 'alibi' plug into the two hooks in CausalSelfAttention


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 16448  # tokenizer's n_vocab rounded up to a multiple of 64 (faster matmuls)
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # bias in Linears and LayerNorms, like GPT-2; False is a bit better and faster
    pos_encoding: str = "learned"

    @classmethod
    def from_dict(cls, d):
        """Build from a checkpoint's model_args, ignoring keys a newer/older version does not know."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's own cannot drop only the bias)."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class KVCache:
    """Keys and values of every layer for up to block_size positions, allocated once.

    `length` is how many positions are filled; the model appends T new positions per forward and advances it.
    The buffers are allocated at the first update, in the dtype of the keys the model computes: under autocast
    that is bfloat16/float16, not the weights' float32 (half the memory, and no casts on every step).
    """

    def __init__(self, config, batch_size, device, dtype=None):
        self.shape = (config.n_layer, batch_size, config.n_head, config.block_size, config.n_embd // config.n_head)
        self.device, self.dtype = device, dtype
        self.k = self.v = None
        self.length = 0

    def update(self, layer, k, v):
        """Store this step's k, v (B, nh, T, hs) after the cached ones and return all keys/values so far."""
        if self.k is None:
            self.dtype = k.dtype if self.dtype is None else self.dtype
            self.k = torch.zeros(self.shape, device=self.device, dtype=self.dtype)
            self.v = torch.zeros(self.shape, device=self.device, dtype=self.dtype)
        start, end = self.length, self.length + k.size(2)
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def reset(self):
        self.length = 0


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.pos_encoding = config.pos_encoding

    def position_qk(self, q, k, pos):
        """Hook for relative encodings applied to q/k (RoPE). 'learned' adds positions at the input instead."""
        return q, k

    def attention_bias(self, pos_q, Tk):
        """Hook for an additive attention bias (ALiBi) for queries at positions pos_q and keys at 0..Tk-1:
        a (nh, Tq, Tk) float tensor, or None."""
        return None

    def forward(self, x, pos, layer=0, kv_cache=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        q, k = self.position_qk(q, k, pos)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)
        mask, is_causal = self._mask(pos, k.size(2))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def _mask(self, pos_q, Tk):
        """Pick the cheapest correct masking: SDPA's built-in causal flag when queries and keys are the same positions,
        nothing for one new query attending to everything cached, an explicit mask otherwise (or with a bias).
        Keys are always positions 0..Tk-1 (the cache starts at position 0), queries the last len(pos_q) of them."""
        bias = self.attention_bias(pos_q, Tk)
        Tq = pos_q.numel()
        if bias is None and Tq == Tk:
            return None, True
        if bias is None and Tq == 1:
            return None, False
        pos_k = torch.arange(Tk, device=pos_q.device)
        allowed = pos_k[None, :] <= pos_q[:, None]  # (Tq, Tk)
        if bias is None:
            return allowed, False
        return bias.masked_fill(~allowed, float("-inf")), False


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, pos, layer=0, kv_cache=None):
        x = x + self.attn(self.ln_1(x), pos, layer, kv_cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        if config.pos_encoding not in POS_ENCODINGS:
            raise ValueError(f"pos_encoding must be one of {', '.join(POS_ENCODINGS)}, got {config.pos_encoding!r}")
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd) if config.pos_encoding == "learned" else None,
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied embeddings (GPT-2; fewer params, no loss in quality)
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual projections keeps the residual stream's variance flat with depth
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def get_num_params(self, non_embedding=True):
        """Parameter count; the position table is left out by default (it does no FLOPs), like nanoGPT.
        The token embedding stays in: it is tied to lm_head, which does."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and self.transformer.wpe is not None:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(self, idx, targets=None, kv_cache=None, reduction="mean"):
        """idx (B, T) token ids. With targets: (logits, loss; targets of -1 are ignored): the mean loss, or with
        reduction="none" the (B, T) per-token losses (exact bits per byte weighs each token by its own bytes).
        Without: logits of the last position only (all generation needs), loss None.
        With kv_cache: idx are the next T positions after the cached ones."""
        B, T = idx.size()
        start = kv_cache.length if kv_cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of length {start + T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx)
        if self.transformer.wpe is not None:
            x = x + self.transformer.wpe(pos)
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, pos, i, kv_cache)
        if kv_cache is not None:
            kv_cache.length += T
        x = self.transformer.ln_f(x)
        if targets is None:
            return self.lm_head(x[:, [-1], :]), None
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1,
                               reduction=reduction)
        return logits, (loss.view(B, T) if reduction == "none" else loss)

    def configure_optimizer(self, weight_decay, learning_rate, betas, device_type):
        """AdamW with decay on matrices and embeddings only; biases and norm gains are not decayed."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=(device_type == "cuda"))

    def flops_per_token(self):
        """Training FLOPs per token (forward + backward), PaLM appendix B: 6N + 12 L H Q T."""
        cfg = self.config
        L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size
        return 6 * self.get_num_params() + 12 * L * H * Q * T

    def estimate_mfu(self, tokens_per_iter, dt, peak_flops):
        """Model FLOP/s utilisation: achieved training FLOP/s over the device's peak."""
        if dt <= 0 or not peak_flops:
            return 0.0
        return self.flops_per_token() * tokens_per_iter / dt / peak_flops

    # ----------------------------------------------------------------------------------------------------------
    # generation

    @torch.inference_mode()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, eot_token=None,
                 generator=None, use_cache=True, window_keep=None, vocab_limit=None, eot_check_every=None):
        """Continue idx (B, T) by up to max_new_tokens tokens; returns (B, T + n) with n <= max_new_tokens.

        temperature 0 is greedy. top_k / top_p (nucleus) restrict sampling. A row that produces eot_token stops:
        its later positions are filled with eot_token, and generation ends once every row has stopped.
        vocab_limit masks ids >= it (vocab_size is padded past the tokenizer's n_vocab).

        Context window: the model sees at most block_size tokens at the positions it was trained on. Once the window
        is full it slides: it restarts from the last `window_keep` tokens (default 3/4 of block_size), which the cache
        path re-prefills in one forward. So the cache costs one forward per token and one short prefill per
        block_size - window_keep tokens; window_keep = block_size is nanoGPT's crop to the last block_size tokens at
        every step (then past block_size every token costs a full forward, as without the cache).
        use_cache=False recomputes the same window from scratch for every token: both paths give the same tokens
        (tested), the cache only makes it faster.
        eot_check_every: asking whether every row has stopped copies a flag to the host, which on a GPU stalls the
        queue of kernels; so there it is asked every 16 tokens (default; 1 on CPU, where it is free), and the
        tokens produced past the point where all rows stopped are cut off: the result does not depend on it.
        """
        cfg = self.config
        keep = cfg.block_size * 3 // 4 if window_keep is None else window_keep
        if not 1 <= keep <= cfg.block_size:
            raise ValueError(f"window_keep must be in [1, block_size], got {keep}")
        was_training = self.training
        self.eval()
        idx = idx.clone()  # an inference tensor like every later idx, so a compiled forward needs one graph, not two
        B, T0 = idx.size()
        done = torch.zeros(B, dtype=torch.bool, device=idx.device)
        check_every = eot_check_every or (1 if idx.device.type == "cpu" else 16)
        start = max(0, idx.size(1) - cfg.block_size)  # absolute index of the first token in the window
        cache = KVCache(cfg, B, idx.device) if use_cache else None  # dtype: that of the keys (autocast's)
        cache_start = start  # absolute index of the token at cache position 0
        for step in range(max_new_tokens):
            if idx.size(1) - start > cfg.block_size:  # window full: slide it
                start = idx.size(1) - keep
            if cache is not None and cache_start != start:  # every cached position moved: re-prefill
                cache.reset()
                cache_start = start
            logits = self._next_logits(idx, start, cache)
            idx_next = sample_next(logits, temperature, top_k, top_p, generator, vocab_limit)
            if eot_token is not None:
                idx_next = torch.where(done[:, None], torch.full_like(idx_next, eot_token), idx_next)
                done |= idx_next[:, 0] == eot_token
            idx = torch.cat((idx, idx_next), dim=1)
            if eot_token is not None and (step + 1) % check_every == 0 and bool(done.all()):
                break
        if eot_token is not None and bool(done.all()):  # end where the last row stopped, as checking every token would
            first_eot = (idx[:, T0:] == eot_token).int().argmax(dim=1)
            idx = idx[:, :T0 + int(first_eot.max()) + 1]
        self.train(was_training)
        return idx

    def _next_logits(self, idx, start, cache):
        """Logits (B, V) for the token after idx, seeing idx[:, start:] at positions 0.. ; with a cache, only the
        positions it does not hold yet are computed."""
        done = cache.length if cache is not None else 0
        logits, _ = self(idx[:, start + done:], kv_cache=cache)
        return logits[:, -1, :]


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None, vocab_limit=None):
    """One token id per row from last-position logits (B, V) -> (B, 1)."""
    logits = logits.float()
    if vocab_limit is not None and vocab_limit < logits.size(-1):
        logits = logits[:, :vocab_limit]  # ids past the tokenizer's vocabulary are padding
    if temperature == 0:
        return torch.argmax(logits, dim=-1, keepdim=True)
    logits = logits / temperature
    ids = None
    if top_k is not None and 0 < top_k < logits.size(-1):
        # keep only the k best (sorted), so the nucleus step sorts k values instead of the whole vocabulary
        logits, ids = torch.topk(logits, top_k)
    if top_p is not None and 0 < top_p < 1.0:
        logits = _top_p_filter(logits, top_p)
    choice = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1, generator=generator)
    return choice if ids is None else torch.gather(ids, -1, choice)


def _top_p_filter(logits, top_p):
    """Keep the smallest set of most likely tokens whose probability sums to >= top_p (always at least one)."""
    sorted_logits, order = torch.sort(logits, descending=True)
    probs = F.softmax(sorted_logits, dim=-1)
    drop_sorted = torch.cumsum(probs, dim=-1) - probs >= top_p  # mass before this token already reaches top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))
