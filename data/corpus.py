"""Shared prepare logic for every dataset in data/: cleaning, licences, dedup, held-out filter, split, writing.

A prepare.py turns its source into an iterator of `Document`s and calls `prepare()`, which

  1. cleans each document (data/cleaning.py; `--strip_comments` removes comments) and drops what is not UTF-8,
     not permissively licensed (data/licences.py, where the dataset asks for it) or generated (a line longer than
     --max_line_chars);
  2. drops exact and near duplicates (data/dedup.py) in input order: the first copy wins, so a near-duplicate
     cluster always ends on one side of the split;
  3. sends each survivor to train or val by its group (package, repository, contract address), and drops a
     training document that the held-out registry (data/heldout.py) says copies or contains an evaluation file;
  4. tokenises in a worker pool and appends tokens + eot to the split files (data/tokens.py) as it goes;
  5. refuses an empty split, measures what is left of train/val overlap with a higher-recall LSH pass, puts the
     .bin files in place and writes meta.json last.

Memory stays bounded for corpora that do not fit in RAM: documents stream through in batches, and per kept document
only its signature (num_perm * 4 bytes), its LSH band keys and a 16-byte digest stay in memory: measured ~2 KB per
kept file at the default 128 permutations (~2 GB per million kept files; --num_perm 64 shrinks it).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import TOKEN_FORMAT, ArgumentParser  # noqa: E402
from data.cleaning import clean  # noqa: E402
from data.dedup import SHINGLE, NearDupIndex, cross_near_dups, digest, shingle_hashes, signature  # noqa: E402
from data.licences import licence_of, licence_permissive  # noqa: E402
from data.tokens import SPLITS, MetaError, TokenWriter, read_meta, token_dtype, write_meta  # noqa: E402

DATA_DIR = Path(__file__).resolve().parent
DROPPED_LABEL = 2   # index label of a document dropped after dedup (held out of train, or not val's own)


class PrepareError(SystemExit):
    """A user-facing failure: one line on stderr, exit code 1."""

    def __init__(self, message: str):
        super().__init__(f"error: {message}")


@dataclass
class Document:
    text: str | None      # None: the file is not UTF-8 (counted as dropped, not_utf8)
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
    by_source: dict = field(default_factory=dict)          # source -> {"kept"/"dropped": Counter(licence -> files)}

    def count_licence(self, source: str, lic: str, kept: bool):
        (self.licences_kept if kept else self.licences_dropped)[lic] += 1
        counts = self.by_source.setdefault(source, {"kept": Counter(), "dropped": Counter()})
        counts["kept" if kept else "dropped"][lic] += 1


# --------------------------------------------------------------------------------------------------- workers
_worker: dict = {}


def _init_worker(tok, registry):
    _worker.update(tok=tok, registry=registry)


def examine(docs: list[Document], opts: Options, registry=None) -> list[tuple]:
    """(reason or None, licence, cleaned text, digest, signature, held-out verdict) for each raw document."""
    out = []
    for d in docs:
        if d.text is None:
            out.append(("not_utf8", None, "", b"", None, None))
            continue
        lic = licence_of(d.text, d.licence)
        if opts.licences == "permissive" and not licence_permissive(d.text, d.licence):
            out.append(("licence", lic, "", b"", None, None))
            continue
        text = clean(d.text, opts.strip_comments)
        if not text.strip():
            out.append(("empty", lic, "", b"", None, None))
        elif max(map(len, text.split("\n"))) > opts.max_line_chars:
            out.append(("generated", lic, "", b"", None, None))
        else:
            held = registry.match(text) if registry is not None else None
            out.append((None, lic, text, digest(text), signature(shingle_hashes(text), opts.num_perm), held))
    return out


def _examine_task(args):
    docs, opts = args
    return examine(docs, opts, _worker.get("registry"))


def _tokenise(batch: list[tuple[str, str]]) -> tuple[np.ndarray, list[int]]:
    """Worker: the tokens of a batch of (split, text), each text followed by eot, and each one's count (with eot)."""
    tok = _worker["tok"]
    dtype = token_dtype(tok.n_vocab)
    eot = np.array([tok.eot_token], dtype=dtype)
    parts = []
    for _, t in batch:
        parts.append(np.asarray(tok.encode(t), dtype=dtype))
        parts.append(eot)
    return np.concatenate(parts), [len(p) + 1 for p in parts[::2]]


