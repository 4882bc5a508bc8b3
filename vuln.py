"""
Vulnerability classification: the data, batches, metrics and evaluation of train.py's `task='classify'`.

    python train.py config/finetune_vuln_cpu.py --init_from=out-cpu/model.pt --out_dir=out-vuln-cpu

A file is tokenized and cut into windows of block_size tokens, each ending with <|cls|> (right-padded with -1, which
model.GPT.classify skips); a causal model's last position has seen its whole window. A file longer than
max_windows windows keeps max_windows of them evenly spaced over it, first and last included (deterministic, and
every part of a long file has a chance; the model sees at most max_windows * (block_size - 1) tokens of a file).
With cls_window_shift, each training draw of a file moves its window boundaries by a random offset (evaluation,
bench.py and classify.py keep the fixed cut).
The head pools the windows' states (config.cls_pool: attention, attention with its own weights per output, or max)
into 6 sigmoid outputs, one per `big` class of the Slither dataset; the loss is BCE with per-class pos_weight =
negatives / positives of the train split.

Datasets (--dataset):
  slither-labels                  data/slither-labels/labels.json (offline). test = its held_out split (the default
                                  corpus's val packages); val = whole train-side projects (npm scope, or name
                                  without version: every package and version of one organisation), picked by
                                  sha256 of their name until val_fraction of the files, then more until every
                                  class has half its share there (by_project_val; a file and its injected variants
                                  stay together); train = the rest.
  slither-audited-smart-contracts the Hub's big-multilabel train/validation/test (through data/slither.py, the same
                                  datasets calls as its prepare.py; --cls_hub_path reads a local copy of the Parquet
                                  export instead of the Hub).
Per-class thresholds are tuned on val at every evaluation (the F1-best cut) and stored in the checkpoint with it;
`decide` turns probabilities into labels the same way for the model, the baselines (bench.py) and classify.py.
"""

import functools
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from compiler.labels import CLASSES, DETECTORS  # noqa: E402  (the dataset's `big` classes, in its index order)
from dataloader import DataError, seeded_generator  # noqa: E402
from data import heldout  # noqa: E402
from data.cleaning import strip_comments as _strip_comments  # noqa: E402

DATASETS = ("slither-labels", "slither-audited-smart-contracts")
CLS_TOKEN, PAD_TOKEN = "<|cls|>", -1
DETECTOR_POS_WEIGHT_CAP = 100.0  # a detector with 2 positives in 2,000 files would weigh 1,000: a few files' noise


# ----------------------------------------------------------------------------------------------------------------
# examples: {"text", "labels" (class names), "group" (package or address), "name"}, and "detectors" (the Slither
# detectors behind the labels) where the dataset has them


def project_of(package):
    """The project an npm package belongs to: its scope (@openzeppelin for @openzeppelin/contracts-upgradeable@5.7.0),
    else its name without the version and an -upgradeable suffix (erc721a-upgradeable@4.3.0 -> erc721a). Versions
    and variants of one library are near copies of each other: split by package, OpenZeppelin 5.7 sat in validation
    beside its upgradeable twin in train, and validation rewarded memory where the held-out split (new protocols)
    asks for generalisation."""
    return package.split("/")[0] if package.startswith("@") else package.split("@")[0].removesuffix("-upgradeable")


def by_project_val(examples, val_fraction):
    """Split train-side examples into (train, val) by whole groups (projects, for the offline labels): deterministic,
    and no file or its injected variant sits on both sides. Groups in sha256 order of their names until val holds
    val_fraction of the files, passing over a group that would take it past 1.25x that (on the offline labels,
    Chainlink's 670 files next in order would make val 34% of the data, most of it one project), and taking the
    smallest group left when none fits; then, while a class has fewer than half its share (val_fraction / 2
    of its positive files) in val, the group densest in that class (positives per file) joins val. Without that
    second step a rare class can land in val with a file or two, and its tuned threshold and F1 (a sixth of macro
    F1) hinge on them."""
    groups = sorted({e["group"] for e in examples}, key=lambda g: hashlib.sha256(g.encode()).hexdigest())
    files = {g: [e for e in examples if e["group"] == g] for g in groups}
    positives = lambda exs, c: sum(c in e["labels"] for e in exs)  # noqa: E731
    target = val_fraction * len(examples)
    val_groups, n = [], 0
    while n < target and (left := [g for g in groups if g not in val_groups]):
        fitting = [g for g in left if n + len(files[g]) <= 1.25 * target]
        pick = fitting[0] if fitting else min(left, key=lambda g: len(files[g]))  # all left overshoot: the smallest
        val_groups.append(pick)
        n += len(files[pick])
    for c in CLASSES:
        total = positives(examples, c)
        while (in_val := positives([e for g in val_groups for e in files[g]], c)) < val_fraction / 2 * total:
            # never the group that holds all of train's remaining positives: the class must stay learnable
            rest = [g for g in groups if g not in val_groups and 0 < positives(files[g], c) < total - in_val]
            if not rest:
                break
            val_groups.append(max(rest, key=lambda g: positives(files[g], c) / len(files[g])))
    val = set(val_groups)
    return [e for e in examples if e["group"] not in val], [e for e in examples if e["group"] in val]


