"""data/corpus.py and data/solidity-packages/prepare.py: cleaning, licences, dedup, split, writing protocol."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from test_data_fixtures import (REPO, ByteTokenizer, contract, load_script, make_package_corpus, make_tarball,
                                near_copy, read_docs, stand_in)  # noqa: F401 (stand_in is a fixture)

from data import corpus

PKG_SCRIPT = "data/solidity-packages/prepare.py"


def run_packages(root, out, *extra):
    mod = load_script(PKG_SCRIPT)
    mod.main(["--packages", str(root / "packages.json"), "--cache_dir", str(root / "cache"), "--out_dir", str(out),
              "--quiet", *extra])
    return json.loads((out / "meta.json").read_text())


# ------------------------------------------------------------------------------------------------ unit
@pytest.mark.parametrize("expr,ok", [("MIT", True), ("Apache-2.0", True), ("Apache 2.0", True), ("ISC", True),
                                     ("BSD-3-Clause", True), ("Unlicense", True), ("CC0-1.0", True),
                                     ("MIT OR Apache-2.0", True), ("(GPL-3.0 OR MIT)", True),
                                     ("MIT AND GPL-3.0", False), ("GPL-3.0", False), ("AGPL-3.0-only", False),
                                     ("BUSL-1.1", False), ("UNLICENSED", False), (None, False)])
def test_licence_expressions(expr, ok):
    assert corpus.is_permissive(expr) is ok


def test_licence_header_beats_package_licence():
    assert corpus.licence_of("// SPDX-License-Identifier: GPL-3.0\ncontract A {}", "MIT") == "GPL-3.0"
    assert corpus.licence_of("/* SPDX-License-Identifier: MIT */\ncontract A {}", None) == "MIT"
    assert corpus.licence_of("contract A {}", "ISC") == "ISC"


def test_strip_comments_keeps_strings_and_code():
    src = ('// SPDX-License-Identifier: MIT\npragma solidity ^0.8.0;\n/// @notice doc\n/**\n * @dev block\n */\n'
           'contract A {\n    string s = "http://x.org /* not a comment */"; // trailing\n'
           "    uint x = 1; /* inline */ uint y = 2;\n}\n")
    out = corpus.clean(src, strip=True)
    assert "@notice" not in out and "@dev" not in out and "trailing" not in out and "inline" not in out
    assert 'string s = "http://x.org /* not a comment */";' in out
    assert "uint x = 1;  uint y = 2;" in out
    assert out.startswith("pragma solidity") and "\n\n" not in out
    kept = corpus.clean(src)  # default keeps NatSpec
    assert "/// @notice doc" in kept and "@dev block" in kept


def test_clean_normalises_whitespace():
    assert corpus.clean("\ufeffa;  \r\nb;\r\n\r\n\r\n\r\nc;") == "a;\nb;\n\nc;\n"
    assert corpus.digest("a  b\n c") == corpus.digest("a b c")


def test_near_dup_index_finds_near_copies_only():
    idx = corpus.NearDupIndex(num_perm=128, threshold=0.8)
    sigs = [corpus.signature(contract(i), 128) for i in range(50)]
    for s in sigs:
        assert idx.find(s) is None
        idx.add(s, 0)
    assert idx.find(corpus.signature(near_copy(contract(7)), 128)) == 7
    assert idx.find(corpus.signature(contract(999), 128)) is None


def test_cross_split_measure_counts_planted_pairs():
    store = corpus.SignatureStore(128)
    for i in range(20):
        store.add(corpus.signature(contract(i), 128), 0)
    store.add(corpus.signature(near_copy(contract(3)), 128), 1)   # planted
    store.add(corpus.signature(contract(500), 128), 1)
    assert corpus.cross_near_dups(store, 0, 1, 0.8) == (1, 2)


def test_token_dtype_boundary():
    assert corpus.token_dtype(65536) == np.uint16
    assert corpus.token_dtype(65537) == np.uint32


# ------------------------------------------------------------------------------------------------ prepare
def test_packages_dedup_licence_and_group_split(tmp_path, stand_in):
    root = make_package_corpus(tmp_path / "src")
    meta = run_packages(root, tmp_path / "out")
    out = tmp_path / "out"
    d = meta["dedup"]
    assert d["removed"] == {"licence": 1, "exact_duplicate": 1, "near_duplicate": 2}
    assert meta["licenses"]["dropped"] == {"GPL-3.0": 1}
    assert meta["licenses"]["by_source"]["alpha@1.0.0"]["kept"]["MIT"] == 7
    train, val = read_docs(out, "train", meta), read_docs(out, "val", meta)
    assert len(train) == 6 + 1 + 4 and len(val) == 3
    assert all("contract C2" in t or "contract C2" not in t for t in val)
    assert {t.split("contract C")[1].split(" ")[0] for t in val} == {"20", "21", "22"}  # only gamma, its near copy gone
    assert d["train_val_near_dup_rate"] == 0 and d["val_checked"] == 3
    # meta.json matches the files, as the reader checks
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 257
    for s in ("train", "val"):
        info = meta["splits"][s]
        assert (out / info["file"]).stat().st_size == info["tokens"] * 2
        assert info["tokens"] == info["bytes"] + info["documents"]  # byte tokenizer: one token per byte + eot
    assert corpus.read_meta(out)["splits"] == meta["splits"]


def test_rerun_is_idempotent_and_does_not_refetch(tmp_path, stand_in, monkeypatch):
    root = make_package_corpus(tmp_path / "src")
    out = tmp_path / "out"
    run_packages(root, out, "--workers", "0")             # in-process
    before = {p: (out / p).read_bytes() for p in ("train.bin", "val.bin", "meta.json")}
    calls = []
    monkeypatch.setattr(corpus.subprocess, "run", lambda *a, **k: calls.append(a))
    run_packages(root, out)                               # up to date: nothing rewritten
    assert {p: (out / p).read_bytes() for p in before} == before
    run_packages(root, out, "--force", "--workers", "2")  # rebuilt in parallel: identical tokens
    for p in ("train.bin", "val.bin"):
        assert (out / p).read_bytes() == before[p]
    assert calls == []                                    # the cache served every package


def test_strip_comments_option_changes_output(tmp_path, stand_in):
    root = make_package_corpus(tmp_path / "src")
    meta = run_packages(root, tmp_path / "out", "--strip_comments")
    docs = read_docs(tmp_path / "out", "train", meta)
    assert docs and not any("//" in t or "@notice" in t for t in docs)
    assert meta["options"]["strip_comments"] is True


def test_uint32_when_vocab_exceeds_uint16(tmp_path, monkeypatch):
    tok = ByteTokenizer(n_vocab=70000)
    monkeypatch.setattr(corpus, "load_tokenizer", lambda name=None: tok)
    root = make_package_corpus(tmp_path / "src")
    meta = run_packages(root, tmp_path / "out")
    assert meta["dtype"] == "uint32"
    arr = np.fromfile(tmp_path / "out" / "train.bin", dtype=np.uint32)
    assert arr.size == meta["splits"]["train"]["tokens"] and (arr == 69999).sum() == meta["splits"]["train"]["documents"]


def test_bad_arguments_are_one_line_errors(tmp_path, stand_in, capsys):
    mod = load_script(PKG_SCRIPT)
    with pytest.raises(SystemExit) as e:
        mod.main(["--near_threshold", "1.5", "--out_dir", str(tmp_path)])
    assert str(e.value) == "error: --near_threshold must be in (0, 1], got 1.5"
    with pytest.raises(SystemExit) as e:
        mod.main(["--bogus"])
    assert e.value.code == 2 and capsys.readouterr().err.strip().startswith("error: unrecognized arguments")


def test_missing_npm_is_a_clear_error(tmp_path):
    pkg = {"name": "nothere", "version": "1.0.0"}
    with pytest.raises(SystemExit) as e:
        corpus.fetch_package(pkg, tmp_path, npm="npm-that-does-not-exist")
    assert "npm is not installed" in str(e.value) and "\n" not in str(e.value)


def test_integrity_mismatch_is_refused(tmp_path):
    t = make_tarball(tmp_path / corpus.tarball_name("x", "1.0.0"), "x", "1.0.0", {"A.sol": contract(1)})
    with pytest.raises(SystemExit, match="does not match the integrity"):
        corpus.fetch_package({"name": "x", "version": "1.0.0", "integrity": "sha512-AAAA"}, t.parent)


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_npm_pack_fetches_a_local_package(tmp_path, stand_in):
    """The real `npm pack` path, offline: a local package folder as the spec."""
    src = tmp_path / "pkgsrc"
    (src / "contracts").mkdir(parents=True)
    (src / "package.json").write_text(json.dumps({"name": "@test/pkg", "version": "1.2.3", "license": "MIT"}))
    (src / "contracts" / "A.sol").write_text(contract(1, licence=""))
    (src / "contracts" / "B.sol").write_text(contract(2))
    root = tmp_path / "src"
    root.mkdir()
    spec = {"val_packages": [], "packages": [{"name": "@test/pkg", "version": "1.2.3", "spec": str(src)}]}
    (root / "packages.json").write_text(json.dumps(spec))
    meta = run_packages(root, tmp_path / "out", "--force")
    assert (root / "cache" / "test-pkg-1.2.3.tgz").exists()
    assert meta["splits"]["train"]["documents"] == 2 and meta["sources"][0]["integrity"].startswith("sha512-")


def test_reader_refuses_incomplete_output(tmp_path, stand_in):
    root = make_package_corpus(tmp_path / "src")
    out = tmp_path / "out"
    run_packages(root, out)
    with open(out / "train.bin", "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(SystemExit, match=r"data/out/train.bin is incomplete or missing .*: run python data/out/prepare.py"):
        corpus.read_meta(out)


KILL_SCRIPT = r"""
import sys, time
sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
from data import corpus
from test_data_fixtures import ByteTokenizer, load_script
class Slow(ByteTokenizer):
    def encode(self, text):
        time.sleep(0.2)
        return super().encode(text)
