"""
Batches of token windows from prepared datasets (data/<name>/train.bin, val.bin, meta.json; see data/tokens.py).

Like nanoGPT, a batch is batch_size windows of block_size + 1 tokens at random offsets of a memmapped token file.
Unlike nanoGPT, the offsets come from a torch.Generator seeded by (seed, split, global micro-batch number), so:
  - the sampler's whole state is one counter, the global number of training micro-batches drawn (all ranks):
    resuming restores it and draws exactly the batches an uninterrupted run would have drawn, also with a different
    number of processes as long as the counter divides evenly among them;
  - under DDP, rank r draws global micro-batches r, r + world_size, r + 2 * world_size, ...: a single process with
    the same micro-batch size and gradient_accumulation_steps (global, as in train.py) sees the very same windows;
  - evaluation draws the same batches at every evaluation, so its loss moves only when the model does; its
    train-split batches use their own stream, not the training batches' (those the model was just trained on).
--dataset may mix several prepared datasets: 'a:0.7,b:0.3' picks each window's dataset with those weights.
fim={"rate", "spm_rate", "syntax_rate"} with rate > 0 applies fill-in-the-middle (fim.py) to the documents of
training windows, with randomness from (seed, batch index) like the offsets; evaluation windows stay left-to-right.
"""

import hashlib
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TOKEN_DTYPES as DTYPES  # noqa: E402  (shared with data/tokens.py)
from data.tokens import MetaError, read_meta  # noqa: E402

# Eval-on-train batches get their own salt: drawn with the training salt, evaluation batch k would be training
# batch k, so "train loss" at eval would be measured on windows the model has just been trained on.
_SPLIT_SALT = {"train": 0, "val": 1, "train_eval": 2}


