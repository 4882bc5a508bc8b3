"""The held-out registry: evaluation documents that no language-model training set may contain.

Two parts, one .npz file each under data/held-out/ (a build cache, not committed: the Slither part alone holds
~27k contracts, ~20 MB of signatures):

  solidity-packages-val  the default corpus's val split (packages.json's val_packages, as prepare keeps them);
                         built from the npm tarballs by data/packages.py, refreshed when packages.json changes
  slither-eval           the validation and test contracts of slither-audited-smart-contracts' big-multilabel
                         and small-multilabel configs (what the vulnerability work evaluates on); built from the
                         Hub by data/slither.py

Every prepare.py loads the parts (see `default_parts`) and drops each TRAINING document that

  - is an exact copy of a held-out document (digest of the whitespace-normalised text),
  - is a near copy (MinHash Jaccard >= the prepare's --near_threshold, LSH with 4 rows per band: high recall), or
  - contains one (a flattened contract that pastes a held-out file in): at least CONTAINMENT of a bottom-k sample
    of the held-out file's shingles (the SAMPLE smallest shingle hashes) occur in the training document. Jaccard
    misses this: a file inside a ten times larger flattened one has Jaccard ~0.1.

Matching compares comment-stripped text, so a training set prepared with or without --strip_comments is checked
alike. Held-out files with fewer than SAMPLE distinct shingles (a few lines) are matched exactly and by Jaccard
only: containment of such a snippet says little, and would drop every file that repeats a common interface.
Mixtures (--dataset='a:0.7,b:0.3') are made of prepared datasets, each filtered here, and meta.json records which
parts each dataset was filtered against.
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Iterable

import numpy as np

from data.cleaning import clean
from data.dedup import MINHASH_SCHEME, SHINGLE, NearDupIndex, digest, shingle_hashes, signature

HELD_OUT_DIR = Path(__file__).resolve().parent / "held-out"
PART_NAMES = ("solidity-packages-val", "slither-eval")
FORMAT = "solgpt-held-out-v1"
NUM_PERM = 128
SAMPLE = 64
CONTAINMENT = 0.8


def exact_key(text: str) -> bytes:
    """The digest two documents share when they are exact copies as the registry compares them (comments and
    whitespace aside)."""
    return digest(clean(text, strip=True))


def features(text: str) -> tuple[bytes, np.ndarray, np.ndarray]:
    """(exact_key, MinHash signature, sorted shingle hashes) of a document as the registry compares it."""
    stripped = clean(text, strip=True)  # once for all three (exact_key's expression, without cleaning twice)
    shingles = shingle_hashes(stripped)
    return digest(stripped), signature(shingles, NUM_PERM), shingles


def part_path(held_out_dir: Path, name: str) -> Path:
    return Path(held_out_dir) / f"{name}.npz"


def part_arrays(texts: Iterable[str]) -> dict:
    """The registry's arrays for held-out texts, one row per text in order (a row's index is its id)."""
    digests, sigs, samples = [], [], []
    for text in texts:
        dig, sig, sh = features(text)
        digests.append(np.frombuffer(dig, dtype=np.uint8))
        sigs.append(sig)
        samples.append(sh[:SAMPLE] if len(sh) >= SAMPLE else np.empty(0, np.uint32))  # sorted: the bottom k
    return {"digests": np.array(digests, dtype=np.uint8).reshape(-1, 16),
            "signatures": np.array(sigs, dtype=np.uint32).reshape(-1, NUM_PERM),
            "sample_len": np.array([len(s) for s in samples], dtype=np.int32),
            "samples": np.concatenate(samples) if samples else np.empty(0, np.uint32)}


def write_part(path: Path, texts: Iterable[str], info: dict, **extra) -> dict:
    """Compute the features of the held-out texts and write them to path atomically; returns the part's info.
    extra: more arrays to store (lists are read after `texts` is consumed, so a generator may fill them)."""
    from common import atomic_write

    arrays = part_arrays(texts)
    info = {"format": FORMAT, "num_perm": NUM_PERM, "scheme": MINHASH_SCHEME, "shingle_tokens": SHINGLE,
            "sample": SAMPLE, **info, "documents": len(arrays["digests"])}
    arrays.update(info=np.array(json.dumps(info, sort_keys=True)), **{k: np.array(v) for k, v in extra.items()})

    def save(f):
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        f.write(buf.getvalue())
    atomic_write(path, save)
    return info


def read_part_info(path: Path) -> dict | None:
    """The info of a part file, or None when it is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            info = json.loads(str(z["info"]))
    except (OSError, ValueError, KeyError):
        return None
    return info if info.get("format") == FORMAT else None


def part_array(path: Path, name: str) -> np.ndarray:
    """An extra array stored with a part (e.g. the Slither part's contract addresses); empty when absent."""
    with np.load(path, allow_pickle=False) as z:
        return z[name] if name in z.files else np.empty(0)


