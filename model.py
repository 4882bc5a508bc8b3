"""
solGPT model: a GPT-2 style decoder in one file, after nanoGPT.

Pre-norm blocks, causal self-attention through F.scaled_dot_product_attention, a preallocated KV cache for generation,
and an MFU estimate against the peak FLOP/s of the device it runs on.

The architecture is a handful of GPTConfig fields; the defaults are GPT-2 (and so are the checkpoints of earlier
versions, which load unchanged). Each alternative is one value, taken from Llama/Qwen3 or the small-model speed-runs
of 2024-2026:
  - pos_encoding: 'learned' (GPT-2's absolute table), 'rope' (rotary, in HF Llama's rotate_half convention),
    'alibi' (Press et al.'s per-head linear attention biases). RoPE rotates q and k in
    CausalSelfAttention.position_qk, ALiBi adds its bias in attention_bias; both see absolute positions, so the
    KV cache needs nothing special, and both evaluate up to LONG_CONTEXT x block_size (learned stops at block_size);
  - norm: 'layernorm' (GPT-2) or 'rmsnorm' (Llama); qk_norm: RMSNorm of each head's q and k before RoPE (Qwen3);
  - mlp: 'gelu' (GPT-2), 'swiglu' (Llama), 'relu2' (squared ReLU: not an HF architecture, an option only);
  - tie_embeddings: lm_head shares the token embedding (GPT-2) or has its own (Llama);
  - init: 'gpt2', 'zero_proj' or 'scaled' (see GPT._init_weights).
learned + layernorm + gelu is HF GPT-2; rope + rmsnorm + swiglu (bias False) is HF Llama, with qk_norm HF Qwen3;
alibi is BLOOM's and MPT's, outside those two families.
"""

import math
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
from torch.nn import functional as F

POS_ENCODINGS = ("learned", "rope", "alibi")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu", "relu2")
INITS = ("gpt2", "zero_proj", "scaled")
CLS_POOLS = ("attention", "class_attention", "max")
CLS_TOKEN_POOLS = ("cls", "max", "maxmean")
MODEL_CHOICES = {"pos_encoding": POS_ENCODINGS, "norm": NORMS, "mlp": MLPS, "init": INITS, "cls_pool": CLS_POOLS,
                 "cls_token_pool": CLS_TOKEN_POOLS}
