"""Prepare the default corpus: pinned, audited, permissively licensed Solidity packages from npm.

    python data/solidity-packages/prepare.py [--strip_comments] [--tokenizer NAME] [--force] ...

Fetches each package of packages.json with `npm pack` into cache/tarballs/ (reused on later runs; integrity
checked), keeps files whose SPDX header (else package.json licence) is permissive, deduplicates, splits by package
(val = packages.json's val_packages, less files that a training file copies, nearly copies or contains) and writes
train.bin, val.bin and meta.json here. The val split is the held-out registry's part
data/held-out/solidity-packages-val.npz (built first); training files that copy or contain a Slither evaluation
contract (when that part has been built) are dropped.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from data import corpus, heldout, packages  # noqa: E402

HERE = Path(__file__).resolve().parent


def main(argv=None):
    p = corpus.make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--packages", type=Path, default=HERE / "packages.json", help="pinned package list")
    p.add_argument("--cache_dir", type=Path, default=HERE / "cache" / "tarballs", help="npm tarball cache")
    p.add_argument("--out_dir", type=Path, default=HERE, help="where train.bin, val.bin, meta.json go")
    args = p.parse_args(argv)
    opts = corpus.options_from_args(args, licences="permissive")
    spec = packages.load_package_list(args.packages)
    ordered = packages.ordered_packages(spec)
    t0 = time.time()
    # Fetch first, so the fingerprint knows exactly which bytes go in.
    tarballs = [packages.fetch_package(pkg, args.cache_dir) for pkg in ordered]
    sources = [{"package": pkg["name"], "version": pkg["version"], "integrity": packages.sri_sha512(t),
                "split": "val" if pkg["name"] in spec.get("val_packages", []) else "train"}
               for pkg, t in zip(ordered, tarballs)]
    parts = heldout.default_parts(args.held_out_dir, hub=False,
                                  local_packages={"packages_file": args.packages, "cache_dir": args.cache_dir})
    registry, held_out = heldout.load(parts, opts.near_threshold)
    tok = corpus.load_tokenizer(args.tokenizer)
    corpus.prepare(args.out_dir, packages.package_documents(ordered, args.cache_dir), dataset="solidity-packages",
                   tok=tok, opts=opts, split_of=packages.package_split(spec), sources=sources,
                   held_out=(registry, held_out),
                   keep_val=lambda text: registry.knows(text, packages.HELD_OUT_PART),
                   extra_meta={"split": {"by": "package", "val_packages": spec.get("val_packages", [])},
                               "fetch_seconds": round(time.time() - t0, 2)},
                   empty_hint="packages.json's val_packages must have permissive files of their own",
                   force=args.force, quiet=args.quiet)


if __name__ == "__main__":
    main()