def seeded_generator(seed, stream, index):
    """One random stream per (seed, stream, global batch index): any batch can be redrawn without replaying the
    others. Hashed: torch's CPU generator keeps only the low 32 bits of a seed, so (seed, stream) placed in high bits
    would be ignored and every seed and split would draw the same numbers."""
    key = f"{seed}:{_SPLIT_SALT[stream]}:{index}".encode()
    g = torch.Generator()
    g.manual_seed(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") % 2**63)
    return g


class DataError(Exception):
    """A dataset is missing, incomplete or inconsistent; str() is a one-line message for the user."""


def parse_mixture(spec):
    """'a:0.7,b:0.3' -> [('a', 0.7), ('b', 0.3)] (weights normalised); 'a' -> [('a', 1.0)]."""
    parts = []
    for item in spec.split(","):
        name, colon, weight = item.strip().partition(":")
        try:
            w = float(weight) if colon else 1.0  # 'a:' is a typo, not weight 1
        except ValueError:
            raise DataError(f"dataset weight {weight!r} in --dataset={spec} is not a number") from None
        if not name or not (w > 0 and math.isfinite(w)):
            raise DataError(f"--dataset={spec}: each entry must be name or name:weight with weight > 0")
        parts.append((name, w))
    total = sum(w for _, w in parts)
    return [(name, w / total) for name, w in parts]


class PreparedDataset:
    """One data/<name>/ directory: validated meta.json plus memmaps of its splits."""

    def __init__(self, name, data_root="data"):
        self.name = name
        self.dir = Path(data_root) / name
        self.meta = self._load_meta()
        self.dtype = DTYPES[self.meta["dtype"]]
        self.splits = {split: self._open(split) for split in ("train", "val")}

    def _load_meta(self):
        try:  # the one check of meta.json against the .bin files, shared with data preparation
            return read_meta(self.dir, hint=f"run python data/{self.name}/prepare.py")
        except MetaError as e:
            raise DataError(str(e)) from None

    def _open(self, split):
        return np.memmap(self.dir / self.meta["splits"][split]["file"], dtype=self.dtype, mode="r")

    def bytes_per_token(self, split="val"):
        info = self.meta["splits"][split]
        return info["bytes"] / info["tokens"]


class BatchSampler:
    """Draws (x, y) batches; x, y are (batch_size, block_size) int64 tensors on device, y shifted by one."""

    def __init__(self, dataset_spec, block_size, batch_size, device="cpu", seed=1337, rank=0, world_size=1,
                 data_root="data", fim=None):
        self.mixture = parse_mixture(dataset_spec)
        self.datasets = [PreparedDataset(name, data_root) for name, _ in self.mixture]
        self.weights = torch.tensor([w for _, w in self.mixture], dtype=torch.float64)
        self._check_compatible(dataset_spec)
        self.block_size, self.batch_size = block_size, batch_size
        self.device = torch.device(device)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.step = 0  # global training micro-batches drawn so far (all ranks): the sampler's entire state
        self._check_lengths()
        self.fim = self._fim_transform(fim) if fim and fim.get("rate", 0) > 0 else None
        self.fim_spec = dict(rate=self.fim.rate, spm_rate=self.fim.spm_rate, syntax_rate=self.fim.syntax_rate) \
            if self.fim else None

    def _fim_transform(self, fim):
        from fim import FimError, FimTransform  # only FIM runs need the tokenizer (and tree-sitter)

        try:
            return FimTransform.for_dataset(self.meta, fim["rate"], fim.get("spm_rate", 0.5),
                                            fim.get("syntax_rate", 0.5))
        except FimError as e:
            raise DataError(str(e)) from None

    @property
    def meta(self):
        return self.datasets[0].meta

    def _check_compatible(self, spec):
        first = self.datasets[0]
        for ds in self.datasets[1:]:
            if ds.meta["tokenizer_hash"] != first.meta["tokenizer_hash"]:
                raise DataError(f"--dataset={spec}: '{ds.name}' was tokenized with {ds.meta['tokenizer']} "
                                f"({ds.meta['tokenizer_hash'][:12]}) but '{first.name}' with {first.meta['tokenizer']} "
                                f"({first.meta['tokenizer_hash'][:12]}); re-prepare them with the same tokenizer")

    def _check_lengths(self):
        for ds in self.datasets:
            for split, data in ds.splits.items():
                if len(data) < self.block_size + 1:
                    raise DataError(f"{ds.dir / ds.meta['splits'][split]['file']} holds {len(data)} tokens, "
                                    f"fewer than block_size + 1 = {self.block_size + 1}; lower --block_size")

    def _generator(self, stream, index):
        return seeded_generator(self.seed, stream, index)

    def _draw(self, split, index, stream=None):
        g = self._generator(stream or split, index)
        B, T = self.batch_size, self.block_size
        which = torch.multinomial(self.weights, B, replacement=True, generator=g) if len(self.datasets) > 1 \
            else torch.zeros(B, dtype=torch.long)
        u = torch.rand(B, generator=g, dtype=torch.float64)
        fim = self.fim if split == "train" and stream is None else None  # training batches only
        fim_rng = fim.rng(self.seed, index) if fim else None  # its own stream: the offsets stay those without FIM
        rows = []
        for i in range(B):
            data = self.datasets[int(which[i])].splits[split]
            start = int(u[i] * (len(data) - T))  # 0 .. len-T-1: the window may end at the split's last token
            rows.append(fim.window(data, start, T + 1, fim_rng) if fim else data[start:start + T + 1])
        xy = torch.from_numpy(np.stack(rows).astype(np.int64))
        if self.device.type == "cuda":  # one pinned copy of the window; non_blocking overlaps the GPU's compute
            xy = xy.pin_memory().to(self.device, non_blocking=True)
        else:
            xy = xy.to(self.device)
        return xy[:, :-1], xy[:, 1:]  # views of the one window tensor: y is x shifted by one

    def get_batch(self, split="train", index=None):
        """Next training batch of this rank; with index, batch `index` of the fixed evaluation sequence."""
        if split == "train" and index is None:
            index = self.step + self.rank
            self.step += self.world_size  # every rank draws one, in lockstep
            return self._draw("train", index)
        stream = "train_eval" if split == "train" else split
        return self._draw(split, index * self.world_size + self.rank, stream)

    def spec(self):
        return ",".join(f"{n}:{w}" for n, w in self.mixture)

    def state_dict(self):
        state = {"step": self.step, "seed": self.seed, "world_size": self.world_size, "dataset": self.spec()}
        return {**state, "fim": self.fim_spec} if self.fim_spec else state  # without FIM: the state as before

    def load_state_dict(self, state):
        """Restore the counter; a different seed or dataset would silently draw other batches: refused."""
        if state.get("seed") != self.seed:
            raise DataError(f"the checkpoint was trained with --seed={state.get('seed')}, this run has "
                            f"--seed={self.seed}; resume with the same seed")
        if state.get("dataset") != self.spec():
            raise DataError(f"the checkpoint was trained on --dataset={state.get('dataset')}, this run uses "
                            f"{self.spec()}; resume with the same dataset")
        if state.get("fim") != self.fim_spec:
            raise DataError(f"the checkpoint was trained with FIM {state.get('fim') or 'off'}, this run has "
                            f"{self.fim_spec or 'off'}; resume with the same fim_rate, fim_spm_rate, fim_syntax_rate")
        step = int(state["step"])
        if step % self.world_size:
            raise DataError(f"the checkpoint drew {step} micro-batches, which {self.world_size} processes cannot "
                            f"split evenly; resume with a number of processes that divides {step}")
        self.step = step



class Prefetcher:
    """Iterator of training batches that draws the next one as soon as the current one is handed out: on CUDA the
    memmap reads and the queued (non_blocking) copy of batch k+1 overlap the GPU's work on batch k.
    state_dict() counts only the batches handed out, so a resume redraws the prefetched one."""

    def __init__(self, sampler):
        self.sampler, self.pending = sampler, None

    def __iter__(self):
        return self

    def __next__(self):
        batch = self.pending if self.pending is not None else self.sampler.get_batch("train")
        self.pending = self.sampler.get_batch("train")
        return batch

    def consumed(self):
        """Global training micro-batches handed out so far (all ranks)."""
        return self.sampler.step - (self.sampler.world_size if self.pending is not None else 0)

    def state_dict(self):
        return {**self.sampler.state_dict(), "step": self.consumed()}