corpus.load_tokenizer = lambda name=None: Slow()
load_script("data/solidity-packages/prepare.py").main(sys.argv[1:])
"""


def test_killed_run_keeps_previous_output_usable(tmp_path, stand_in):
    """A kill during the long work (tokenisation) leaves the previous complete output as it was, still readable."""
    root = make_package_corpus(tmp_path / "src")
    out = tmp_path / "out"
    before = run_packages(root, out)                 # a complete earlier run
    script = tmp_path / "slow.py"
    script.write_text(KILL_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests")))
    proc = subprocess.Popen([sys.executable, str(script), "--packages", str(root / "packages.json"), "--cache_dir",
                             str(root / "cache"), "--out_dir", str(out), "--quiet", "--force", "--workers", "0"])
    try:
        deadline = time.time() + 30
        while not (out / "train.bin.tmp").exists():     # opened before the (slow) tokenisation starts
            assert time.time() < deadline and proc.poll() is None, "prepare never started writing"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert corpus.read_meta(out)["splits"] == before["splits"]


def test_kill_between_meta_delete_and_rename_leaves_no_meta(tmp_path, stand_in, monkeypatch):
    """Once the new .bin files replace the old ones, meta.json is gone until the new one is written."""
    root = make_package_corpus(tmp_path / "src")
    out = tmp_path / "out"
    run_packages(root, out)
    real_replace = os.replace

    def dies_on_bin(src, dst):
        if str(dst).endswith(".bin"):
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(corpus.os, "replace", dies_on_bin)
    with pytest.raises(KeyboardInterrupt):
        run_packages(root, out, "--force", "--workers", "0")
    monkeypatch.undo()
    assert not (out / "meta.json").exists()
    with pytest.raises(SystemExit, match="incomplete or missing"):
        corpus.read_meta(out)


def test_every_spdx_identifier_must_be_permissive():
    flattened = "// SPDX-License-Identifier: MIT\ncontract A {}\n// SPDX-License-Identifier: GPL-3.0\ncontract B {}\n"
    assert not corpus.licence_permissive(flattened, "MIT")
    assert corpus.licence_of(flattened, None) == "MIT AND GPL-3.0"
    both_mit = "// SPDX-License-Identifier: MIT\ncontract A {}\n// SPDX-License-Identifier: MIT\ncontract B {}\n"
    assert corpus.licence_permissive(both_mit, None) and corpus.licence_of(both_mit, None) == "MIT"
    either = "// SPDX-License-Identifier: MIT OR GPL-3.0\n// SPDX-License-Identifier: Apache-2.0\n"
    assert corpus.licence_permissive(either, None)
    assert corpus.licence_of(either, None) == "(MIT OR GPL-3.0) AND Apache-2.0"
    assert corpus.licence_permissive("contract A {}", "MIT") and not corpus.licence_permissive("contract A {}", None)


def test_iter_package_documents_matches_prepared_data(tmp_path, stand_in):
    root = make_package_corpus(tmp_path / "src")
    meta = run_packages(root, tmp_path / "out")
    args = dict(packages_file=root / "packages.json", cache_dir=root / "cache")
    train = list(corpus.iter_package_documents("train", **args))
    val = list(corpus.iter_package_documents("val", **args))
    assert [t for _, _, t in train] == read_docs(tmp_path / "out", "train", meta)
    assert [t for _, _, t in val] == read_docs(tmp_path / "out", "val", meta)
    assert {p for p, _, _ in val} == {"gamma@1.0.0"} and train[0][1] == "package/contracts/A0.sol"


def test_real_tokenizer_round_trip_when_available(tmp_path):
    """With the committed solgpt tokenizer, train.bin decodes back to the cleaned sources."""
    try:
        from tokenizer import get_tokenizer
        tok = get_tokenizer()
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"solgpt tokenizer not available: {e}")
    root = make_package_corpus(tmp_path / "src")
    meta = run_packages(root, tmp_path / "out")
    arr = np.fromfile(tmp_path / "out" / "val.bin", dtype=meta["dtype"])
    ends = np.flatnonzero(arr == tok.eot_token)
    assert len(ends) == meta["splits"]["val"]["documents"]
    first = tok.decode(arr[:ends[0]].tolist())
    assert first == next(t for _, _, t in corpus.iter_package_documents(
        "val", packages_file=root / "packages.json", cache_dir=root / "cache"))


def test_npm_pack_ignores_scripts_and_bad_json_is_one_line(tmp_path):
    fake = tmp_path / "npm"
    fake.write_text("#!/bin/sh\necho \"$@\" > \"$(dirname \"$0\")/args\"\necho 'npm WARN not json'\n")
    fake.chmod(0o755)
    pkg = {"name": "x", "version": "1.0.0"}
    with pytest.raises(SystemExit) as exc:
        corpus.fetch_package(pkg, tmp_path / "cache", npm=str(fake))
    assert str(exc.value.code).startswith("error: npm pack x@1.0.0 printed no JSON") and "\n" not in str(exc.value.code)
    assert "--ignore-scripts" in (tmp_path / "args").read_text().split()
