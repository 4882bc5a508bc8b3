"""evaluate.py: exact bits per byte, by hand on a split whose documents have very different bytes per token."""

import math
from contextlib import nullcontext

import numpy as np
import pytest
import torch

import evaluate

EOT, A, B = 0, 1, 2
BYTES = torch.tensor([0, 1, 10])  # end-of-text 0 bytes, token A 1 byte, token B 10 bytes
LOSS = {EOT: 5.0, A: 1.0, B: 3.0}  # nats the stand-in model pays for each target


class TargetLoss(torch.nn.Module):
    """Stand-in model whose loss for each target token is LOSS[target]; remembers every target it was shown."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, y, reduction="mean"):
        assert x.shape == y.shape
        self.seen.append(y.clone())
        losses = torch.tensor([LOSS[int(t)] for t in y.flatten()]).view(y.shape)
        return None, losses if reduction == "none" else losses.mean()


# one document of 8 A's, one of 8 B's: 1 and 10 bytes per token, 88 / 19 on average over the split's targets
SPLIT = np.array([EOT] + [A] * 8 + [EOT] + [B] * 8 + [EOT], dtype=np.uint16)


def test_sampled_batches_use_the_bytes_of_their_own_targets():
    x = torch.tensor([[EOT, A, A, A]])
    y = torch.tensor([[A, A, A, A]])  # a batch from the first document only
    result = evaluate.sampled_loss(TargetLoss(), [(x, y)], nullcontext(), BYTES)
    assert (result.nats, result.tokens, result.bytes) == (4.0, 4, 4)
    assert result.bpb == pytest.approx(1 / math.log(2))  # 1 nat per 1-byte token: 1.4427 bits per byte
    # the split's average (88 bytes / 19 tokens) would have said 0.311: 4.6x too low
    assert result.bpb != pytest.approx(result.loss / math.log(2) / (88 / 19), rel=0.5)


def test_two_batches_sum_losses_and_bytes_not_their_ratios():
    batches = [(torch.tensor([[EOT, A]]), torch.tensor([[A, A]])),  # 2 nats, 2 bytes
               (torch.tensor([[B, B]]), torch.tensor([[B, EOT]]))]  # 3 + 5 nats, 10 + 0 bytes
    result = evaluate.sampled_loss(TargetLoss(), batches, nullcontext(), BYTES)
    assert result.bpb == pytest.approx(10 / math.log(2) / 12)  # (2 + 8) nats over (2 + 10) bytes
    assert result.loss == pytest.approx(10 / 4)


@pytest.mark.parametrize("block_size,batch_size", [(4, 2), (5, 1), (18, 3), (100, 4)])
def test_whole_split_is_every_target_once(block_size, batch_size):
    model = TargetLoss()
    result = evaluate.split_loss(model, SPLIT, block_size, batch_size, nullcontext(), BYTES, "cpu")
    # targets: 8 A (8 nats, 8 bytes), 8 B (24 nats, 80 bytes), 2 end-of-text (10 nats, 0 bytes)
    assert (result.nats, result.tokens, result.bytes) == (42.0, 18, 88)
    assert result.bpb == pytest.approx(42 / math.log(2) / 88)
    assert sorted(int(t) for y in model.seen for t in y.flatten()) == sorted(SPLIT[1:].tolist())


def test_whole_split_shared_among_ranks_adds_up():
    parts = [evaluate.split_loss(TargetLoss(), SPLIT, 3, 2, nullcontext(), BYTES, "cpu", rank=r, world_size=2)
             for r in (0, 1)]
    assert [sum(p.as_list()[i] for p in parts) for i in range(3)] == [42.0, 18, 88]
    assert all(p.tokens > 0 for p in parts)


def test_split_windows_do_not_overlap():
    assert evaluate.split_windows(10, 4) == [0, 4, 8]  # targets 1-4, 5-8, 9
    assert evaluate.split_windows(9, 4) == [0, 4]  # targets 1-4, 5-8


def test_byte_table_of_the_real_tokenizer():
    try:
        from tokenizer import get_tokenizer
        tok = get_tokenizer()
    except Exception as e:
        pytest.skip(f"default tokenizer unavailable: {e}")
    table = evaluate.token_byte_lengths(tok, 16448)
    assert table.shape == (16448,) and table[tok.eot_token] == 0 and int(table[tok.n_vocab:].sum()) == 0
    text = "// SPDX-License-Identifier: MIT\npragma solidity ^0.8.20; // café ✓\n"
    ids = tok.encode(text)
    assert int(table[ids].sum()) == len(text.encode("utf-8"))  # a text's tokens hold exactly its bytes
    assert len(ids) < len(text)  # (and several of them more than one byte each)