class Registry:
    """Held-out documents: exact digests, a MinHash index and a containment index over bottom-k shingle samples.

    Ids are rows in load order, the same in all three indexes."""

    def __init__(self, parts: Iterable[tuple[dict, dict]] = (), near_threshold: float = 0.8):
        """parts: (info, arrays) pairs; see load() for files."""
        self.parts: dict[str, dict] = {}
        self.part_digests: dict[str, set[bytes]] = {}
        self._digest_ids: dict[bytes, int] = {}
        self.index = NearDupIndex(NUM_PERM, near_threshold, rows=4)   # 4 rows per band: high recall
        keys, owners, lengths = [], [], []
        for info, arrays in parts:
            base = self.index.store.n
            digests = [bytes(d) for d in arrays["digests"]]
            self.parts[info["name"]] = {k: info[k] for k in ("documents", "source", "sha256") if k in info}
            self.part_digests[info["name"]] = set(digests)
            for i, (dig, sig) in enumerate(zip(digests, arrays["signatures"])):
                self._digest_ids.setdefault(dig, base + i)
                self.index.add(sig)
            sample_len = arrays["sample_len"]
            keys.append(arrays["samples"])
            owners.append(np.repeat(np.arange(base, base + len(sample_len), dtype=np.int32), sample_len))
            lengths.append(sample_len)
        keys = np.concatenate(keys) if keys else np.empty(0, np.uint32)
        order = np.argsort(keys, kind="stable")
        self._keys = keys[order]
        self._owners = (np.concatenate(owners) if owners else np.empty(0, np.int32))[order]
        self._lengths = np.concatenate(lengths) if lengths else np.empty(0, np.int32)

    @classmethod
    def from_files(cls, paths: Iterable[Path], near_threshold: float = 0.8) -> "Registry":
        parts = []
        for path in paths:
            with np.load(path, allow_pickle=False) as z:
                info = json.loads(str(z["info"]))
                if (info.get("format"), info.get("num_perm"), info.get("scheme")) != (FORMAT, NUM_PERM, MINHASH_SCHEME):
                    raise ValueError(f"{path} was built by another version: delete it and rerun")
                arrays = {k: z[k] for k in ("digests", "signatures", "sample_len", "samples")}
            info["sha256"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            parts.append((info, arrays))
        return cls(parts, near_threshold)

    def __len__(self) -> int:
        return self.index.store.n

    def contained_ids(self, shingles: np.ndarray) -> np.ndarray:
        """Ids of the held-out documents that a document with these (sorted, distinct) shingle hashes contains."""
        if not len(self._keys):
            return np.empty(0, np.int64)
        lo = np.searchsorted(self._keys, shingles, "left")
        hi = np.searchsorted(self._keys, shingles, "right")
        n = hi - lo
        sel = n > 0
        starts, n = lo[sel], n[sel]
        idx = np.repeat(starts - np.cumsum(n) + n, n) + np.arange(n.sum())
        hits = np.bincount(self._owners[idx], minlength=len(self._lengths))
        return np.flatnonzero((hits >= CONTAINMENT * self._lengths) & (self._lengths > 0))

    def match(self, text: str) -> str | None:
        """'held_out_exact', 'held_out_near' or 'held_out_contains' when text must stay out of training, else None."""
        if not len(self):
            return None
        dig, sig, shingles = features(text)
        if dig in self._digest_ids:
            return "held_out_exact"
        if self.index.find(sig) is not None:
            return "held_out_near"
        if len(self.contained_ids(shingles)):
            return "held_out_contains"
        return None

    def matching_ids(self, text: str) -> set[int]:
        """Every held-out document that text copies, nearly copies or contains."""
        dig, sig, shingles = features(text)
        ids = set(self.index.matches(sig)[0].tolist()) | set(self.contained_ids(shingles).tolist())
        if dig in self._digest_ids:
            ids.add(self._digest_ids[dig])
        return ids

    def knows(self, text: str, part: str) -> bool:
        """Is text (compared as the registry compares) a document of that part?"""
        return exact_key(text) in self.part_digests.get(part, ())


def default_parts(held_out_dir: Path = HELD_OUT_DIR, *, hub: bool, local_packages: dict | None = None) -> dict:
    """{part name: path or None} for every part, building what can be built.

    The default corpus's val part is built (or refreshed) from the npm tarballs; the Slither part is used when
    present, else fetched from the Hub when `hub` (a script that can reach it), else None: missing, and said so.
    local_packages: packages_file/cache_dir for the val part (tests, offline copies).
    """
    from data import packages, slither

    out = {"solidity-packages-val": packages.held_out_part(held_out_dir, **(local_packages or {}))}
    path = part_path(held_out_dir, "slither-eval")
    if read_part_info(path) is None and hub:
        path = slither.held_out_part(held_out_dir)
    out["slither-eval"] = path if read_part_info(path) is not None else None
    return out


def load(parts: dict, near_threshold: float) -> tuple[Registry, dict]:
    """(Registry of the parts present, {part: its info, or why it is missing}) for prepare() and meta.json."""
    registry = Registry.from_files([p for p in parts.values() if p is not None], near_threshold)
    info = {name: registry.parts.get(name) or MISSING.get(name, "missing") for name in parts}
    for name, why in info.items():
        if isinstance(why, str):
            print(f"warning: held-out part {name} is {why}", file=sys.stderr)
    return registry, info


MISSING = {"slither-eval": "missing (not excluded): run python data/slither-audited-smart-contracts/prepare.py "
                           "where the Hugging Face Hub is reachable, then rerun this prepare"}
