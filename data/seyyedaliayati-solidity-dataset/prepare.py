"""Prepare seyyedaliayati/solidity-dataset (gated on the Hugging Face Hub) for language-model training.

    huggingface-cli login        # or export HF_TOKEN=...; then accept the terms on the dataset's page
    python data/seyyedaliayati-solidity-dataset/prepare.py [--val_fraction 0.01] [--strip_comments] ...

Streams every split (train, eval, test; ~4.7 GB, never all in memory), keeps lang == 'Solidity', deduplicates,
splits by repository (a hash of repo_name decides, so no repository is on both sides), drops training files that
copy or contain a held-out file (data/heldout.py: the default corpus's val packages, the Slither evaluation
contracts) and writes train.bin, val.bin and meta.json here.
"""
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from data import corpus, heldout, hub  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO_ID = "seyyedaliayati/solidity-dataset"


def documents(ds, skipped: dict, max_docs=None):
    rows = (row for split in hub.ordered_splits(ds) for row in hub.iter_split(ds, split, REPO_ID))
    for row in itertools.islice(rows, max_docs):
        if row.get("lang") != "Solidity" or not row.get("content"):
            skipped["not_solidity"] += 1
            continue
        group = row.get("repo_name") or str(row.get("repo_id"))
        yield corpus.Document(text=row["content"], group=group, source=REPO_ID, path=row.get("repo_path") or "")


def main(argv=None):
    p = corpus.make_parser(__doc__.split("\n\n")[0])
    hub.add_hub_args(p, val_fraction=0.01)
    p.add_argument("--revision", default=None, help="dataset revision on the Hub; None means main")
    p.add_argument("--out_dir", type=Path, default=HERE, help="where train.bin, val.bin, meta.json go")
    args = p.parse_args(argv)
    hub.check_hub_args(args)
    opts = corpus.options_from_args(args, licences="any")
    ds = hub.load_streaming(REPO_ID, local_path=args.local_path, gated=True, revision=args.revision)
    # From a local copy the Hub may be out of reach: a Slither part not built yet is then reported missing.
    parts = heldout.default_parts(args.held_out_dir, hub=args.local_path is None)
    tok = corpus.load_tokenizer(args.tokenizer)
    skipped = {"not_solidity": 0}
    source = hub.source_info(REPO_ID, args.local_path, revision=args.revision, splits=hub.ordered_splits(ds),
                             max_docs=args.max_docs)
    corpus.prepare(args.out_dir, documents(ds, skipped, args.max_docs), dataset=HERE.name, tok=tok, opts=opts,
                   split_of=corpus.hash_split(args.val_fraction), sources=[source],
                   held_out=heldout.load(parts, opts.near_threshold),
                   extra_meta={"split": {"by": "repository", "val_fraction": args.val_fraction}, "filtered": skipped},
                   empty_hint="raise --max_docs or --val_fraction", force=args.force, quiet=args.quiet)


if __name__ == "__main__":
    main()