def make_pool(workers: int, tok, registry=None):
    _init_worker(tok, registry)   # in-process work (and workers <= 1) uses the same state
    if workers <= 1:
        return None
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    return mp.get_context(method).Pool(workers, initializer=_init_worker, initargs=(tok, registry))


def batched(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for it in items:
        batch.append(it)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def ordered_map(pool, fn: Callable, items: Iterable, depth: int = 8) -> Iterator[tuple]:
    """(item, fn(item)) in input order, fn run in the pool with at most `depth` items in flight, so a streamed input
    is never read ahead into memory. Without a pool, in this process."""
    if pool is None:
        yield from ((it, fn(it)) for it in items)
        return
    pending: deque = deque()
    for it in items:
        pending.append((it, pool.apply_async(fn, (it,))))
        if len(pending) >= depth:
            item, res = pending.popleft()
            yield item, res.get()
    while pending:
        item, res = pending.popleft()
        yield item, res.get()


# --------------------------------------------------------------------------------------------------- selection
class Selector:
    """Licence filter + cleaning + exact and near dedup + group split + held-out filter, in input order."""

    def __init__(self, opts: Options, split_of: Callable[[str], str], stats: Stats | None = None, registry=None,
                 keep_val: Callable[[str], bool] | None = None):
        self.opts, self.split_of, self.registry, self.keep_val = opts, split_of, registry, keep_val
        self.stats = stats or Stats()
        self.seen: set[bytes] = set()            # normalised digests of every document that passed dedup
        self.index = NearDupIndex(opts.num_perm, opts.near_threshold)

    def select(self, docs: Iterable[Document], pool=None) -> Iterator[tuple[str, Document, str]]:
        """Yield (split, document, cleaned text) for each document kept."""
        st, opts = self.stats, self.opts

        def counted(docs):
            for d in docs:
                st.input_documents += 1
                st.input_bytes += len(d.text.encode()) if d.text is not None else 0
                yield d

        if pool is None:   # the registry of this Selector, in this process
            results = ((b, examine(b, opts, self.registry)) for b in batched(counted(docs), opts.batch_docs))
        else:              # the workers' copy of it (make_pool)
            tasks = ((b, opts) for b in batched(counted(docs), opts.batch_docs))
            results = ((b, r) for (b, _), r in ordered_map(pool, _examine_task, tasks))
        for batch, examined in results:
            for d, (reason, lic, text, dig, sig, held) in zip(batch, examined):
                reason = reason or self._duplicate(dig, sig)
                if reason:
                    st.dropped[reason] += 1
                    if reason == "licence":
                        st.count_licence(d.source, lic, kept=False)
                    continue
                split = self.split_of(d.group)
                # A held-out copy is still registered for dedup, so every later decision is the one a run without
                # the registry makes: the default corpus's val split stays exactly the registry's copy of it.
                self.seen.add(dig)
                if (split == "train" and held) or (split == "val" and self.keep_val and not self.keep_val(text)):
                    self.index.add(sig, DROPPED_LABEL)
                    st.dropped[held if split == "train" else "val_shares_train"] += 1
                    continue
                self.index.add(sig, SPLITS.index(split))
                st.kept[split] += 1
                st.count_licence(d.source, lic, kept=True)
                yield split, d, text

    def _duplicate(self, dig: bytes, sig) -> str | None:
        if dig in self.seen:
            return "exact_duplicate"
        if self.index.find(sig) is not None:
            return "near_duplicate"
        return None

    def overlap_report(self) -> dict:
        """Measured train/val near-duplicate overlap after the split."""
        t = self.opts.near_threshold
        near_val, checked = cross_near_dups(self.index.store, 0, 1, t)
        return {"threshold": t, "val_checked": checked, "val_near_dup_in_train": near_val,
                "train_val_near_dup_rate": near_val / checked if checked else 0.0,
                "train_val_exact_dups": 0}  # exact digests are unique across the whole run by construction


# --------------------------------------------------------------------------------------------------- prepare
def load_tokenizer(name: str | None):
    """get_tokenizer(name) with TokenizerError turned into a one-line exit."""
    from tokenizer import TokenizerError, get_tokenizer
    try:
        return get_tokenizer(name)
    except TokenizerError as e:
        raise PrepareError(str(e))


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def up_to_date(out_dir: Path, fp: str) -> dict | None:
    """The existing meta.json if a complete earlier run used the same inputs, options, tokenizer and registry."""
    try:
        meta = read_meta(out_dir)
    except MetaError:
        return None
    return meta if meta.get("fingerprint") == fp else None


def prepare(out_dir: Path, documents: Iterable[Document], *, dataset: str, tok, opts: Options,
            split_of: Callable[[str], str], sources: list, held_out: tuple | None = None,
            keep_val: Callable[[str], bool] | None = None, extra_meta: dict | None = None,
            empty_hint: str = "use more input documents", force: bool = False, quiet: bool = False) -> dict:
    """Write train.bin, val.bin and meta.json into out_dir (data/tokens.py's protocol) and return the meta dict.

    held_out: (Registry, {part: info or why missing}) from data/heldout.load; training documents it matches are
    dropped. keep_val(text): False drops a val document (the default corpus keeps in val only what the registry's
    val part holds: the val packages' own files). An empty split is refused with nothing written. Skips all work
    (and any download a lazy `documents` would do) when meta.json is from a complete run with the same
    fingerprint: dataset, sources, options, tokenizer and held-out parts.
    """
    from tqdm import tqdm

    registry, parts = held_out if held_out is not None else (None, {})
    t0 = time.time()
    fp = fingerprint({"dataset": dataset, "sources": sources, "options": opts.as_meta(), "tokenizer": tok.hash,
                      "held_out": parts})
    if not force and (meta := up_to_date(out_dir, fp)):
        if not quiet:
            print(f"data/{dataset}: up to date ({meta['splits']['train']['tokens']:,} train tokens, "
                  f"{meta['splits']['val']['tokens']:,} val tokens); --force rebuilds")
        return meta
    stats = Stats()
    sel = Selector(opts, split_of, stats, registry, keep_val)
    writer = TokenWriter(out_dir, tok.n_vocab)
    pool = make_pool(opts.workers, tok, registry)
    try:
        kept = sel.select(tqdm(documents, desc=dataset, unit=" docs", disable=quiet, smoothing=0.05), pool)
        for batch, (tokens, lengths) in ordered_map(pool, _tokenise, ([(s, t) for s, _, t in b]
                                                                      for b in batched(kept, opts.batch_docs))):
            start = 0
            for (split, text), n in zip(batch, lengths):
                writer.write(split, tokens[start:start + n], len(text.encode()))
                start += n
        for s in SPLITS:
            if not writer.counts[s]["documents"]:
                raise PrepareError(f"data/{dataset}: the {s} split is empty ({stats.input_documents} documents "
                                   f"read, {sum(stats.kept.values())} kept, none in {s}): {empty_hint}; "
                                   f"nothing was written")
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    finally:
        if pool is not None:
            pool.terminate()
    meta = {"format": TOKEN_FORMAT, "dataset": dataset, "tokenizer": tok.name, "tokenizer_hash": tok.hash,
            "vocab_size": tok.n_vocab, "eot_token": tok.eot_token, "dtype": np.dtype(writer.dtype).name,
            "splits": {s: {"file": f"{s}.bin", **writer.counts[s]} for s in SPLITS},
            "sources": sources,
            "licenses": {"kept": dict(stats.licences_kept.most_common()),
                         "dropped": dict(stats.licences_dropped.most_common()),
                         "by_source": {k: {kk: dict(vv) for kk, vv in v.items()} for k, v in stats.by_source.items()}
                         if len(stats.by_source) <= 1000 else "omitted (more than 1000 sources)"},
            "dedup": {"input_documents": stats.input_documents, "input_bytes": stats.input_bytes,
                      "removed": dict(stats.dropped), "kept": dict(stats.kept), **sel.overlap_report()},
            "held_out": parts,
            "options": opts.as_meta(), **(extra_meta or {}),
            "fingerprint": fp, "seconds": round(time.time() - t0, 2),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_meta(out_dir, meta)
    if not quiet:
        print_summary(meta)
    return meta


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
    parts = [f"{k} ({v if isinstance(v, str) else str(v['documents']) + ' docs'})" for k, v in meta["held_out"].items()]
    held = {k: v for k, v in d["removed"].items() if k.startswith("held_out")}
    print(f"  held out of train: {', '.join(f'{k} {v:,}' for k, v in held.items()) or 'nothing'}; "
          f"registry: {'; '.join(parts) or 'none'}")
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
    g.add_argument("--held_out_dir", type=Path, default=DATA_DIR / "held-out",
                   help="the held-out registry's parts (data/heldout.py)")
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