def _slither_labels():
    sys.path.insert(0, str(ROOT / "data" / "slither-labels"))
    import prepare  # data/slither-labels/prepare.py
    return prepare


def _labelled(split, labels_path, tarball_dir):
    """Examples of a data/slither-labels label file (texts rebuilt from the npm tarballs, hash-checked)."""
    from data.corpus import PrepareError
    kw = {k: v for k, v in (("labels_path", labels_path), ("tarball_dir", tarball_dir)) if v is not None}
    try:
        rows = list(_slither_labels().labelled_examples(split, **kw))
    except PrepareError as e:
        raise DataError(str(e.code).removeprefix("error: ")) from None
    return [{"text": r["text"], "labels": r["labels"], "detectors": r["detectors"], "split": r["split"],
             "group": project_of(r["package"]),
             "name": f"{r['package']}/{r['path']}" + ("" if r["kind"] == "clean" else f" +{r['kind']}")} for r in rows]


def offline_splits(val_fraction=0.2, labels_path=None, tarball_dir=None, extra_train=False):
    """train/val/test of data/slither-labels/labels.json; extra_train: labels_extra_train.json's files (packages
    outside the default corpus) join train. Validation is picked from the corpus's train side alone, so it is the
    same files with or without them."""
    rows = _labelled(None, labels_path, tarball_dir)
    train, val = by_project_val([r for r in rows if r["split"] == "train"], val_fraction)
    if extra_train:
        prepare = _slither_labels()
        path = prepare.HERE / "labels_extra_train.json"
        if not path.is_file():
            raise DataError(f"{path} is missing (--cls_extra_train reads it): restore it with git checkout, or "
                            "remake it with python data/slither-labels/prepare.py --extra_train")
        train = train + _listed_labels("train", path, prepare.EXTRA_TRAIN_FILE, tarball_dir)
    return {"train": train, "val": val, "test": [r for r in rows if r["split"] == "held_out"]}


def new_protocols_test(labels_path=None, tarball_dir=None):
    """The second offline test split: data/slither-labels/labels_new_protocols.json, protocols outside the default
    corpus (new_protocols.json). None if that file is absent."""
    prepare = _slither_labels()
    labels_path = Path(labels_path or prepare.HERE / "labels_new_protocols.json")
    if not labels_path.is_file():
        return None
    return _listed_labels("held_out", labels_path, prepare.NEW_PROTOCOLS_FILE, tarball_dir)


def _listed_labels(split, labels_path, list_file, tarball_dir):
    """Examples of a label file of packages outside the corpus (new_protocols.json, extra_train.json): the packages
    it names are fetched if missing, integrity-checked where list_file pins them."""
    from data import packages as npm
    from data.corpus import PrepareError
    pinned = {f"{p['name']}@{p['version']}": p for p in json.loads(Path(list_file).read_text())["packages"]}
    try:
        for package in sorted({e["package"] for e in json.loads(Path(labels_path).read_text())["files"]}):
            name, version = package.rsplit("@", 1)
            npm.fetch_package(pinned.get(package, {"name": name, "version": version}), tarball_dir or npm.TARBALL_DIR)
    except PrepareError as e:
        raise DataError(str(e.code).removeprefix("error: ")) from None
    return _labelled(split, labels_path, tarball_dir)


def hub_splits(local_path=None, config="big-multilabel", max_docs=0):
    """train/val/test of the Hub dataset's big-multilabel config (row["slither"]: indices into CLASSES)."""
    from itertools import islice

    from data import slither
    from data.corpus import PrepareError
    try:
        path = Path(local_path) if local_path else None
        revision = slither.resolve_revision(path)
        slither.check_layout(config, path, revision)
        ds = slither.load(config, path, revision)
        out = {}
        for ours, theirs in (("train", "train"), ("val", "validation"), ("test", "test")):
            out[ours] = [{"text": r["source_code"] or "", "labels": sorted(CLASSES[i] for i in r["slither"]),
                          "group": r["address"].lower(), "name": r["address"]}
                         for r in islice(slither.rows(ds, config, theirs), max_docs or None)]
    except PrepareError as e:
        raise DataError(str(e.code).removeprefix("error: ")) from None
    return without_copies_of_later_splits(out)