LONG_CONTEXT = 2  # rope/alibi models accept sequences up to this many times block_size (to measure extrapolation)


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 16448  # tokenizer's n_vocab rounded up to a multiple of 64 (faster matmuls)
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # bias in Linears and LayerNorms, like GPT-2; False is a bit better and faster
    pos_encoding: str = "learned"  # 'learned', 'rope' or 'alibi'
    rope_theta: float = 10000.0  # RoPE base: inv_freq = 1 / rope_theta ** (2i / head_dim)
    norm: str = "layernorm"  # 'layernorm' (eps 1e-5) or 'rmsnorm' (eps 1e-6, no bias)
    mlp: str = "gelu"  # 'gelu', 'swiglu' or 'relu2'
    mlp_hidden: int = 0  # MLP width; 0 = 4 * n_embd, or for swiglu 8/3 * n_embd rounded up to a multiple of 32
    qk_norm: bool = False  # RMSNorm over head_dim on q and k (before RoPE), as Qwen3
    tie_embeddings: bool = True  # lm_head shares wte's weight (GPT-2)
    init: str = "gpt2"  # 'gpt2', 'zero_proj' or 'scaled'
    # classification head (vuln.py): n_classes > 0 adds cls_head; cls_pool is how a file's windows are pooled
    n_classes: int = 0
    cls_pool: str = "attention"  # 'attention' (learned weights over windows), 'class_attention' (each output its own
    # weights over windows) or 'max'
    cls_token_pool: str = "cls"  # a window's state: its last (<|cls|>) position's, 'max' over its positions, or
    # 'maxmean': [max, mean] over them (twice as wide: where a pattern is strongest, and how much of the window has it)
    n_detectors: int = 0  # > 0: the head also predicts this many Slither detectors (an auxiliary target, after the
    # classes in its output; classify() returns the classes only)
    cls_head_hidden: int = 0  # > 0: a hidden layer of this width (GELU) before the outputs; 0: outputs linear in the
    # pooled state

    @classmethod
    def from_dict(cls, d):
        """Build from a checkpoint's model_args, ignoring keys a newer/older version does not know
        (missing ones take the defaults above, which are what older versions built)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def mlp_hidden_size(self):
        """The MLP's inner width. SwiGLU has three matrices instead of two, so 8/3 * n_embd keeps its parameter count
        (and FLOPs) at the 4 * n_embd GELU MLP's, as Llama does; a multiple of 32 keeps the matmuls on fast kernels."""
        if self.mlp_hidden:
            return self.mlp_hidden
        if self.mlp == "swiglu":
            return math.ceil(round(8 * self.n_embd / 3) / 32) * 32
        return 4 * self.n_embd


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's own cannot drop only the bias)."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight: LayerNorm without centring or bias (Llama), a little cheaper."""

    def __init__(self, ndim, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.eps = eps

    def forward(self, x):
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


def make_norm(config):
    return RMSNorm(config.n_embd) if config.norm == "rmsnorm" else LayerNorm(config.n_embd, bias=config.bias)


def rope_cos_sin(head_dim, n_positions, theta):
    """cos and sin (n_positions, head_dim) of HF Llama's RoPE: frequency i rotates dims i and i + head_dim/2."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim)
    freqs = torch.outer(torch.arange(n_positions, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    half = x.size(-1) // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def alibi_slopes(n_head):
    """Press et al.'s head slopes: the geometric sequence 2^(-8/n), 2^(-16/n), ... for n a power of two; otherwise
    those of the nearest lower power of two p, then every other slope of 2p (so every head keeps a distinct slope)."""
    def powers_of_two(n):
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    p = 2 ** math.floor(math.log2(n_head))
    slopes = powers_of_two(p) + powers_of_two(2 * p)[0::2][:n_head - p]
    return torch.tensor(slopes, dtype=torch.float32)


class KVCache:
    """Keys and values of every layer for up to max_len positions (default block_size), allocated once.

    `length` is how many positions are filled; the model appends T new positions per forward and advances it.
    The buffers are allocated at the first update, in the dtype of the keys the model computes: under autocast
    that is bfloat16/float16, not the weights' float32 (half the memory, and no casts on every step).
    """

    def __init__(self, config, batch_size, device, dtype=None, max_len=None):
        self.max_len = max_len or config.block_size
        self.shape = (config.n_layer, batch_size, config.n_head, self.max_len, config.n_embd // config.n_head)
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
        self.head_dim = config.n_embd // config.n_head
        self.dropout = config.dropout
        self.pos_encoding = config.pos_encoding
        # QK-norm bounds the attention logits whatever the weights grow to, which tolerates higher learning rates
        self.q_norm = RMSNorm(self.head_dim) if config.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim) if config.qk_norm else None
        # Tables, not parameters (persistent=False keeps them out of checkpoints): they follow .to() and .double()
        n_positions = LONG_CONTEXT * config.block_size
        if self.pos_encoding == "rope":
            cos, sin = rope_cos_sin(self.head_dim, n_positions, config.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        if self.pos_encoding == "alibi":
            self.register_buffer("alibi_slopes", alibi_slopes(config.n_head), persistent=False)

    def position_qk(self, q, k, pos):
        """RoPE: rotate q and k (B, nh, T, hs) by their absolute positions pos (T,), so that q.k depends on the
        distance between them only. Other encodings leave q and k as they are."""
        if self.pos_encoding != "rope":
            return q, k
        cos, sin = self.rope_cos[pos].to(q.dtype), self.rope_sin[pos].to(q.dtype)  # (T, hs), broadcast over B, nh
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin

    def attention_bias(self, pos_q, Tk):
        """ALiBi: an additive attention bias -slope * (query position - key position) for queries at positions pos_q
        and keys at 0..Tk-1: a (nh, Tq, Tk) float tensor; None for the other encodings."""
        if self.pos_encoding != "alibi":
            return None
        distance = torch.arange(Tk, device=pos_q.device)[None, :] - pos_q[:, None]  # <= 0 where attended
        return self.alibi_slopes[:, None, None] * distance

    def forward(self, x, pos, layer=0, kv_cache=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = self.position_qk(q, k, pos)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)
        mask, is_causal = self._mask(pos, k.size(2))
        if mask is not None and mask.is_floating_point():
            mask = mask.to(q.dtype)  # SDPA wants a float mask in the query's dtype (autocast's, or float64 in tests)
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
    """gelu: c_proj(gelu(c_fc(x))) (GPT-2, exact GELU); relu2: c_proj(relu(c_fc(x))^2) (modded-nanogpt);
    swiglu: c_proj(silu(c_gate(x)) * c_fc(x)) (Llama: c_gate is gate_proj, c_fc up_proj, c_proj down_proj)."""

    def __init__(self, config):
        super().__init__()
        hidden = config.mlp_hidden_size
        self.kind = config.mlp
        self.c_fc = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.c_gate = nn.Linear(config.n_embd, hidden, bias=config.bias) if self.kind == "swiglu" else None
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        if self.kind == "swiglu":
            h = F.silu(self.c_gate(x)) * self.c_fc(x)
        elif self.kind == "relu2":
            h = F.relu(self.c_fc(x)).square()
        else:
            h = F.gelu(self.c_fc(x))
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x, pos, layer=0, kv_cache=None):
        x = x + self.attn(self.ln_1(x), pos, layer, kv_cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        for key, choices in MODEL_CHOICES.items():
            if getattr(config, key) not in choices:
                raise ValueError(f"{key} must be one of {', '.join(choices)}, got {getattr(config, key)!r}")
        if config.pos_encoding == "rope" and (config.n_embd // config.n_head) % 2:
            raise ValueError(f"pos_encoding 'rope' needs an even head size, got n_embd/n_head = "
                             f"{config.n_embd // config.n_head}")
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd) if config.pos_encoding == "learned" else None,
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=make_norm(config),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.transformer.wte.weight = self.lm_head.weight  # GPT-2: fewer params, no loss in quality when small
        if config.n_classes:
            width = config.n_embd * (2 if config.cls_token_pool == "maxmean" else 1)
            self.cls_head = nn.ModuleDict(dict(
                # attention pooling: one weight per window, or per window and output for class_attention
                score=nn.Linear(width, config.n_classes + config.n_detectors if config.cls_pool == "class_attention"
                                else 1),
                out=self._cls_outputs(width, config.n_classes + config.n_detectors, config.cls_head_hidden),
            ))
            # BCE's per-output positive weights, and the detectors' share of the loss: set by the training task from
            # its label frequencies and config, not saved
            n_out = config.n_classes + config.n_detectors
            self.register_buffer("cls_pos_weight", torch.ones(n_out), persistent=False)
            self.cls_detector_weight = 0.0
        # the longest sequence forward accepts: learned positions end at block_size, rope/alibi go on (tables permit)
        self.max_positions = config.block_size * (1 if config.pos_encoding == "learned" else LONG_CONTEXT)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                self._init_residual_projection(p)

    @staticmethod
    def _cls_outputs(width, n_out, hidden):
        if not hidden:
            return nn.Linear(width, n_out)
        return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, n_out))

    def _init_weights(self, module):
        """'gpt2' and 'zero_proj': N(0, 0.02) for every matrix and embedding, as GPT-2.
        'scaled': GPT-NeoX's small_init, N(0, sqrt(2 / (5 n_embd))) (Nguyen & Salazar 2019): the std follows the
        width instead of a constant tuned for n_embd = 768 (where it gives 0.023; 0.046 at n_embd = 192)."""
        std = math.sqrt(2 / (5 * self.config.n_embd)) if self.config.init == "scaled" else 0.02
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=std)

    def _init_residual_projection(self, weight):
        """The output projections of attention and MLP write into the residual stream; each init keeps its variance
        from growing with depth. 'gpt2': std 0.02 / sqrt(2 n_layer). 'zero_proj': zeros (modded-nanogpt): every block
        starts as the identity, and the projections' gradients (not zero: their inputs are not) switch them on.
        'scaled': GPT-NeoX's wang_init, std 2 / (n_layer sqrt(n_embd))."""
        cfg = self.config
        if cfg.init == "zero_proj":
            torch.nn.init.zeros_(weight)
        elif cfg.init == "scaled":
            torch.nn.init.normal_(weight, mean=0.0, std=2 / (cfg.n_layer * math.sqrt(cfg.n_embd)))
        else:
            torch.nn.init.normal_(weight, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def get_num_params(self, non_embedding=True):
        """Parameter count; lookup tables that do no FLOPs are left out by default, like nanoGPT: the position table,
        and the token embedding when it is not tied to lm_head (tied, its weight does lm_head's FLOPs)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and self.transformer.wpe is not None:
            n -= self.transformer.wpe.weight.numel()
        if non_embedding and not self.config.tie_embeddings:
            n -= self.transformer.wte.weight.numel()
        return n

    def forward(self, idx, targets=None, kv_cache=None, reduction="mean"):
        """idx (B, T) token ids. With targets: (logits, loss; targets of -1 are ignored): the mean loss, or with
        reduction="none" the (B, T) per-token losses (exact bits per byte weighs each token by its own bytes).
        Without: logits of the last position only (all generation needs), loss None.
        With kv_cache: idx are the next T positions after the cached ones.
        rope/alibi models accept up to LONG_CONTEXT * block_size positions (evaluation past the training length);
        learned positions stop at block_size."""
        if idx.dim() == 3:  # (files, windows, T): classification, see classify()
            outputs, _ = self.classify(idx, with_detectors=True)
            loss = None if targets is None else self.classify_loss(outputs, targets)
            return outputs[:, :self.config.n_classes], loss
        B, T = idx.size()
        x = self.hidden(idx, kv_cache)
        if targets is None:
            return self.lm_head(x[:, [-1], :]), None
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1,
                               reduction=reduction)
        return logits, (loss.view(B, T) if reduction == "none" else loss)

    def hidden(self, idx, kv_cache=None):
        """The final (normed) hidden states (B, T, n_embd) of idx (B, T)."""
        B, T = idx.size()
        start = kv_cache.length if kv_cache is not None else 0
        self._check_length(start + T, kv_cache)
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx)
        if self.transformer.wpe is not None:
            x = x + self.transformer.wpe(pos)
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, pos, i, kv_cache)
        if kv_cache is not None:
            kv_cache.length += T
        return self.transformer.ln_f(x)

    def classify_loss(self, outputs, targets):
        """Mean BCE over the classes (per-class pos_weight), plus cls_detector_weight times the mean BCE over the
        detectors when the head has them: targets (B, n_classes + n_detectors) like outputs."""
        pos_weight, k = self.cls_pos_weight, self.config.n_classes
        loss = F.binary_cross_entropy_with_logits(outputs[:, :k].float(), targets[:, :k].float(),
                                                  pos_weight=pos_weight[:k])
        if self.config.n_detectors:
            loss = loss + self.cls_detector_weight * F.binary_cross_entropy_with_logits(
                outputs[:, k:].float(), targets[:, k:].float(), pos_weight=pos_weight[k:])
        return loss

    def classify(self, idx, with_detectors=False):
        """Multi-label logits of files cut into windows: idx (B, W, T) token ids, each window right-padded with -1
        after its last token (the <|cls|> token: a causal model's last position has seen the whole window), and a
        window that is all -1 is padding (files have different numbers of windows). Returns (logits (B, n_classes),
        window_logits (B, W, n_classes): the head applied to each window alone, -inf for padding windows); with
        with_detectors, both also hold the n_detectors detector logits after the classes.
        Only real windows are computed, and only up to the longest one: padding changes nothing (causal attention:
        what comes after a position never reaches it)."""
        if not self.config.n_classes:
            raise ValueError("this model has no classification head (n_classes is 0)")
        B, W, T = idx.size()
        real = idx[:, :, 0] >= 0  # (B, W)
        windows = idx[real]  # (N, T)
        lengths = (windows >= 0).sum(1)
        h = self.hidden(windows[:, :int(lengths.max())].clamp(min=0))  # (N, L, C)
        if self.config.cls_token_pool in ("max", "maxmean"):  # every position: a local pattern need not travel
            valid = (torch.arange(h.size(1), device=idx.device)[None, :] < lengths[:, None])[..., None]
            peak = h.masked_fill(~valid, float("-inf")).amax(1)
            if self.config.cls_token_pool == "max":
                h = peak
            else:  # the mean summed in float32 (bf16 drops low bits over 511 positions)
                h = torch.cat([peak.float(), h.float().masked_fill(~valid, 0.0).sum(1) / lengths[:, None]], -1)
        else:
            h = h[torch.arange(h.size(0), device=idx.device), lengths - 1]  # (N, C): each window's <|cls|> state
        hw = h.new_zeros(B, W, h.size(-1))
        hw[real] = h
        head = self.cls_head
        window_logits = head.out(hw)
        if self.config.cls_pool == "max":
            logits = head.out(hw.masked_fill(~real[..., None], float("-inf")).amax(1))
        elif self.config.cls_pool == "attention":
            weights = head.score(hw).squeeze(-1).masked_fill(~real, float("-inf")).softmax(1)  # (B, W)
            logits = head.out((weights[..., None] * hw).sum(1))
        else:  # class_attention: each output's weighted mean of the window logits (one window's bug wins its
            # class's weight without taking the others' from windows that hold theirs); with a linear `out` (no
            # cls_head_hidden) that is out applied to each output's own pooled state, as weights sum to 1
            weights = head.score(hw).masked_fill(~real[..., None], float("-inf")).softmax(1)  # (B, W, n_out)
            logits = (weights * window_logits.masked_fill(~real[..., None], 0.0)).sum(1)
        window_logits = window_logits.masked_fill(~real[..., None], float("-inf"))
        if with_detectors:
            return logits, window_logits
        k = self.config.n_classes
        return logits[:, :k], window_logits[..., :k]

    def _check_length(self, length, kv_cache):
        cfg = self.config
        if length > self.max_positions:
            if cfg.pos_encoding == "learned":
                raise ValueError(f"sequence of length {length} exceeds block_size {cfg.block_size}: learned positions "
                                 f"end there (pos_encoding 'rope' or 'alibi' evaluate up to {LONG_CONTEXT}x block_size)")
            raise ValueError(f"sequence of length {length} exceeds {LONG_CONTEXT}x block_size = {self.max_positions}, "
                             f"the longest a {cfg.pos_encoding} model evaluates")
        if kv_cache is not None and length > kv_cache.max_len:
            raise ValueError(f"sequence of length {length} exceeds the KV cache's {kv_cache.max_len} positions")

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
                 generator=None, use_cache=True, window_keep=None, vocab_limit=None, eot_check_every=None,
                 logits_hook=None):
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
        logits_hook(logits, idx) -> logits, when given, edits the next token's logits (B, V) of the sequences idx so
        far before sampling (complete.py: no end of the middle before it holds some text, healing.require_text).
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
            if logits_hook is not None:
                logits = logits_hook(logits, idx)
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
