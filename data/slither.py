"""mwritescode/slither-audited-smart-contracts on the Hub: its Parquet layout, pinned revision and evaluation splits.

Used by data/slither-audited-smart-contracts/prepare.py (language-model data) and data/heldout.py (the
validation/test contracts every training set must leave out).

The Hub serves the dataset as a Parquet conversion (branch refs/convert/parquet; the repo's loading script is
refused by datasets >= 4): <config>/<split>/NNNN.parquet. For the `all-*` configs that conversion is partial: only
a `partial-train/` folder, a truncated prefix of the 120,608 contracts, which `datasets` silently calls `train`.
`big-*` and `small-*` are complete, with train/validation/test.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Iterator

from data import heldout, hub
from data.corpus import PrepareError

REPO_ID = "mwritescode/slither-audited-smart-contracts"
# Not yet pinned to a commit: this machine cannot reach the Hub to look one up. Replace it with a commit sha of the
# dataset repo's Parquet branch, printed by
#   python -c "from huggingface_hub import HfApi; print(HfApi().dataset_info('mwritescode/slither-audited-smart-contracts', revision='refs/convert/parquet').sha)"
# Until then every run resolves the branch to its current sha once, reads everything at that sha, and records it in
# meta.json (sources[0].revision_sha) and in the held-out part.
REVISION = "refs/convert/parquet"
CONFIGS = ("big-multilabel", "big-plain-text", "small-multilabel", "small-plain-text", "all-multilabel",
           "all-plain-text")
SPLITS = ("train", "validation", "test")   # what a complete config has
EVAL_CONFIGS = ("big-multilabel", "small-multilabel")
EVAL_SPLITS = ("validation", "test")
HELD_OUT_PART = "slither-eval"


def resolve_revision(local_path: Path | None) -> str | None:
    """The commit sha REVISION points to now (None for a local copy)."""
    if local_path is not None:
        return None
    from huggingface_hub import HfApi
    try:
        return HfApi().dataset_info(REPO_ID, revision=REVISION).sha
    except Exception as e:  # noqa: BLE001 - one line that names the cause
        raise hub.translate(e, REPO_ID) from e


def split_folders(config: str, local_path: Path | None, revision: str | None) -> dict[str, int]:
    """{folder under <config>/ of the Parquet export: its number of .parquet files}: the splits as laid out."""
    if local_path is not None:
        d = Path(local_path) / config
        return {p.name: len(list(p.glob("*.parquet"))) for p in sorted(d.iterdir()) if p.is_dir()} if d.is_dir() else {}
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFolder
    try:
        tree = list(HfApi().list_repo_tree(REPO_ID, path_in_repo=config, repo_type="dataset", revision=revision,
                                           recursive=True))
    except Exception as e:  # noqa: BLE001
        raise hub.translate(e, REPO_ID) from e
    out: dict[str, int] = {}
    for e in tree:
        parts = Path(e.path).relative_to(config).parts
        if isinstance(e, RepoFolder) and len(parts) == 1:
            out.setdefault(parts[0], 0)
        elif len(parts) == 2 and parts[1].endswith(".parquet"):
            out[parts[0]] = out.get(parts[0], 0) + 1
    return dict(sorted(out.items()))


def check_layout(config: str, local_path: Path | None, revision: str | None, allow_partial: bool = False,
                 expected=SPLITS) -> list[str]:
    """The config's split folders; a one-line error for a partial conversion (unless allowed), a missing split or
    one without Parquet files."""
    folders = split_folders(config, local_path, revision)
    partial = [f for f in folders if f.startswith("partial-")]
    where = f"{REPO_ID} {config} ({local_path or revision})"
    if partial and not allow_partial:
        raise PrepareError(f"{where} has only a partial Parquet conversion ({', '.join(partial)}: a truncated prefix "
                           f"of the data): use --config big-multilabel (complete), or --allow_partial to take the prefix")
    if partial:
        print(f"warning: {where} is a PARTIAL Parquet conversion ({', '.join(partial)}): the output holds only a "
              f"prefix of the dataset", file=sys.stderr)
    used = partial or [s for s in expected if s in folders]
    missing = [s for s in expected if s not in folders] if not partial else []
    if missing:
        raise PrepareError(f"{where} has no {', '.join(missing)} split (found: {', '.join(folders) or 'nothing'}): "
                           f"the download is incomplete or the layout changed")
    empty = [s for s in used if not folders[s]]
    if empty:
        raise PrepareError(f"{where} has no Parquet files in {', '.join(empty)}: the download is incomplete or the "
                           f"layout changed")
    return used


def load(config: str, local_path: Path | None, revision: str | None):
    return hub.load_streaming(REPO_ID, local_path=local_path, data_dir=config, revision=revision or REVISION)


def rows(ds, config: str, split: str) -> Iterator[dict]:
    """The split's rows; a one-line error when it has none (0 held-out contracts must never pass silently)."""
    if split not in ds:
        raise PrepareError(f"{REPO_ID} {config} has no {split} split (found: {', '.join(ds.keys())})")
    n = 0
    for row in hub.iter_split(ds, split, REPO_ID):
        n += 1
        yield row
    if not n:
        raise PrepareError(f"{REPO_ID} {config}/{split} is empty: the download is incomplete or the layout changed")


def held_out_part(held_out_dir: Path = heldout.HELD_OUT_DIR, local_path: Path | None = None,
                  revision: str | None = None) -> Path:
    """data/held-out/slither-eval.npz from the evaluation splits, (re)built when the source changed."""
    if revision is None and local_path is None:
        revision = resolve_revision(None)
    source = hub.source_info(REPO_ID, local_path, revision_sha=revision)
    fp = hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()
    path = heldout.part_path(held_out_dir, HELD_OUT_PART)
    info = heldout.read_part_info(path)
    if info is not None and info.get("fingerprint") == fp:
        return path
    addresses = []

    def texts():
        for config in EVAL_CONFIGS:
            check_layout(config, local_path, revision, expected=SPLITS)
            ds = load(config, local_path, revision)
            for split in EVAL_SPLITS:
                for row in rows(ds, config, split):
                    addresses.append(row["address"].lower())
                    yield row["source_code"] or ""
    heldout.write_part(path, texts(), {"name": HELD_OUT_PART, "fingerprint": fp, "revision_sha": revision,
                                       "source": f"{REPO_ID} {'+'.join(EVAL_CONFIGS)} {'+'.join(EVAL_SPLITS)}"},
                       addresses=addresses)
    return path