def without_copies_of_later_splits(splits):
    """The splits less each train contract whose source (comments and whitespace aside) is that of a validation or
    test contract, and each validation contract that is a test one's: verified contracts are often deployed
    verbatim many times, and a test contract must be neither trained on nor tune the thresholds. Near copies stay
    (MinHash over ~100k contracts at every start would cost minutes; the language-model registry covers them)."""
    keys = {s: [heldout.exact_key(e["text"]) for e in splits[s]] for s in ("train", "val", "test")}
    out, later, dropped = dict(splits), set(keys["test"]), {}
    for s in ("val", "train"):
        out[s] = [e for e, k in zip(splits[s], keys[s]) if k not in later]
        dropped[s] = len(splits[s]) - len(out[s])
        later |= set(keys[s])
    if any(dropped.values()):
        print(f"slither-audited-smart-contracts: left out {dropped['train']:,} train and {dropped['val']:,} "
              f"validation contracts that copy a validation or test contract", file=sys.stderr)
    return out


def load_splits(cfg):
    if cfg["dataset"] == "slither-labels":
        return offline_splits(cfg["cls_val_fraction"], extra_train=cfg["cls_extra_train"])
    if cfg["dataset"] == "slither-audited-smart-contracts":
        return hub_splits(cfg["cls_hub_path"] or None, max_docs=cfg["cls_max_docs"])
    raise DataError(f"--task=classify needs --dataset to be one of {', '.join(DATASETS)}, got {cfg['dataset']!r}")


def targets(examples, key="labels", names=CLASSES):
    """(N, n_classes) float32 multi-hot labels (key="detectors", names=DETECTORS: the detectors behind them)."""
    y = np.zeros((len(examples), len(names)), dtype=np.float32)
    for i, e in enumerate(examples):
        y[i, [names.index(c) for c in e[key]]] = 1
    return y


def has_detector_labels(splits):
    """Whether every file of every split names the Slither detectors behind its labels (slither-labels does)."""
    return all("detectors" in e for ex in splits.values() for e in ex)


def pos_weights(y, cap=float("inf")):
    """negatives / positives per column of multi-hot targets, at most cap (1 for a column without positives)."""
    pos = y.sum(0)
    w = np.where(pos > 0, (len(y) - pos) / np.maximum(pos, 1), 1.0)
    return torch.tensor(np.minimum(w, cap), dtype=torch.float32)


# ----------------------------------------------------------------------------------------------------------------
# windows


def window_starts(n_tokens, block_size, max_windows, shift=0):
    """Token offsets of a file's windows (block_size - 1 tokens each, + <|cls|>): all of them, or max_windows evenly
    spaced over the file (first and last included) when there are more. shift (0 < shift < block_size - 1) moves
    every boundary after the first window (which then holds the file's first `shift` tokens) that far right."""
    step = block_size - 1
    starts = ([0] if shift else []) + list(range(shift, max(n_tokens, 1), step))
    if len(starts) > max_windows:
        starts = [starts[round(i * (len(starts) - 1) / (max_windows - 1))] for i in range(max_windows)] \
            if max_windows > 1 else starts[:1]
    return starts


def file_windows(ids, block_size, max_windows, cls_id, shift=0):
    """(W, block_size) int32 windows of one tokenized file, each ids[s:s + block_size - 1] (or up to the next
    window's start) + <|cls|>, right-padded with -1; plus the token offset of each window (to map a window back to
    the source)."""
    starts = window_starts(len(ids), block_size, max_windows, shift)
    out = np.full((len(starts), block_size), PAD_TOKEN, dtype=np.int32)
    for w, s in enumerate(starts):
        end = min(s + block_size - 1, starts[w + 1] if w + 1 < len(starts) else len(ids))
        piece = ids[s:end]
        out[w, :len(piece)] = piece
        out[w, len(piece)] = cls_id
    return out, starts


def stack_windows(windows, max_windows):
    """(B, max_windows, T) int64 tensor of several files' windows; missing windows are all -1 (padding)."""
    T = windows[0].shape[1]
    x = np.full((len(windows), max_windows, T), PAD_TOKEN, dtype=np.int64)
    for i, w in enumerate(windows):
        x[i, :len(w)] = w
    return torch.from_numpy(x)


def windows_of(tokenized, block_size, max_windows, cls_id):
    """Windows of each tokenized file (the fixed cut)."""
    return [file_windows(ids, block_size, max_windows, cls_id)[0] for ids in tokenized]


def model_text(text, strip_comments=False):
    """What the classifier reads of a source file: without comments when it was trained so (cls_strip_comments)."""
    return _strip_comments(text) if strip_comments else text


ENCODE_CHUNK = 512  # files tokenized at a time: as Python ints a token takes ~29 bytes (measured), so the Hub's
# 100k contracts (~6k tokens each) at once would need ~17 GB before their windows (int32, ≤ max_windows each) are cut


