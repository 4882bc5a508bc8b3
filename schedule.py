"""The training schedule, as functions of the tokens seen so far: the learning rate, and (optionally) a linear
batch-size ramp.

Both count real tokens, so a ramp (smaller optimizer steps early on) does not stretch or squeeze the learning-rate
schedule: `progress` is tokens seen / tokens of one full-batch iteration, which without a ramp is exactly the
iteration number, as in nanoGPT.
"""

import math


def get_lr(progress, cfg):
    """Linear warmup, then cosine decay from learning_rate to min_lr at lr_decay_iters, then min_lr.
    progress: full-batch iterations' worth of tokens seen (the iteration number when the batch never changes)."""
    if not cfg["decay_lr"]:
        return cfg["learning_rate"]
    if progress < cfg["warmup_iters"]:
        return cfg["learning_rate"] * (progress + 1) / (cfg["warmup_iters"] + 1)
    if progress >= cfg["lr_decay_iters"]:
        return cfg["min_lr"]
    ratio = (progress - cfg["warmup_iters"]) / max(1, cfg["lr_decay_iters"] - cfg["warmup_iters"])
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return cfg["min_lr"] + coeff * (cfg["learning_rate"] - cfg["min_lr"])


def micro_batches(tokens_seen, cfg, world_size=1):
    """Global micro-batches for the next optimizer step.

    Without a ramp: gradient_accumulation_steps. With batch_ramp_tokens > 0, tokens per step grow linearly from
    batch_ramp_start of the full batch to all of it over the first batch_ramp_tokens tokens, through the number of
    accumulated micro-batches (rounded up to a multiple of world_size, so every rank does the same number): tensor
    shapes never change, so torch.compile's graph and the memory use stay as they are."""
    full = cfg["gradient_accumulation_steps"]
    if cfg["batch_ramp_tokens"] <= 0 or tokens_seen >= cfg["batch_ramp_tokens"]:
        return full
    start = cfg["batch_ramp_start"]
    fraction = start + (1.0 - start) * tokens_seen / cfg["batch_ramp_tokens"]
    n = math.ceil(fraction * full / world_size - 1e-9) * world_size  # (1e-9: 0.5 * 4 must stay 2, not become 3)
    return min(full, max(world_size, n))
