"""Train solGPT's byte-level BPE on the default Solidity corpus and write tokenizer/<name>.tiktoken + <name>.json.

    python tokenizer/train_tokenizer.py                     # reproduces tokenizer/solgpt.tiktoken bit for bit
    python tokenizer/train_tokenizer.py --vocab_size=8192 --pattern=gpt4 --name=solgpt-gpt4-8k   # an alternative

Documents: the default corpus exactly as data/solidity-packages/prepare.py keeps it (data/packages.py's
iter_package_documents: licence filter, cleaning, exact and near dedup), in its fixed order, so the result is
deterministic. The validation packages (packages.json's val_packages) never reach tokenizer training, so
tokenizer/compare.py measures bytes/token on Solidity the tokenizer has not seen, which is also the model's val split.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common import ArgumentParser  # noqa: E402  (one-line usage errors)
from tokenizer import SPECIAL_TOKENS, TOKENIZER_DIR, TokenizerError, dump_ranks, make_encoding  # noqa: E402

DEFAULT_VOCAB_SIZE = 16384  # regular tokens (256 bytes + merges); the specials come on top

# GPT-4's (cl100k_base) split pattern, with digits in runs of 1-3.
GPT4_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|"""
                r"""\s*[\r\n]|\s+(?!\S)|\s+""")

# Solidity: whitespace (newlines and indentation included) goes with what follows it, so "\n        require",
# "\n    }" or ") {" can each become one token; identifiers and numbers keep their digits and letters (uint256,
# bytes32, ERC721, 1e18, 0xff); a word may carry one leading punctuation mark (".transfer", "(address"); a comment
# marker stays with its first word ("\n     * @notice", "\n    /// @dev"); punctuation runs may hold single spaces
# (") {", "} = ("). No look-around or possessive quantifier, so rustbpe and tiktoken both run it on the regex
# crate's linear-time engine. Measured against alternatives with tokenizer/compare.py.
_WORD = r"[\p{L}_$][\p{L}\p{N}_$]*"
_PUNCT = r"[^\s\p{L}\p{N}_$]"
SOLIDITY_PATTERN = "|".join([
    r"\s*(?:///?|/\*\*?)[ \t]*@?" + _WORD,             # "// SPDX", "\n    /// @dev", "/** @notice"
    r"[ \t]*(?:\r?\n[ \t]*)+\*[ \t]*@?" + _WORD,         # "\n     * @param" (a line inside /** */)
    r"\s*" + _PUNCT + "?" + _WORD,                       # "\n        require", " uint256", ".sender", "(address"
    r"\s*\p{N}[\p{L}\p{N}_$]*",                          # " 1e18", " 0xff", " 1_000"
    r"\s*" + _PUNCT + "+(?: " + _PUNCT + "+)*",          # "\n    }", ") {", "();"
    r"\s+",                                             # trailing whitespace at the end of a text
])

# The first cut (published before measurement): digits split from letters in numbers, no spaces in punctuation runs.
SOLIDITY_V0_PATTERN = (r"\s*(?:///?|/\*\*?|\*)[ \t]*@?[\p{L}_$][\p{L}\p{N}_$]*|\s*[^\s\p{L}\p{N}_$]?[\p{L}_$][\p{L}\p{N}_$]*|"
                       r"\s*\p{N}{1,3}|\s*[^\s\p{L}\p{N}_$]+|\s+")

PATTERNS = {"solidity": SOLIDITY_PATTERN, "solidity-v0": SOLIDITY_V0_PATTERN, "gpt4": GPT4_PATTERN}
DEFAULT_PATTERN = "solidity"


def corpus_documents(cache_dir: Path | None = None, packages_file: Path | None = None,
                     held_out_dir: Path | None = None) -> tuple[dict[str, list[str]], list[str]]:
    """({"train": texts, "val": texts}, val_packages) of the default corpus, in the corpus's fixed order.

    "train" trains the tokenizer; "val" (whole packages: packages.json's val_packages, less files that copy
    training files) is held out to measure it. None: the default corpus's packages.json, tarball cache and
    held-out registry folder.
    """
    from tqdm import tqdm

    from data import packages

    val_packages = list(packages.load_package_list(packages_file or packages.PACKAGES_FILE).get("val_packages", []))
    docs = {"train": [], "val": []}
    for source, _path, text in tqdm(packages.iter_package_documents(split=None, cache_dir=cache_dir,
                                                                    packages_file=packages_file,
                                                                    held_out_dir=held_out_dir),
                                    desc="reading corpus", unit=" files"):
        docs["val" if source.rsplit("@", 1)[0] in val_packages else "train"].append(text)
    return docs, val_packages


