"""solGPT tokenizers: one interface for prepare, train (bits per byte), sample and fine-tuning.

    from tokenizer import get_tokenizer, TokenizerError
    tok = get_tokenizer()            # "solgpt": our byte-level BPE trained on Solidity (tokenizer/solgpt.tiktoken)
    ids = tok.encode("pragma solidity ^0.8.20;"); tok.decode(ids)

A local tokenizer is two files in this folder: `<name>.tiktoken` (tiktoken's ranks format: base64 token, space,
rank, one per line) and `<name>.json` (split pattern, special tokens, sha256 of the ranks file, how it was made).
Both are written by tokenizer/train_tokenizer.py, which reproduces solgpt.tiktoken bit for bit.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import json
from pathlib import Path

import tiktoken

TOKENIZER_DIR = Path(__file__).resolve().parent
DEFAULT_NAME = "solgpt"
TIKTOKEN_NAMES = ("gpt2", "cl100k_base")

# Order is the id order: specials sit right after the regular tokens, so their ids never move while the
# regular vocabulary keeps its size.
SPECIAL_TOKENS = ("<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|pad|>", "<|cls|>")


class TokenizerError(Exception):
    """A tokenizer cannot be loaded; the message is one line that says what to do."""


class Tokenizer:
    """A tiktoken Encoding with the project's conventions: special-token strings in text are plain text."""

    def __init__(self, name: str, encoding: tiktoken.Encoding, special_tokens: dict[str, int], ranks_sha256: str):
        self.name = name
        self._enc = encoding
        self.special_tokens = dict(special_tokens)
        self.ranks_sha256 = ranks_sha256
        self.pattern = encoding._pat_str
        self.n_vocab = encoding.n_vocab
        self.eot_token = self.special_tokens["<|endoftext|>"]
        self.hash = tokenizer_hash(ranks_sha256, self.pattern, self.special_tokens)

    def encode(self, text: str) -> list[int]:
        # encode_ordinary never treats "<|endoftext|>" in a file as a control token, so user text cannot inject one.
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: list[str], num_threads: int = 8) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(list(texts), num_threads=num_threads)

    def decode(self, ids) -> str:
        return self._enc.decode(list(ids), errors="replace")

    def decode_bytes(self, ids) -> bytes:
        return self._enc.decode_bytes(list(ids))

    def __repr__(self) -> str:
        return f"Tokenizer(name={self.name!r}, n_vocab={self.n_vocab}, hash={self.hash[:12]})"


def tokenizer_hash(ranks_sha256: str, pattern: str, special_tokens: dict[str, int]) -> str:
    """sha256 of what decides the token ids: the ranks, the split pattern and the special tokens."""
    payload = json.dumps({"ranks_sha256": ranks_sha256, "pattern": pattern, "special_tokens": special_tokens},
                         sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def dump_ranks(ranks: dict[bytes, int]) -> bytes:
    """tiktoken's ranks file format, ordered by rank, so the same ranks always give the same bytes."""
    return b"".join(base64.b64encode(tok) + b" %d\n" % rank for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]))


def parse_ranks(data: bytes) -> dict[bytes, int]:
    ranks = {}
    for line in data.splitlines():
        if line:
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    return ranks


def make_encoding(name: str, ranks: dict[bytes, int], pattern: str) -> tuple[tiktoken.Encoding, dict[str, int]]:
    n = len(ranks)
    if sorted(ranks.values()) != list(range(n)):
        raise TokenizerError(f"tokenizer {name!r}: ranks are not 0..{n - 1}; retrain it with tokenizer/train_tokenizer.py")
    specials = {tok: n + i for i, tok in enumerate(SPECIAL_TOKENS)}
    return tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=specials), specials


def from_ranks(name: str, ranks: dict[bytes, int], pattern: str) -> Tokenizer:
    """A Tokenizer from in-memory ranks (used to measure tokenizers before writing them)."""
    enc, specials = make_encoding(name, ranks, pattern)
    return Tokenizer(name, enc, specials, hashlib.sha256(dump_ranks(ranks)).hexdigest())


def local_names() -> list[str]:
    return sorted(p.stem for p in TOKENIZER_DIR.glob("*.tiktoken") if p.with_suffix(".json").exists())


def _load_local(name: str) -> Tokenizer:
    ranks_path, meta_path = TOKENIZER_DIR / f"{name}.tiktoken", TOKENIZER_DIR / f"{name}.json"
    data = ranks_path.read_bytes()
    meta = json.loads(meta_path.read_text())
    sha = hashlib.sha256(data).hexdigest()
    if meta.get("ranks_sha256") not in (None, sha):
        raise TokenizerError(f"{ranks_path} does not match {meta_path.name} (sha256 {sha[:12]}, expected "
                             f"{meta['ranks_sha256'][:12]}): restore it from git or retrain with tokenizer/train_tokenizer.py")
    return from_ranks(name, parse_ranks(data), meta["pattern"])


def _load_tiktoken(name: str) -> Tokenizer:
    try:
        enc = tiktoken.get_encoding(name)
    except Exception as e:  # requests/OSError/ValueError: whatever stopped the download, one line says what to do
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise TokenizerError(
            f"tokenizer {name!r} needs tiktoken's downloaded files, which could not be fetched: {reason}; "
            f"use the default {DEFAULT_NAME!r} tokenizer, or run tiktoken.get_encoding({name!r}) once with network "
            f"access (files are cached in $TIKTOKEN_CACHE_DIR)") from None
    ranks_sha = hashlib.sha256(dump_ranks(enc._mergeable_ranks)).hexdigest()
    return Tokenizer(name, enc, dict(enc._special_tokens), ranks_sha)


def get_tokenizer(name: str | None = None) -> Tokenizer:
    """Load a tokenizer by name: None/"solgpt" (default), "gpt2", "cl100k_base", or another local <name>.tiktoken.

    Loaded tokenizers are cached: every call with the same name returns the same object."""
    return _cached(name or DEFAULT_NAME)


def get_dataset_tokenizer(meta: dict) -> Tokenizer:
    """The tokenizer a prepared dataset was made with (its meta.json's name), checked against the recorded hash."""
    tok = get_tokenizer(meta["tokenizer"])
    if tok.hash != meta["tokenizer_hash"]:
        raise TokenizerError(f"the dataset was made with a different {tok.name} tokenizer (hash "
                             f"{meta['tokenizer_hash'][:12]}, installed {tok.hash[:12]}); re-prepare the data or "
                             f"restore the tokenizer files")
    return tok


@functools.lru_cache(maxsize=None)
def _cached(name: str) -> Tokenizer:
    return load_tokenizer(name)


def load_tokenizer(name: str) -> Tokenizer:
    """get_tokenizer without the cache."""
    if name in TIKTOKEN_NAMES:
        return _load_tiktoken(name)
    if name in local_names():
        return _load_local(name)
    if name == DEFAULT_NAME:
        raise TokenizerError(f"tokenizer files {TOKENIZER_DIR}/{name}.tiktoken/.json are missing: restore them from git "
                             f"or run python tokenizer/train_tokenizer.py")
    valid = sorted(set(local_names()) | {DEFAULT_NAME} | set(TIKTOKEN_NAMES))
    raise TokenizerError(f"unknown tokenizer {name!r}; valid names: {', '.join(valid)}")


__all__ = ["get_tokenizer", "get_dataset_tokenizer", "TokenizerError", "Tokenizer", "SPECIAL_TOKENS", "DEFAULT_NAME", "tokenizer_hash",
           "from_ranks"]
