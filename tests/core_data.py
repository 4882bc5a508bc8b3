"""Tiny prepared datasets for the core tests, written exactly in the format of data/tokens.py."""

import json
from pathlib import Path

import numpy as np

FAKE_HASH = "0" * 64


def solgpt_hash():
    from tokenizer import get_tokenizer
    return get_tokenizer().hash


def make_dataset(root, name="tiny", vocab_size=96, n_train=20_000, n_val=4_000, seed=0, tokenizer="solgpt",
                 tokenizer_hash=None, dtype="uint16", eot_token=None):
    """Random-but-learnable token streams (a noisy repeating pattern, so loss falls) plus meta.json.
    By default labelled with the real solgpt tokenizer (ids 0..95 are one byte each), since exact bits per byte
    reads the tokenizer's per-token byte lengths."""
    tokenizer_hash = solgpt_hash() if tokenizer_hash is None and tokenizer == "solgpt" else (tokenizer_hash or FAKE_HASH)
    d = Path(root) / name
    d.mkdir(parents=True, exist_ok=True)
    eot = vocab_size - 1 if eot_token is None else eot_token
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in (("train", n_train), ("val", n_val)):
        pattern = np.arange(n) % 17 + rng.integers(0, 3, n)
        tokens = np.where(rng.random(n) < 0.02, eot, pattern % (vocab_size - 1)).astype(dtype)
        tokens.tofile(d / f"{split}.bin")
        splits[split] = {"file": f"{split}.bin", "tokens": int(n), "bytes": int(n * 4), "documents": int((tokens == eot).sum())}
    meta = {"format": "solgpt-tokens-v1", "dataset": name, "tokenizer": tokenizer, "tokenizer_hash": tokenizer_hash,
            "vocab_size": vocab_size, "eot_token": int(eot), "dtype": dtype, "splits": splits,
            "sources": [], "licenses": {}, "dedup": {}, "options": {}, "created": "2026-01-01T00:00:00"}
    (d / "meta.json").write_text(json.dumps(meta))
    return d
