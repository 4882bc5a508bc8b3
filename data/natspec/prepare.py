"""The NatSpec-to-body set: every function of the default corpus with a /** */ or /// comment right above it and a
non-empty body, found with tree-sitter (solsyntax.py).

    python data/natspec/prepare.py [--cache_dir=data/solidity-packages/cache/tarballs]

Reads the files exactly as data/solidity-packages/prepare.py keeps them (same licence filter, dedup and package
split, via data.npm.iter_package_documents), so the test set is the functions of the val packages, whose code the
language model never trained on. Writes here, atomically: test.json (val packages) and train.json, each
{"split", "files": {"name@version/path": text}, "functions": [{"file", "name", "natspec_start", "body_start",
"body_end"}]} with character offsets: the body is text[body_start:body_end], strictly inside its braces.
"""
import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import solsyntax  # noqa: E402
from common import atomic_write  # noqa: E402
from data import packages as npm  # noqa: E402

HERE = Path(__file__).resolve().parent


def extract(documents):
    """{split: {"files", "functions"}} from (split, source, path, text) tuples."""
    sets = {split: {"split": split, "files": {}, "functions": []} for split in ("train", "val")}
    for split, source, path, text in documents:
        found = solsyntax.natspec_functions(text)
        if not found:
            continue
        key = f"{source}/{path}"
        sets[split]["files"][key] = text
        for name, natspec_start, (start, end) in found:
            sets[split]["functions"].append({"file": key, "name": name, "natspec_start": natspec_start,
                                             "body_start": start, "body_end": end})
    return sets


def corpus_documents(packages_file, cache_dir):
    split_of = npm.package_split(npm.load_package_list(packages_file))
    for source, path, text in npm.iter_package_documents(None, packages_file=packages_file, cache_dir=cache_dir):
        yield split_of(source.rsplit("@", 1)[0]), source, path, text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--packages", type=Path, default=npm.PACKAGES_FILE, help="pinned package list")
    p.add_argument("--cache_dir", type=Path, default=npm.TARBALL_DIR, help="npm tarball cache")
    p.add_argument("--out_dir", type=Path, default=HERE)
    args = p.parse_args(argv)
    try:
        sets = extract(tqdm(corpus_documents(args.packages, args.cache_dir), desc="files", unit=" files"))
    except solsyntax.SyntaxUnavailable as e:
        raise SystemExit(f"error: {e}") from None
    for split, name in (("val", "test.json"), ("train", "train.json")):
        data = json.dumps(sets[split], ensure_ascii=False).encode("utf-8")
        atomic_write(args.out_dir / name, lambda f: f.write(data))
        print(f"{name}: {len(sets[split]['functions'])} functions in {len(sets[split]['files'])} files")


if __name__ == "__main__":
    main()
