"""Prepared token files: <out_dir>/train.bin, val.bin (each document's tokens, then eot) and meta.json.

The one writer (TokenWriter, used by data/corpus.py) and the one reader check (read_meta, used by prepare's
up-to-date test and by dataloader.py), on the format constants of common.py. Torch-free.

Writing protocol: tokens go to <split>.bin.tmp; when every split is complete, meta.json is deleted, the .tmp files
are renamed over the .bin files, and meta.json is written last. A run killed before the renames leaves the previous
output intact; one killed after them leaves no meta.json, so no reader takes a half-written train.bin for data.
A failure (or Ctrl-C) removes the .tmp files.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from common import TOKEN_DTYPES, TOKEN_FORMAT, atomic_write, fsync_dir

SPLITS = ("train", "val")


class MetaError(ValueError):
    """A prepared dataset is missing, incomplete or inconsistent; str() is one line that says what to do."""


def token_dtype(vocab_size: int):
    return TOKEN_DTYPES["uint16"] if vocab_size <= 65536 else TOKEN_DTYPES["uint32"]


def bin_path(out_dir: Path, split: str) -> Path:
    return Path(out_dir) / f"{split}.bin"


def read_meta(out_dir: Path, hint: str | None = None, splits=SPLITS) -> dict:
    """meta.json of a prepared dataset, checked against its .bin files; MetaError otherwise."""
    out_dir = Path(out_dir)
    hint = hint or f"run python data/{out_dir.name}/prepare.py"
    path = out_dir / "meta.json"
    if not path.is_file():
        raise MetaError(f"{path} not found: dataset '{out_dir.name}' is not prepared; {hint}")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise MetaError(f"{path} is unreadable ({e}); {hint}") from None
    if meta.get("format") != TOKEN_FORMAT:
        raise MetaError(f"{path}: format {meta.get('format')!r} is not {TOKEN_FORMAT!r}; {hint}")
    for key in ("tokenizer", "tokenizer_hash", "vocab_size", "eot_token", "dtype", "splits"):
        if key not in meta:
            raise MetaError(f"{path} lacks '{key}'; {hint}")
    if meta["dtype"] not in TOKEN_DTYPES:
        raise MetaError(f"{path}: dtype {meta['dtype']!r} is not one of {', '.join(TOKEN_DTYPES)}")
    itemsize = np.dtype(TOKEN_DTYPES[meta["dtype"]]).itemsize
    for split in splits:
        info = meta["splits"].get(split)
        if not info:
            raise MetaError(f"{path} has no '{split}' split; {hint}")
        file = out_dir / info["file"]
        expected = int(info["tokens"]) * itemsize
        actual = file.stat().st_size if file.is_file() else None
        if actual != expected:
            found = "missing" if actual is None else f"{actual} bytes, expected {expected}"
            raise MetaError(f"{file} is incomplete or missing ({found}): {hint}")
        if expected == 0:
            raise MetaError(f"{file} is empty: {hint}")
    return meta


def write_meta(out_dir: Path, meta: dict):
    atomic_write(Path(out_dir) / "meta.json", lambda f: f.write((json.dumps(meta, indent=2) + "\n").encode()))


class TokenWriter:
    """Appends documents' tokens to <split>.bin.tmp; commit() puts them in place, leaving the old meta.json gone."""

    def __init__(self, out_dir: Path, vocab_size: int):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.dtype = token_dtype(vocab_size)
        self.tmp = {s: bin_path(out_dir, s).with_suffix(".bin.tmp") for s in SPLITS}
        self.files = {s: open(self.tmp[s], "wb") for s in SPLITS}
        self.counts = {s: {"tokens": 0, "bytes": 0, "documents": 0} for s in SPLITS}

    def write(self, split: str, tokens: np.ndarray, n_bytes: int):
        """One document's tokens (eot included) and the UTF-8 bytes of its text."""
        self.files[split].write(np.asarray(tokens, dtype=self.dtype).tobytes())
        c = self.counts[split]
        c["tokens"] += len(tokens)
        c["bytes"] += n_bytes
        c["documents"] += 1

    def commit(self):
        for s in SPLITS:
            self.files[s].flush()
            os.fsync(self.files[s].fileno())
            self.files[s].close()
        (self.out_dir / "meta.json").unlink(missing_ok=True)
        fsync_dir(self.out_dir)
        for s in SPLITS:
            os.replace(self.tmp[s], bin_path(self.out_dir, s))
        fsync_dir(self.out_dir)

    def abort(self):
        for s in SPLITS:
            self.files[s].close()
            self.tmp[s].unlink(missing_ok=True)