def encode_files(tok, texts, block_size, max_windows, strip_comments=False, keep_ids=False):
    """Windows of each text (tokenized in parallel, ENCODE_CHUNK files at a time); with keep_ids, (windows, each
    file's tokens as an int32 array)."""
    windows, ids = [], []
    for i in range(0, len(texts), ENCODE_CHUNK):
        chunk = tok.encode_batch([model_text(t, strip_comments) for t in texts[i:i + ENCODE_CHUNK]])
        windows += windows_of(chunk, block_size, max_windows, tok.special_tokens[CLS_TOKEN])
        if keep_ids:
            ids += [np.asarray(x, dtype=np.int32) for x in chunk]
    return (windows, ids) if keep_ids else windows


# ----------------------------------------------------------------------------------------------------------------
# metrics: one place for training-time evaluation, bench.py and the tests


def f1_scores(y_true, y_pred):
    """Per-class precision/recall/F1 and micro/macro F1 of 0/1 arrays (N, n_classes). A class with no positives and
    no predictions scores 0 (scikit-learn's zero_division=0), so macro F1 is the mean over all classes."""
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    tp = (y_true & y_pred).sum(0)
    fp = (~y_true & y_pred).sum(0)
    fn = (y_true & ~y_pred).sum(0)
    div = lambda a, b: np.divide(a, b, out=np.zeros(len(a), dtype=float), where=b > 0)  # noqa: E731
    precision, recall = div(tp, tp + fp), div(tp, tp + fn)
    f1 = div(2 * tp, 2 * tp + fp + fn)
    per_class = {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                     "support": int(y_true[:, i].sum())} for i, c in enumerate(CLASSES)}
    micro = 2 * tp.sum() / max(1, 2 * tp.sum() + fp.sum() + fn.sum())
    return {"per_class": per_class, "micro_f1": float(micro), "macro_f1": float(f1.mean())}


def average_precision(y_true, probs):
    """Per-class average precision of probabilities (N, n_classes): the area under the precision-recall curve,
    sum over distinct cuts (highest first) of the recall gained times the precision there (scikit-learn's
    average_precision_score); None for a class without positives. Threshold-free: how well the files are ranked."""
    y_true, probs = np.asarray(y_true, bool), np.asarray(probs, dtype=np.float64)
    out = []
    for c in range(y_true.shape[1]):
        y, p = y_true[:, c], probs[:, c]
        if not y.any():
            out.append(None)
            continue
        order = np.argsort(-p, kind="stable")
        y, p = y[order], p[order]
        last = np.r_[np.flatnonzero(np.diff(p)), len(p) - 1]  # the last file of each run of equal probabilities
        tp = np.cumsum(y)[last]
        precision, recall = tp / (last + 1), tp / y.sum()
        out.append(float(np.sum(np.diff(np.r_[0.0, recall]) * precision)))
    return out


def split_digest(splits):
    """sha256 of the train and validation files (names and labels, in order): what a classifier was fitted and tuned
    on. Its checkpoint records it, so bench.py can tell when the labels it scores against (and fits TF-IDF on) are no
    longer those: a changed labels.json moves files, and even whole projects, between train and validation."""
    h = hashlib.sha256()
    for split in ("train", "val"):
        for e in splits[split]:
            h.update(json.dumps([split, e["name"], e["labels"]]).encode())
    return h.hexdigest()


def scores_by_group(y_true, ours, theirs, groups):
    """Per group (a project of a test split), its files and both predictions' micro F1 and macro F1 over the classes
    with positives in it (a class a project lacks would score 0 for both): whether a lead holds project by project
    or comes from the largest one."""
    y_true, ours, theirs, groups = (np.asarray(a) for a in (y_true, ours, theirs, groups))
    out = {}
    for g in sorted(set(groups.tolist())):
        rows = groups == g
        present = y_true[rows].any(0)
        a, b = f1_scores(y_true[rows], ours[rows]), f1_scores(y_true[rows], theirs[rows])
        macro = lambda s: float(np.mean([s["per_class"][c]["f1"] for c, p in zip(CLASSES, present) if p]))  # noqa: E731
        out[g] = {"n": int(rows.sum()), "micro_f1": a["micro_f1"], "baseline_tfidf_micro_f1": b["micro_f1"],
                  "macro_f1_present": macro(a), "baseline_tfidf_macro_f1_present": macro(b)}
    return out