def corpus_sha256(docs) -> str:
    """Fingerprint of the training documents in order: tells whether a retrain saw the same corpus."""
    h = hashlib.sha256()
    for d in docs:
        b = d.encode()
        h.update(b"%d:" % len(b) + b)
    return h.hexdigest()


def warn_if_corpus_changed(meta_path: Path, sha: str):
    try:
        old = json.loads(meta_path.read_text()).get("corpus_sha256")
    except (OSError, ValueError):
        return
    if old and old != sha:
        print(f"warning: the corpus differs from the one {meta_path.stem} was trained on (corpus sha256 {sha[:12]}, "
              f"was {old[:12]}): data/ or the package list changed, so the ranks will change too",
              file=sys.stderr)


def train_ranks(documents, vocab_size: int, pattern: str) -> dict[bytes, int]:
    """Byte-level BPE ranks (256 bytes + merges = vocab_size) from an iterable of documents."""
    import rustbpe

    if vocab_size < 256:
        raise SystemExit(f"error: --vocab_size must be at least 256 (the byte tokens), got {vocab_size}")
    bpe = rustbpe.Tokenizer()
    bpe.train_from_iterator(iter(documents), vocab_size, pattern=pattern)
    return {bytes(tok): rank for tok, rank in bpe.get_mergeable_ranks()}


def write_tokenizer(ranks: dict[bytes, int], pattern: str, name: str, out_dir: Path, info: dict) -> Path:
    """Write <name>.tiktoken and <name>.json after checking that tiktoken accepts the pattern and ranks."""
    try:
        make_encoding(name, ranks, pattern)
    except (TokenizerError, ValueError) as e:
        raise SystemExit(f"error: tiktoken rejects the trained tokenizer: {e}")
    data = dump_ranks(ranks)
    out_dir.mkdir(parents=True, exist_ok=True)
    ranks_path = out_dir / f"{name}.tiktoken"
    meta = {"name": name, "pattern": pattern, "n_regular": len(ranks), "special_tokens": list(SPECIAL_TOKENS),
            "ranks_sha256": hashlib.sha256(data).hexdigest(), **info}
    for path, content in ((ranks_path, data), (out_dir / f"{name}.json", (json.dumps(meta, indent=2) + "\n").encode())):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(content)
        tmp.replace(path)
    return ranks_path


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--vocab_size", type=int, default=DEFAULT_VOCAB_SIZE, help="regular tokens (256 bytes + merges)")
    p.add_argument("--pattern", choices=sorted(PATTERNS), default=DEFAULT_PATTERN, help="split pattern")
    p.add_argument("--name", default="solgpt", help="tokenizer name: writes <out_dir>/<name>.tiktoken and .json")
    p.add_argument("--out_dir", type=Path, default=TOKENIZER_DIR,
                   help="where to write (get_tokenizer(name) loads from tokenizer/)")
    p.add_argument("--tarballs", type=Path, default=None,
                   help="npm tarball cache of the default corpus (None: data/solidity-packages/cache/tarballs)")
    p.add_argument("--packages", type=Path, default=None,
                   help="the corpus's package list (None: data/solidity-packages/packages.json)")
    p.add_argument("--held_out_dir", type=Path, default=None,
                   help="the held-out registry's folder (None: data/held-out)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not args.name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise SystemExit(f"error: --name must be letters, digits, '-', '_' or '.', got {args.name!r}")
    if args.vocab_size < 256:
        raise SystemExit(f"error: --vocab_size must be at least 256 (the byte tokens), got {args.vocab_size}")
    t0 = time.time()
    print("reading the default corpus (licence filter, cleaning, dedup: as data/solidity-packages/prepare.py)...")
    splits, held_out = corpus_documents(args.tarballs, args.packages, args.held_out_dir)
    docs = splits["train"]
    n_bytes = sum(len(d.encode()) for d in docs)
    print(f"training on {len(docs)} documents, {n_bytes / 1e6:.2f} MB (held out: {', '.join(held_out)}); "
          f"vocab {args.vocab_size}, pattern {args.pattern!r}")
    ranks = train_ranks(docs, args.vocab_size, PATTERNS[args.pattern])
    info = {"vocab_size": args.vocab_size, "pattern_name": args.pattern, "held_out_packages": held_out,
            "training_documents": len(docs), "training_bytes": n_bytes, "corpus_sha256": corpus_sha256(docs)}
    warn_if_corpus_changed(args.out_dir / f"{args.name}.json", info["corpus_sha256"])
    path = write_tokenizer(ranks, PATTERNS[args.pattern], args.name, args.out_dir, info)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB, {len(ranks)} regular + {len(SPECIAL_TOKENS)} special "
          f"tokens) sha256 {sha} in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
