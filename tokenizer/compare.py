"""Measure bytes/token of tokenizers on held-out Solidity: the table behind the choice of split pattern and vocab size.

    python tokenizer/compare.py                      # gpt2, cl100k_base, solgpt, and fresh BPEs per pattern x vocab
    python tokenizer/compare.py --no_train --json    # only the named tokenizers, as JSON (for bench.py)
    python tokenizer/compare.py --show               # how solgpt splits a Solidity snippet

Texts: the default corpus's val packages (packages.json's val_packages, never used to train solgpt; the model's val
split too), or --files. bytes/token = UTF-8 bytes of
the texts / tokens, each text encoded on its own (no end-of-text tokens counted).
From Python: `from tokenizer.compare import bytes_per_token; bytes_per_token(get_tokenizer(), texts)`.
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common import ArgumentParser  # noqa: E402  (one-line usage errors)
from tokenizer import TokenizerError, from_ranks, get_tokenizer  # noqa: E402
from tokenizer.train_tokenizer import PATTERNS, corpus_documents, train_ranks  # noqa: E402

SNIPPET = '''    /**
     * @notice Moves `amount` tokens to `to`.
     * @dev Emits a {Transfer} event.
     */
    function transfer(address to, uint256 amount) external returns (bool) {
        require(to != address(0), "ERC20: zero address");
        _balances[msg.sender] -= amount;
        emit Transfer(msg.sender, to, amount * 1e18 + 0xff);
        return true;
    }
'''


def bytes_per_token(tokenizer, texts) -> float:
    """UTF-8 bytes per token of `texts` (a list of str) under `tokenizer` (anything with encode_batch)."""
    texts = list(texts)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(ids) for ids in tokenizer.encode_batch(texts))
    return n_bytes / max(n_tokens, 1)


def measure_named(names, texts) -> dict:
    """{name: {"bytes_per_token": x, "n_vocab": n} or {"unavailable": reason}} for tokenizers loadable by name."""
    out = {}
    for name in names:
        try:
            tok = get_tokenizer(name)
        except TokenizerError as e:
            out[name] = {"unavailable": str(e)}
            continue
        out[name] = {"bytes_per_token": round(bytes_per_token(tok, texts), 4), "n_vocab": tok.n_vocab}
    return out


def measure_trained(train_docs, texts, patterns, vocab_sizes) -> dict:
    """Train a BPE per (pattern, vocab size) on train_docs in memory and measure it on texts."""
    out = {}
    for pattern in patterns:
        for vocab_size in vocab_sizes:
            t0 = time.time()
            tok = from_ranks(f"{pattern}-{vocab_size}", train_ranks(train_docs, vocab_size, PATTERNS[pattern]),
                             PATTERNS[pattern])
            bpt = bytes_per_token(tok, texts)
            out[tok.name] = {"pattern": pattern, "vocab_size": vocab_size, "bytes_per_token": round(bpt, 4)}
            print(f"  trained {tok.name:20s} {bpt:.3f} bytes/token ({time.time() - t0:.1f}s)", file=sys.stderr)
    return out


def format_table(named: dict, trained: dict, patterns, vocab_sizes) -> str:
    lines = ["tokenizer         n_vocab  bytes/token"]
    for name, r in named.items():
        value = f"{r['bytes_per_token']:.3f}" if "bytes_per_token" in r else "unavailable (files not downloaded)"
        lines.append(f"{name:16s} {r.get('n_vocab', ''):>8}  {value}")
    if trained:
        lines.append("")
        lines.append("fresh BPE on the training packages; regular tokens (256 bytes + merges):")
        lines.append(f"{'pattern':16s} " + " ".join(f"{v:>8}" for v in vocab_sizes))
        for p in patterns:
            lines.append(f"{p:16s} " + " ".join(f"{trained[f'{p}-{v}']['bytes_per_token']:8.3f}" for v in vocab_sizes))
    return "\n".join(lines)


def load_texts(files: list[str] | None, need_train: bool) -> tuple[list[str], list[str], str]:
    """(texts to measure, training documents for fresh BPEs, description of the texts)."""
    if files:
        paths = sorted({p for pattern in files for p in glob.glob(pattern, recursive=True)})
        if not paths:
            raise SystemExit(f"error: --files matched no file: {' '.join(files)}")
        texts = [Path(p).read_text(encoding="utf-8", errors="replace") for p in paths]
        if not need_train:
            return texts, [], f"{len(paths)} files"
        splits, _ = corpus_documents()
        return texts, splits["train"], f"{len(paths)} files"
    splits, val_packages = corpus_documents()
    return splits["val"], splits["train"], f"the default corpus's val packages {', '.join(val_packages)}"


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tokenizers", default="gpt2,cl100k_base,solgpt", help="comma-separated names for get_tokenizer")
    p.add_argument("--patterns", default="gpt4,solidity-v0,solidity", help=f"patterns to train: {', '.join(PATTERNS)}")
    p.add_argument("--vocab_sizes", default="8192,16384,32768", help="regular-token counts to train")
    p.add_argument("--no_train", action="store_true", help="only measure the named tokenizers")
    p.add_argument("--files", nargs="+", help="measure on these files (globs) instead of the held-out packages")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--show", action="store_true", help="print how solgpt splits a Solidity snippet and exit")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.show:
        tok = get_tokenizer()
        ids = tok.encode(SNIPPET)
        print(f"{len(SNIPPET.encode())} bytes -> {len(ids)} tokens: {[tok.decode([i]) for i in ids]}")
        return
    patterns = [p for p in args.patterns.split(",") if p]
    unknown = [p for p in patterns if p not in PATTERNS]
    if unknown:
        raise SystemExit(f"error: unknown pattern {unknown[0]!r}; valid: {', '.join(PATTERNS)}")
    try:
        vocab_sizes = [int(v) for v in args.vocab_sizes.split(",") if v]
    except ValueError:
        raise SystemExit(f"error: --vocab_sizes must be comma-separated integers, got {args.vocab_sizes!r}")
    texts, train_docs, source = load_texts(args.files, need_train=not args.no_train)
    named = measure_named([n for n in args.tokenizers.split(",") if n], texts)
    trained = {}
    if not args.no_train:
        trained = measure_trained(train_docs, texts, patterns, vocab_sizes)
    n_bytes = sum(len(t.encode()) for t in texts)
    if args.json:
        print(json.dumps({"texts": source, "bytes": n_bytes, "documents": len(texts), "tokenizers": named,
                          "trained": trained}, indent=2))
    else:
        print(f"bytes/token on {source}: {len(texts)} documents, {n_bytes / 1e6:.2f} MB")
        print(format_table(named, trained, patterns, vocab_sizes))


if __name__ == "__main__":
    main()