def errors_by_class(y_true, pred, probs, names, limit=25):
    """Per class, the files a classifier got wrong: `missed` (positives not flagged, lowest probability first) and
    `false_alarms` (negatives flagged, highest first), each [name, probability] and at most `limit` long, with their
    full counts: where to look when a class's F1 moves, without rerunning the model."""
    y_true, pred, probs = np.asarray(y_true, bool), np.asarray(pred, bool), np.asarray(probs, dtype=np.float64)
    out = {}
    for c, name in enumerate(CLASSES):
        missed = np.flatnonzero(y_true[:, c] & ~pred[:, c])
        alarms = np.flatnonzero(~y_true[:, c] & pred[:, c])
        missed = missed[np.argsort(probs[missed, c], kind="stable")]
        alarms = alarms[np.argsort(-probs[alarms, c], kind="stable")]
        out[name] = {"n_missed": len(missed), "n_false_alarms": len(alarms),
                     "missed": [[names[i], round(float(probs[i, c]), 4)] for i in missed[:limit]],
                     "false_alarms": [[names[i], round(float(probs[i, c]), 4)] for i in alarms[:limit]]}
    return out


def source_of(example):
    """The file an example was made from: an injected variant ("pkg/path +kind") shares its original's source."""
    return example["name"].split(" +")[0]


def bootstrap_macro_f1(y_true, ours, theirs, groups, n_resamples=2000, seed=0):
    """How much of a macro-F1 difference a test split can tell from luck: resample its groups (a source file with its
    injected variants, near copies that are not independent evidence) with replacement, n_resamples times, and score
    both 0/1 predictions on each resample. Returns the 95% percentile intervals of ours, theirs and ours - theirs,
    and the share of resamples where ours scores higher (not a p-value). A rare class a resample misses scores 0 for
    both, as f1_scores has it, so each model's own interval leans low; their difference much less so."""
    y_true, ours, theirs = (np.asarray(a, bool) for a in (y_true, ours, theirs))
    _, group_ids = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.flatnonzero(group_ids == g) for g in range(group_ids.max() + 1)]
    rng = np.random.default_rng(seed)
    scores = np.empty((n_resamples, 2))
    for r in range(n_resamples):
        rows = np.concatenate([members[g] for g in rng.integers(len(members), size=len(members))])
        scores[r] = [f1_scores(y_true[rows], pred[rows])["macro_f1"] for pred in (ours, theirs)]
    ci = lambda x: [float(v) for v in np.percentile(x, [2.5, 97.5])]  # noqa: E731
    return {"ours_ci95": ci(scores[:, 0]), "theirs_ci95": ci(scores[:, 1]),
            "diff_ci95": ci(scores[:, 0] - scores[:, 1]),
            "share_ours_higher": float(np.mean(scores[:, 0] > scores[:, 1])), "n_groups": len(members),
            "n_resamples": n_resamples}


def decide(probs, thresholds):
    """0/1 labels (N, n_classes): classes at or above their threshold; a file with none gets the class closest to
    its threshold (every file has at least one label: a vulnerability class or `safe`)."""
    probs = np.asarray(probs, dtype=np.float64)
    thr = np.asarray(thresholds, dtype=np.float64)
    pred = probs >= thr
    ratio = probs / np.maximum(thr, 1e-12)
    none = ~pred.any(1)
    pred[none, ratio[none].argmax(1)] = True
    return pred


def tune_thresholds(y_true, probs, default=0.5):
    """Per class, the cut that maximises that class's F1 on these (validation) labels: midway between two
    neighbouring distinct probabilities; `default` for a class without positives there."""
    y_true, probs = np.asarray(y_true, bool), np.asarray(probs, dtype=np.float64)
    out = []
    for c in range(y_true.shape[1]):
        if not y_true[:, c].any():
            out.append(default)
            continue
        p = np.unique(probs[:, c])
        cuts = np.concatenate([(p[:-1] + p[1:]) / 2, [p[0]]]) if len(p) > 1 else p
        f1 = [2 * (y_true[:, c] & (probs[:, c] >= t)).sum() / (y_true[:, c].sum() + (probs[:, c] >= t).sum())
              for t in cuts]
        out.append(float(cuts[int(np.argmax(f1))]))
    return out


# ----------------------------------------------------------------------------------------------------------------
# batches for train.py


