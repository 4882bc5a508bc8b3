"""Shared fixtures of the data tests: a stand-in tokenizer, Solidity snippets, local tarballs and Parquet repos.

Imported by the other tests/test_data_*.py files.
"""
import hashlib
import importlib.util
import io
import json
import random
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from data import corpus, packages  # noqa: E402


class ByteTokenizer:
    """Byte-level stand-in with the tokenizer interface: ids 0-255 are bytes, then eot; n_vocab can be padded."""

    def __init__(self, n_vocab=257, name="bytes-test"):
        self.name, self.n_vocab, self.eot_token = name, n_vocab, n_vocab - 1
        self.hash = hashlib.sha256(f"{name}:{n_vocab}".encode()).hexdigest()
        self.special_tokens = {"<|endoftext|>": self.eot_token}

    def encode(self, text):
        return list(text.encode("utf-8"))

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts]

    def decode(self, ids):
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def contract(i: int, lines: int = 30, licence: str = "MIT", seed: int | None = None) -> str:
    """A distinct Solidity file: enough differing tokens that two indices are far from near duplicates."""
    rng = random.Random(i if seed is None else seed)
    body = "\n".join(f"    function f{i}_{k}(uint256 a{rng.randrange(10**6)}) external pure returns (uint256) "
                     f"{{ return a * {rng.randrange(10**9)} + {k}; }}" for k in range(lines))
    head = f"// SPDX-License-Identifier: {licence}\n" if licence else ""
    return (f"{head}pragma solidity ^0.8.20;\n\n/// @notice Contract number {i}\n"
            f"contract C{i} {{\n{body}\n}}\n")


def near_copy(text: str) -> str:
    """The same file with one function changed: Jaccard of 5-token shingles stays well above 0.8."""
    lines = text.split("\n")
    k = len(lines) // 2
    lines[k] = lines[k].replace("external", "public")
    return "\n".join(lines)


def make_tarball(path: Path, name: str, version: str, files: dict, licence="MIT") -> Path:
    """An npm-style tarball: package/package.json + package/<files>."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        items = {"package.json": json.dumps({"name": name, "version": version, "license": licence}), **files}
        for rel, text in items.items():
            data = text if isinstance(text, bytes) else text.encode()
            info = tarfile.TarInfo(f"package/{rel}")
            info.size, info.mtime = len(data), 0
            tf.addfile(info, io.BytesIO(data))
    return path


def make_package_corpus(root: Path) -> Path:
    """Cache + packages.json for three packages: 'alpha' and 'beta' train, 'gamma' val, with planted duplicates."""
    cache = root / "cache"
    a = {f"contracts/A{i}.sol": contract(i) for i in range(6)}
    a["contracts/Gpl.sol"] = contract(100, licence="GPL-3.0")
    a["contracts/NoHeader.sol"] = contract(101, licence="")          # package licence (MIT) applies
    b = {f"contracts/B{i}.sol": contract(10 + i) for i in range(4)}
    b["contracts/CopyA0.sol"] = "  " + contract(0).replace("\n", "\r\n")  # exact duplicate after normalisation
    b["contracts/NearA1.sol"] = near_copy(contract(1))              # near duplicate
    g = {f"contracts/G{i}.sol": contract(20 + i) for i in range(3)}
    g["contracts/NearB0.sol"] = near_copy(contract(10))             # a val file that nearly copies train
    g["contracts/VendoredB1.sol"] = vendored(contract(11))          # copies train too, but with its own comments
    pkgs = []
    for name, files in (("alpha", a), ("beta", b), ("gamma", g)):
        t = make_tarball(cache / packages.tarball_name(name, "1.0.0"), name, "1.0.0", files)
        pkgs.append({"name": name, "version": "1.0.0", "integrity": packages.sri_sha512(t)})
    spec = {"val_packages": ["gamma"], "packages": pkgs}
    (root / "packages.json").write_text(json.dumps(spec))
    return root


def vendored(text: str) -> str:
    """The file as another package vendors it: same code, its own long comments (Jaccard < 0.8 with comments)."""
    notes = "\n".join(f"/// @dev vendored note {k}: upstream commit {k * 7919} reviewed by team {k % 5}"
                      for k in range(40))
    return text.replace("/// @notice", notes + "\n/// @notice", 1)


def held_out_env(root: Path, monkeypatch) -> Path:
    """A package corpus standing in for the default one (the held-out registry's val part comes from it);
    returns the held-out folder to pass as --held_out_dir."""
    make_package_corpus(root)
    monkeypatch.setattr(packages, "PACKAGES_FILE", root / "packages.json")
    monkeypatch.setattr(packages, "TARBALL_DIR", root / "cache")
    return root / "held-out"


def load_script(rel: str):
    """Import a prepare.py as a module, so tests call its main() through the real code path."""
    path = REPO / rel
    spec = importlib.util.spec_from_file_location(f"prep_{path.parent.name.replace('-', '_')}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def stand_in(monkeypatch):
    """Make every prepare script use the byte tokenizer (the real one is another engineer's and may change)."""
    tok = ByteTokenizer()
    monkeypatch.setattr(corpus, "load_tokenizer", lambda name=None: tok)
    return tok


def read_docs(out_dir: Path, split: str, meta: dict) -> list[str]:
    import numpy as np
    arr = np.fromfile(out_dir / f"{split}.bin", dtype=meta["dtype"])
    eot = meta["eot_token"]
    cuts = np.flatnonzero(arr == eot)
    docs, start = [], 0
    for c in cuts:
        docs.append(bytes(arr[start:c].astype(np.uint8)).decode())
        start = c + 1
    return docs


