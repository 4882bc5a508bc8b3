"""Prepare mwritescode/slither-audited-smart-contracts (verified contracts) for language-model training.

    python data/slither-audited-smart-contracts/prepare.py [--config big-multilabel] [--strip_comments] ...

Loads the Hub's Parquet export (data/slither.py: revision resolved to a commit sha once and recorded in meta.json),
streaming, and refuses a partial conversion (the all-* configs) unless --allow_partial. The validation and test
contracts of big-multilabel and small-multilabel, which the vulnerability-detection work evaluates on, become the
held-out registry's Slither part (data/held-out/slither-eval.npz); the config's train split is the input, and a
contract is left out by address and by the registry (exact copy, near copy, or a file containing one).
Deduplicates, splits by contract address and writes train.bin, val.bin and meta.json here.
"""
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from data import corpus, heldout, hub, slither  # noqa: E402

HERE = Path(__file__).resolve().parent


def documents(rows, addresses: set, filtered: dict, max_docs=None):
    for row in itertools.islice(rows, max_docs):
        if row["address"].lower() in addresses:
            filtered["held_out_address"] += 1
            continue
        yield corpus.Document(text=row["source_code"] or "", group=row["address"].lower(), source=slither.REPO_ID,
                              path=row["address"])


def main(argv=None):
    p = corpus.make_parser(__doc__.split("\n\n")[0])
    hub.add_hub_args(p, val_fraction=0.02)
    p.add_argument("--config", default="big-multilabel", choices=slither.CONFIGS, help="which configuration's contracts")
    p.add_argument("--allow_partial", action="store_true",
                   help="accept a partial Parquet conversion (all-*: a truncated prefix of the data), with a warning")
    p.add_argument("--out_dir", type=Path, default=HERE, help="where train.bin, val.bin, meta.json go")
    args = p.parse_args(argv)
    hub.check_hub_args(args)
    opts = corpus.options_from_args(args, licences="any")
    revision = slither.resolve_revision(args.local_path)
    splits = slither.check_layout(args.config, args.local_path, revision, args.allow_partial,
                                  expected=slither.SPLITS if args.config.startswith(("big", "small")) else ("train",))
    part = slither.held_out_part(args.held_out_dir, args.local_path, revision)
    parts = {**heldout.default_parts(args.held_out_dir, hub=False), "slither-eval": part}
    addresses = set(heldout.part_array(part, "addresses").tolist())
    ds = slither.load(args.config, args.local_path, revision)
    tok = corpus.load_tokenizer(args.tokenizer)
    filtered = {"held_out_address": 0}
    source = hub.source_info(slither.REPO_ID, args.local_path, revision=slither.REVISION, revision_sha=revision,
                             config=args.config, splits=splits, partial=any(f.startswith("partial-") for f in splits),
                             max_docs=args.max_docs)
    corpus.prepare(args.out_dir, documents(slither.rows(ds, args.config, "train"), addresses, filtered, args.max_docs),
                   dataset=HERE.name, tok=tok, opts=opts, split_of=corpus.hash_split(args.val_fraction),
                   sources=[source], held_out=heldout.load(parts, opts.near_threshold),
                   extra_meta={"split": {"by": "contract address", "val_fraction": args.val_fraction},
                               "filtered": filtered},
                   empty_hint="raise --max_docs or --val_fraction", force=args.force, quiet=args.quiet)


if __name__ == "__main__":
    main()