class ClassifySampler:
    """Training batches (x (B, max_windows, T) int64, y (B, n_classes) float) of labelled files, and the same state
    protocol as dataloader.BatchSampler: the global micro-batch counter is the whole state, so resume is exact and
    rank r of a DDP run draws micro-batches r, r + world_size, ...  Micro-batch k holds positions k*B .. k*B+B-1 of
    an endless sequence of epochs, each a permutation of the train files seeded by (seed, epoch)."""

    def __init__(self, splits, tok, block_size, batch_size, max_windows, device="cpu", seed=1337, rank=0,
                 world_size=1, dataset="", window_shift=False, strip_comments=False):
        if not splits["train"] or not splits["val"]:
            raise DataError(f"--dataset={dataset}: the train or validation split has no labelled files")
        self.splits, self.dataset = splits, dataset
        self.block_size, self.batch_size, self.max_windows = block_size, batch_size, max_windows
        self.device = torch.device(device)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.step = 0
        self.cls_id = tok.special_tokens[CLS_TOKEN]
        self.window_shift, self.strip_comments = window_shift, strip_comments
        self.split_digest = split_digest(splits)  # once: the splits never change during a run
        # window_shift: each training draw of a file cuts it at its own random offset, so the boundaries (and what
        # shares a window) change between epochs (train_ids keeps the train files' tokens for it); evaluation and
        # classify.py keep the fixed cut
        self.windows, self.train_ids = {}, None
        for s, ex in splits.items():
            texts = [e["text"] for e in ex]
            if window_shift and s == "train":
                self.windows[s], self.train_ids = encode_files(tok, texts, block_size, max_windows, strip_comments,
                                                               keep_ids=True)
            else:
                self.windows[s] = encode_files(tok, texts, block_size, max_windows, strip_comments)
        self.y = {s: targets(ex) for s, ex in splits.items()}
        # detector targets where every file has them (slither-labels); batches carry them once the model predicts them
        self.y_detectors = {s: targets(ex, "detectors", DETECTORS) for s, ex in splits.items()} \
            if has_detector_labels(splits) else None
        self.with_detectors = False
        self.meta = {"tokenizer": tok.name, "tokenizer_hash": tok.hash, "vocab_size": tok.n_vocab,
                     "dataset": dataset, "classes": list(CLASSES)}

    def pos_weight(self):
        """negatives / positives per class on the train split (1 for a class without positives); with detectors,
        theirs follow (capped at DETECTOR_POS_WEIGHT_CAP)."""
        w = pos_weights(self.y["train"])
        if self.with_detectors:
            w = torch.cat([w, pos_weights(self.y_detectors["train"], DETECTOR_POS_WEIGHT_CAP)])
        return w

    @functools.lru_cache(maxsize=4)
    def _order(self, epoch):
        n = len(self.windows["train"])
        return torch.randperm(n, generator=seeded_generator(self.seed, "train", epoch)).tolist()

    def batch(self, split, rows, shifts=None):
        windows = [self.windows[split][i] for i in rows] if shifts is None else \
            [file_windows(self.train_ids[i], self.block_size, self.max_windows, self.cls_id, k)[0]
             for i, k in zip(rows, shifts)]
        x = stack_windows(windows, self.max_windows)
        y = self.y[split][rows]
        if self.with_detectors:
            y = np.concatenate([y, self.y_detectors[split][rows]], 1)
        y = torch.from_numpy(y)
        return x.to(self.device), y.to(self.device)

    def get_batch(self, split="train"):
        index = self.step + self.rank
        self.step += self.world_size
        n, B = len(self.windows["train"]), self.batch_size
        rows = []
        for pos in range(index * B, index * B + B):
            epoch, i = divmod(pos, n)
            rows.append(self._order(epoch)[i])
        shifts = None
        if self.window_shift:  # a function of (seed, micro-batch index) only: resume stays exact
            g = seeded_generator(self.seed, "train", f"window-shift:{index}")
            shifts = torch.randint(0, self.block_size - 1, (B,), generator=g).tolist()
        return self.batch("train", rows, shifts)

    def state_dict(self):
        return {"step": self.step, "seed": self.seed, "world_size": self.world_size, "dataset": self.dataset,
                "window_shift": self.window_shift, "strip_comments": self.strip_comments, "task": "classify",
                "max_windows": self.max_windows, "split_digest": self.split_digest}

    def load_state_dict(self, state):
        if state.get("task") != "classify":
            raise DataError("the checkpoint is a language-model run: resume it without --task=classify, or start a "
                            "classifier with --init_from=PATH/model.pt")
        if (state.get("seed"), state.get("dataset")) != (self.seed, self.dataset):
            raise DataError(f"the checkpoint was trained with --seed={state.get('seed')} on "
                            f"--dataset={state.get('dataset')}; resume with the same seed and dataset")
        # each gives other batches (resume would not be exact), and max_windows other inputs for the same file
        for key in ("window_shift", "strip_comments", "max_windows"):
            if key in state and state[key] != getattr(self, key):
                raise DataError(f"the checkpoint was trained with --cls_{key}={state[key]}; resume with the same")
        if state.get("split_digest", self.split_digest) != self.split_digest:
            raise DataError("the train/validation files differ from those this run was trained on (another "
                            "--cls_val_fraction or --cls_extra_train, or changed labels): resume with the run's "
                            "--cls_val_fraction, --cls_extra_train and labels, or start a new --out_dir")
        if state["step"] % self.world_size:
            raise DataError(f"the checkpoint drew {state['step']} micro-batches, which {self.world_size} processes "
                            f"cannot split evenly")
        self.step = int(state["step"])


