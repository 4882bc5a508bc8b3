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
    The speed is that of the steps in the second half of the warmup, leaving out each session's first step
    (torch.compile's compilation, the first allocations); the budget pays for every training second of every session
    (so compilation, and a resume's second compilation, come out of it, as bench.py's iters_for_budget does).
    Evaluations are not training time and do not count. state_dict() goes into train_state.pt, so a run stopped
    before its decision measures on where it stopped."""

    def __init__(self, budget_s, warmup_iters, full_iter_tokens):
        self.budget_s, self.full_iter_tokens = budget_s, full_iter_tokens
        self.mark_at, self.decide_at = warmup_iters / 2, warmup_iters
        self.spent_s = 0.0  # training seconds of the earlier sessions
        self.steady_tokens, self.steady_s = 0, 0.0  # the steps that measure the speed, over all sessions
        self.iters = None  # the decision (full iterations), once made
        self.tokens_per_s = None  # the speed it was made at
        self.last = None  # (tokens, seconds) at this session's previous observation
        self.session_steps, self.session_s, self.session_start_tokens = 0, 0.0, 0

    def state_dict(self):
        return {"budget_s": self.budget_s, "iters": self.iters, "tokens_per_s": self.tokens_per_s,
                "spent_s": self.spent_s + self.session_s, "steady_tokens": self.steady_tokens,
                "steady_s": self.steady_s}

    def load_state_dict(self, state):
        self.iters, self.tokens_per_s = state["iters"], state["tokens_per_s"]
        self.spent_s, self.steady_tokens, self.steady_s = state["spent_s"], state["steady_tokens"], state["steady_s"]

    def begin(self, tokens):
        """A session starts (its training clock at 0 seconds)."""
        self.last, self.session_steps, self.session_s = (tokens, 0.0), 0, 0.0
        self.session_start_tokens = tokens

    def observe(self, tokens, seconds):
        """After each step until the decision: the tokens seen after it, seconds on this session's training clock.
        Returns the decided number of full iterations once the warmup is done, else None."""
        step_tokens, step_start = self.last
        progress = tokens / self.full_iter_tokens  # full iterations' worth, as get_lr counts them
        if step_tokens >= self.mark_at * self.full_iter_tokens and self.session_steps > 0:  # a first step is start-up
            self.steady_tokens += tokens - step_tokens
            self.steady_s += seconds - step_start
        self.last, self.session_steps, self.session_s = (tokens, seconds), self.session_steps + 1, seconds
        if progress < self.decide_at:
            return None
        if self.steady_s > 0:
            self.tokens_per_s = self.steady_tokens / self.steady_s
        else:  # no step to measure (a warmup this short, or resumed on its last step): this session's average
            self.tokens_per_s = (tokens - self.session_start_tokens) / max(seconds, 1e-9)
        left_s = self.budget_s - self.spent_s - seconds
        self.iters = max(math.ceil(progress), int((tokens + left_s * self.tokens_per_s) / self.full_iter_tokens + 1e-9))
        return self.iters
