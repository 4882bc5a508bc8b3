"""
Exact validation bits per byte, the tokenizer-independent number solGPT is judged by.

    bpb = (sum of the per-token losses, in bits) / (sum of the UTF-8 bytes of those same target tokens)

Each target token is weighed by its own byte length, from a table built from the tokenizer (special tokens such as
end-of-text count 0 bytes: they are not text, but predicting them still costs bits). Dividing by a split's average
bytes per token instead would be off by the difference between that average and the evaluated tokens' (several
percent for a few random batches). Mixtures need no weights: the sums run over whatever tokens were evaluated.

Two evaluations use it: `sampled_loss` over a few fixed random batches (the periodic evaluations during training),
and `split_loss` over a whole split in fixed, non-overlapping windows (the final number a run reports; bench.py and
fine-tuning scripts call it too).
"""

import math

import numpy as np
import torch


class EvalError(Exception):
    """Bits per byte cannot be computed (e.g. the dataset's tokenizer is not installed); str() is one line."""


def token_byte_lengths(tok, size=None):
    """int64 tensor: UTF-8 byte length of every token id of `tok` (special tokens 0), padded with 0 to `size`."""
    special = set(tok.special_tokens.values())
    lengths = [0 if i in special else len(tok.decode_bytes([i])) for i in range(tok.n_vocab)]
    size = max(size or 0, tok.n_vocab)
    return torch.tensor(lengths + [0] * (size - tok.n_vocab), dtype=torch.int64)


def load_token_bytes(meta, size=None):
    """The byte-length table of the tokenizer a prepared dataset was made with (checked by hash)."""
    from tokenizer import TokenizerError, get_dataset_tokenizer

    try:
        tok = get_dataset_tokenizer(meta)
    except TokenizerError as e:
        raise EvalError(f"bits per byte needs the dataset's tokenizer: {e}") from None
    return token_byte_lengths(tok, size)


class LossSum:
    """Summed loss (nats), target tokens and target bytes of an evaluation; adds up over batches and ranks."""

    def __init__(self, nats=0.0, tokens=0, n_bytes=0):
        self.nats, self.tokens, self.bytes = float(nats), int(tokens), int(n_bytes)

    def as_list(self):
        return [self.nats, self.tokens, self.bytes]

    @property
    def loss(self):
        """Mean loss per target token, in nats."""
        return self.nats / self.tokens if self.tokens else float("nan")

    @property
    def bpb(self):
        return self.nats / math.log(2) / self.bytes if self.bytes else float("nan")


def batch_loss(model, x, y, ctx, token_bytes):
    """Summed per-token loss of one batch and the bytes of its targets, as float64 device tensors (no host sync)."""
    with ctx:
        _, losses = model(x, y, reduction="none")
    valid = y >= 0
    nats = losses.double().masked_fill(~valid, 0.0).sum()
    n_bytes = token_bytes.to(y.device)[y.clamp(min=0)].masked_fill(~valid, 0).sum().double()
    return nats, valid.sum().double(), n_bytes


@torch.no_grad()
def sampled_loss(model, batches, ctx, token_bytes):
    """LossSum over an iterable of (x, y) batches (the model is evaluated in eval mode, then left as it was)."""
    was_training = model.training
    model.eval()
    total = None
    for x, y in batches:
        part = torch.stack(batch_loss(model, x, y, ctx, token_bytes))
        total = part if total is None else total + part
    model.train(was_training)
    nats, tokens, n_bytes = total.tolist()  # one host copy for the whole evaluation
    return LossSum(nats, tokens, n_bytes)


def split_windows(n_tokens, block_size):
    """Start offsets of fixed, non-overlapping windows covering a split of n_tokens: window s holds inputs
    s .. s+T-1 and targets s+1 .. s+T, so every token but the first is a target exactly once. The last window may
    be shorter (the split rarely divides evenly)."""
    return list(range(0, n_tokens - 1, block_size))


@torch.no_grad()
def split_loss(model, data, block_size, batch_size, ctx, token_bytes, device, rank=0, world_size=1, progress=False):
    """LossSum of this rank's share of the whole split `data` (a 1-D token array, e.g. a memmap), evaluated in the
    windows of split_windows, batch_size full windows per forward; ranks take every world_size-th batch. Sum the
    LossSums of all ranks for the split's total. Deterministic: no randomness anywhere."""
    from tqdm import tqdm

    n = len(data)
    starts = split_windows(n, block_size)
    full = [s for s in starts if s + block_size + 1 <= n]
    batches = [full[i:i + batch_size] for i in range(0, len(full), batch_size)]
    batches += [[s] for s in starts[len(full):]]  # the short tail window, alone (its own length)
    mine = batches[rank::world_size]
    total = torch.zeros(3, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    for group in tqdm(mine, desc="final eval", unit="batch", leave=False,
                      disable=None if progress else True):  # None: only on a terminal
        rows = [np.asarray(data[s:min(s + block_size + 1, n)], dtype=np.int64) for s in group]
        xy = torch.from_numpy(np.stack(rows)).to(device)
        total += torch.stack(batch_loss(model, xy[:, :-1], xy[:, 1:], ctx, token_bytes))
    model.train(was_training)
    nats, tokens, n_bytes = total.tolist()
    return LossSum(nats, tokens, n_bytes)