@torch.no_grad()
def predict(model, windows, ctx, batch_size=8, device="cpu", max_windows=None):
    """Probabilities (N, n_classes) and per-window logits (list of (W_i, n_classes)) of tokenized files."""
    was_training = model.training
    model.eval()
    probs, per_window = [], []
    W = max_windows or max(len(w) for w in windows)
    for i in range(0, len(windows), batch_size):
        chunk = windows[i:i + batch_size]
        with ctx:
            logits, wl = model.classify(stack_windows(chunk, W).to(device))
        probs.append(torch.sigmoid(logits.float()).cpu().numpy())
        per_window += [wl[j, :len(w)].float().cpu().numpy() for j, w in enumerate(chunk)]
    model.train(was_training)
    return np.concatenate(probs), per_window


def bce(probs, y, pos_weight):
    """Mean BCE of probabilities (what the training loss computes from logits), per-class pos_weight."""
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    return float(-(pos_weight * y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


class ClassifyTask:
    """What train.py's Trainer calls for task='classify': evaluation (BCE on a fixed slice of train and on val,
    thresholds tuned on val, val F1) and the classifier's entries of every checkpoint. Every rank evaluates the
    whole (small) validation split: the weights are identical, so the results are too, with no communication."""

    def __init__(self, sampler, cfg):
        self.sampler, self.cfg = sampler, cfg
        self.pos_weight = pos_weights(sampler.y["train"])  # the classes' (the reported losses are theirs)
        n = min(len(sampler.windows["train"]), cfg["eval_iters"] * cfg["batch_size"])
        self.train_rows = sampler._order(-1)[:n]  # a fixed slice of train files, its own stream
        self.thresholds = [0.5] * len(CLASSES)
        self.thresholds_iter = None  # the iteration whose weights they were tuned for

    def prepare_model(self, model):
        """Before the optimizer is built: the loss's class weights, and the frozen part (embeddings + the lowest
        cls_freeze_layers blocks: fewer weights to fit on a few hundred labelled files, and a cheaper backward)."""
        if model.config.n_detectors:
            if self.sampler.y_detectors is None:
                raise DataError(f"this classifier also predicts Slither detectors, which --dataset="
                                f"{self.cfg['dataset']} does not label: use --dataset=slither-labels")
            self.sampler.with_detectors = True
            model.cls_detector_weight = float(self.cfg["cls_detector_weight"])
        model.cls_pos_weight.copy_(self.sampler.pos_weight())
        k = self.cfg["cls_freeze_layers"]
        if k:
            frozen = [model.transformer.wte, model.transformer.wpe, *model.transformer.h[:k]]
            for p in (p for m in frozen if m is not None for p in m.parameters()):
                p.requires_grad_(False)

    def evaluate(self, model, ctx, iter_num, final=False):
        s, pw = self.sampler, self.pos_weight.numpy()
        kw = dict(batch_size=s.batch_size, device=s.device, max_windows=s.max_windows)
        train_p, _ = predict(model, [s.windows["train"][i] for i in self.train_rows], ctx, **kw)
        val_p, _ = predict(model, s.windows["val"], ctx, **kw)
        self.thresholds, self.thresholds_iter = tune_thresholds(s.y["val"], val_p), iter_num
        at_half = f1_scores(s.y["val"], decide(val_p, [0.5] * len(CLASSES)))
        tuned = f1_scores(s.y["val"], decide(val_p, self.thresholds))
        record = {"iter": iter_num, "train_loss": bce(train_p, s.y["train"][self.train_rows], pw),
                  "val_loss": bce(val_p, s.y["val"], pw), "val_macro_f1": tuned["macro_f1"],
                  "val_micro_f1": tuned["micro_f1"], "val_macro_f1_at_0.5": at_half["macro_f1"],
                  "thresholds": self.thresholds, "n_val": len(val_p)}
        if final:
            record["final"] = True
        line = (f"{'final ' if final else ''}eval {iter_num}: train loss {record['train_loss']:.4f}, val loss "
                f"{record['val_loss']:.4f}, val macro F1 {tuned['macro_f1']:.4f} (tuned thresholds; "
                f"{at_half['macro_f1']:.4f} at 0.5), micro F1 {tuned['micro_f1']:.4f}, {len(val_p)} val files")
        return record, line

    def restore(self, state):
        """A resumed run's thresholds (and the iteration they were tuned at) from its train_state.pt."""
        self.thresholds = list(state.get("thresholds", self.thresholds))
        self.thresholds_iter = state.get("thresholds_iter")

    def checkpoint_extra(self):
        """Plain values only (weights_only loading): what classify.py and bench.py need besides the weights."""
        return {"task": "classify", "classes": list(CLASSES), "thresholds": [float(t) for t in self.thresholds],
                "thresholds_iter": self.thresholds_iter,
                "max_windows": int(self.cfg["cls_max_windows"]), "dataset": self.cfg["dataset"],
                "val_fraction": float(self.cfg["cls_val_fraction"]),
                "strip_comments": bool(self.cfg["cls_strip_comments"]),
                "extra_train": bool(self.cfg["cls_extra_train"]),
                "split_digest": self.sampler.split_digest}


def make_sampler(cfg, dist_info, device):
    from tokenizer import TokenizerError, get_tokenizer
    try:
        tok = get_tokenizer()
    except TokenizerError as e:
        raise DataError(str(e)) from None
    if CLS_TOKEN not in tok.special_tokens:
        raise DataError(f"tokenizer {tok.name} has no {CLS_TOKEN} token, which classification needs")
    splits = load_splits(cfg)
    if cfg["cls_detector_weight"] and not has_detector_labels(splits):  # before tokenizing every file
        raise DataError(f"--cls_detector_weight needs the Slither detectors behind each label, which --dataset="
                        f"{cfg['dataset']} does not have: use --dataset=slither-labels or --cls_detector_weight=0")
    return ClassifySampler(splits, tok, cfg["block_size"], cfg["batch_size"], cfg["cls_max_windows"],
                           device, cfg["seed"], dist_info.rank, dist_info.world_size, cfg["dataset"],
                           cfg["cls_window_shift"], cfg["cls_strip_comments"])


def is_classifier(ckpt):
    return isinstance(ckpt, dict) and ckpt.get("task") == "classify" and ckpt["model_args"].get("n_classes", 0) > 0


def stale_thresholds(ckpt):
    """Why a classifier's thresholds do not fit its weights, or None: a run stopped between evaluations saves its
    latest weights beside the thresholds tuned at the last evaluation (older checkpoints do not say: None)."""
    tuned, weights = ckpt.get("thresholds_iter"), ckpt.get("iter_num")
    if tuned is None or tuned == weights:
        return None
    return (f"its thresholds were tuned at iter {tuned} but its weights are from iter {weights} (the run stopped "
            f"between evaluations): finish it with --init_from=resume, which tunes them on the final weights")


# ----------------------------------------------------------------------------------------------------------------
# baselines (bench.py), on the same splits and with thresholds tuned on the same validation files


def majority_baseline(splits):
    """Every test file gets the train split's most frequent label set."""
    from collections import Counter
    common = Counter(tuple(e["labels"]) for e in splits["train"]).most_common(1)[0][0]
    return np.repeat(targets([{"labels": list(common)}]), len(splits["test"]), axis=0)


CODE_TOKEN = r"[A-Za-z_$][\w$]*|\d+|[^\s\w]"  # identifiers, numbers, single punctuation characters


def tfidf_baseline(splits, cs=(1.0, 10.0, 100.0)):
    """TF-IDF over code-token 1-3-grams + one-vs-rest logistic regression (class_weight balanced) fitted on the train
    split, C picked and per-class thresholds tuned on the validation split. Returns (predict, info): predict(examples)
    gives their (0/1 predictions, probabilities), so one fit serves every test split of the same train/val."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(token_pattern=CODE_TOKEN, lowercase=False, ngram_range=(1, 3), sublinear_tf=True,
                          min_df=2, max_features=200_000)
    X = {s: (vec.fit_transform if s == "train" else vec.transform)([e["text"] for e in splits[s]])
         for s in ("train", "val")}
    y = {s: targets(splits[s]) for s in X}

    def fit(c):
        def one(k):  # a class without both labels in train: a constant, its train frequency
            if len(np.unique(y["train"][:, k])) < 2:
                return lambda m: np.full(m.shape[0], y["train"][0, k])
            lr = LogisticRegression(C=c, class_weight="balanced", max_iter=3000).fit(X["train"], y["train"][:, k])
            return lambda m: lr.predict_proba(m)[:, 1]
        models = [one(k) for k in range(len(CLASSES))]
        return lambda m: np.stack([f(m) for f in models], 1)

    best = None
    for c in cs:
        predict_proba = fit(c)
        val_p = predict_proba(X["val"])
        thr = tune_thresholds(y["val"], val_p)
        score = f1_scores(y["val"], decide(val_p, thr))["macro_f1"]
        if best is None or score > best[0]:
            best = (score, c, thr, predict_proba)
    score, c, thr, predict_proba = best

    def predict(examples):
        probs = predict_proba(vec.transform([e["text"] for e in examples]))
        return decide(probs, thr), probs
    return predict, {"C": c, "val_macro_f1": score, "thresholds": thr, "features": len(vec.vocabulary_)}
