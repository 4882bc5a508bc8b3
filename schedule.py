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


def iters_for_budget(budget_s, tokens_per_s, full_iter_tokens, compile_s=0.0):
    """Full iterations that fit the wall-clock budget at the measured token throughput (at least 10, so the schedule
    has a shape). Tokens, not ms/iter: a batch-size ramp's early steps are smaller, so its ms per step says nothing
    about a full iteration (and with a ramp max_iters counts full iterations' worth of tokens).
    compile_s: torch.compile's compile time (bench_train's startup_s), which a compiling run pays out of the budget."""
    return max(10, int((budget_s - compile_s) * tokens_per_s / full_iter_tokens + 1e-9))


class TimeBudget:
    """budget_s: train for a wall-clock budget on whatever machine this is, instead of a fixed max_iters.

    The run length is decided once, at the end of the warmup: the learning rates up to there do not depend on it
    (get_lr's warmup is linear in progress alone), so every step is what a fixed max_iters of the decided value
    would have done, and the run stays deterministic from there on (the decision is saved, and a resume keeps it).
    Speed is measured over the second half of the warmup, after torch.compile's compilation and the first steps'
    allocations; what the steps before took beyond that speed (compilation, mostly) is paid out of the budget, as
    bench.py's iters_for_budget does. Evaluations are not training time and do not count."""

    def __init__(self, budget_s, warmup_iters):
        self.budget_s = budget_s
        self.mark_at, self.decide_at = warmup_iters // 2, warmup_iters
        self.start = self.mark = None  # (seconds, tokens) at this session's first step, at mark_at
        self.iters = None  # the decision (full iterations), once made
        self.tokens_per_s = None  # the speed it was made at

    def due(self, progress):
        """Whether observe() wants the clock at this progress (the caller then syncs an asynchronous device)."""
        return self.iters is None and (self.start is None or self.mark is None and progress >= self.mark_at
                                       or progress >= self.decide_at)

    def observe(self, progress, tokens, seconds, full_iter_tokens):
        """Feed the training clock (seconds of training steps this session) before a step; returns the decided
        number of full iterations at the end of the warmup, else None. A session resumed before the decision
        counts its earlier tokens as if they had run at the measured speed (their start-up cost is unknown)."""
        first = self.start is None
        if first:
            self.start = (seconds, tokens)
        if progress < self.decide_at:
            if self.mark is None and progress >= self.mark_at and not first:  # the first step is start-up, not speed
                self.mark = (seconds, tokens)
            return None
        mark = self.mark or self.start
        self.tokens_per_s = tokens_per_s = (tokens - mark[1]) / max(seconds - mark[0], 1e-9)
        # tokens that fit: those seen, plus what the rest of the budget buys; this session's start-up beyond the
        # measured speed comes out of it, and earlier sessions are charged at that speed
        total = tokens + (self.budget_s - seconds) * tokens_per_s - self.start[1]
        self.iters = max(math.ceil(progress), int(total / full_iter_tokens + 1e-9))
        return self.iters
