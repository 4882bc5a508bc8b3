"""Prepare mwritescode/slither-audited-smart-contracts (verified contracts) for language-model training.

    python data/slither-audited-smart-contracts/prepare.py [--config all-multilabel] [--strip_comments] ...

Loads the Hub's Parquet export (revision refs/convert/parquet: the repo's loading script is refused by
datasets >= 4), streaming. Every contract of the validation and test splits of big-multilabel and small-multilabel
is held out of the output -- by address, by normalised content and by near-duplicate -- because the
vulnerability-detection work evaluates on them. Deduplicates, splits by contract address and writes train.bin,
val.bin and meta.json here.
"""
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from data import corpus, hub  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO_ID = "mwritescode/slither-audited-smart-contracts"
REVISION = "refs/convert/parquet"
CONFIGS = ("all-multilabel", "all-plain-text", "big-multilabel", "big-plain-text", "small-multilabel",
           "small-plain-text")
EVAL_CONFIGS = ("big-multilabel", "small-multilabel")
EVAL_SPLITS = ("validation", "test")


def load(config, local_path):
    return hub.load_streaming(REPO_ID, local_path=local_path, data_dir=config, revision=REVISION)


def rows(ds, splits, max_docs=None):
    it = (row for split in splits for row in hub.iter_split(ds, split, REPO_ID))
    return itertools.islice(it, max_docs)


def held_out(local_path, addresses: set):
    """The evaluation contracts; their addresses are collected while prepare() reads them (before the rest)."""
    for config in EVAL_CONFIGS:
        ds = load(config, local_path)
        for row in rows(ds, [s for s in EVAL_SPLITS if s in ds]):
            addresses.add(row["address"].lower())
            yield corpus.Document(text=row["source_code"] or "", group=row["address"], source=f"{config} (held out)")


def documents(ds, addresses: set, filtered: dict, max_docs=None):
    for row in rows(ds, hub.ordered_splits(ds), max_docs):
        if row["address"].lower() in addresses:
            filtered["held_out_address"] += 1
            continue
        yield corpus.Document(text=row["source_code"] or "", group=row["address"].lower(), source=REPO_ID,
                              path=row["address"])


def main(argv=None):
    p = corpus.make_parser(__doc__.split("\n\n")[0])
    hub.add_hub_args(p, val_fraction=0.02)
    p.add_argument("--config", default="all-multilabel", choices=CONFIGS, help="which configuration's contracts")
    p.add_argument("--out_dir", type=Path, default=HERE, help="where train.bin, val.bin, meta.json go")
    args = p.parse_args(argv)
    hub.check_hub_args(args)
    opts = corpus.options_from_args(args, licences="any")
    ds = load(args.config, args.local_path)
    tok = corpus.load_tokenizer(args.tokenizer)
    addresses, filtered = set(), {"held_out_address": 0}
    source = hub.source_info(REPO_ID, args.local_path, revision=REVISION, config=args.config,
                             splits=hub.ordered_splits(ds), held_out=[f"{c}/{s}" for c in EVAL_CONFIGS for s in EVAL_SPLITS],
                             max_docs=args.max_docs)
    corpus.prepare(args.out_dir, documents(ds, addresses, filtered, args.max_docs), dataset=HERE.name, tok=tok,
                   opts=opts, split_of=corpus.hash_split(args.val_fraction), sources=[source],
                   exclude=held_out(args.local_path, addresses),
                   extra_meta={"split": {"by": "contract address", "val_fraction": args.val_fraction},
                               "filtered": filtered},
                   force=args.force, quiet=args.quiet)


if __name__ == "__main__":
    main()
