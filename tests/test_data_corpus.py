"""data/corpus.py, dedup.py, tokens.py, packages.py and data/solidity-packages/prepare.py: cleaning, dedup, split,
writing protocol, npm packages."""
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

from data import cleaning, corpus, dedup, packages, tokens

PKG_SCRIPT = "data/solidity-packages/prepare.py"


def run_packages(root, out, *extra):
    mod = load_script(PKG_SCRIPT)
    mod.main(["--packages", str(root / "packages.json"), "--cache_dir", str(root / "cache"), "--out_dir", str(out),
              "--held_out_dir", str(root / "held-out"), "--quiet", *extra])
    return json.loads((out / "meta.json").read_text())


# ------------------------------------------------------------------------------------------------ unit
def sig(text):
    return dedup.signature(dedup.shingle_hashes(text), 128)


def test_strip_comments_keeps_strings_and_code():
    src = ('// SPDX-License-Identifier: MIT\npragma solidity ^0.8.0;\n/// @notice doc\n/**\n * @dev block\n */\n'
           'contract A {\n    string s = "http://x.org /* not a comment */"; // trailing\n'
           "    uint x = 1; /* inline */ uint y = 2;\n}\n")
    out = cleaning.clean(src, strip=True)
    assert "@notice" not in out and "@dev" not in out and "trailing" not in out and "inline" not in out
    assert 'string s = "http://x.org /* not a comment */";' in out
    assert "uint x = 1;  uint y = 2;" in out
    assert out.startswith("pragma solidity") and "\n\n" not in out
    kept = cleaning.clean(src)  # default keeps NatSpec
    assert "/// @notice doc" in kept and "@dev block" in kept


def test_clean_normalises_whitespace():
    assert cleaning.clean("\ufeffa;  \r\nb;\r\n\r\n\r\n\r\nc;") == "a;\nb;\n\nc;\n"
    assert dedup.digest("a  b\n c") == dedup.digest("a b c")


def test_near_dup_index_finds_near_copies_only():
    idx = dedup.NearDupIndex(num_perm=128, threshold=0.8)
    sigs = [sig(contract(i)) for i in range(50)]
    for s in sigs:
        assert idx.find(s) is None
        idx.add(s, 0)
    assert idx.find(sig(near_copy(contract(7)))) == 7
    assert idx.find(sig(contract(999))) is None


def test_cross_split_measure_counts_planted_pairs():
    store = dedup.SignatureStore(128)
    for i in range(20):
        store.add(sig(contract(i)), 0)
    store.add(sig(near_copy(contract(3))), 1)   # planted
    store.add(sig(contract(500)), 1)
    assert dedup.cross_near_dups(store, 0, 1, 0.8) == (1, 2)


def test_token_dtype_boundary():
    assert tokens.token_dtype(65536) == np.uint16
    assert tokens.token_dtype(65537) == np.uint32


# ------------------------------------------------------------------------------------------------ prepare
def test_packages_dedup_licence_and_group_split(tmp_path, stand_in):
    root = make_package_corpus(tmp_path / "src")
    meta = run_packages(root, tmp_path / "out")
    out = tmp_path / "out"
    d = meta["dedup"]
    assert d["removed"] == {"licence": 1, "exact_duplicate": 1, "near_duplicate": 2, "val_shares_train": 1}
    assert meta["licenses"]["dropped"] == {"GPL-3.0": 1}
    assert meta["licenses"]["by_source"]["alpha@1.0.0"]["kept"]["MIT"] == 7
    train, val = read_docs(out, "train", meta), read_docs(out, "val", meta)
    # packages in list order, files sorted by path; alpha's GPL file, beta's copies, gamma's near copy and
    # vendored copy of beta's B1 (same code, other comments: not gamma's own) are gone
    assert train == [cleaning.clean(t) for t in [contract(i) for i in range(6)] + [contract(101, licence="")]
                     + [contract(10 + i) for i in range(4)]]
    assert val == [cleaning.clean(contract(i)) for i in (20, 21, 22)]
    assert d["train_val_near_dup_rate"] == 0 and d["val_checked"] == 3
    # meta.json matches the files, as the reader checks
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 257
    for s in ("train", "val"):
        info = meta["splits"][s]
        assert (out / info["file"]).stat().st_size == info["tokens"] * 2
        assert info["tokens"] == info["bytes"] + info["documents"]  # byte tokenizer: one token per byte + eot
    assert tokens.read_meta(out)["splits"] == meta["splits"]
    assert meta["held_out"]["solidity-packages-val"]["documents"] == 3
    assert meta["held_out"]["slither-eval"].startswith("missing (not excluded)")


def test_rerun_is_idempotent_and_does_not_refetch(tmp_path, stand_in, monkeypatch):
    root = make_package_corpus(tmp_path / "src")
    out = tmp_path / "out"
    run_packages(root, out, "--workers", "0")             # in-process
    before = {p: (out / p).read_bytes() for p in ("train.bin", "val.bin", "meta.json")}
    calls = []
    monkeypatch.setattr(packages.subprocess, "run", lambda *a, **k: calls.append(a))
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
        packages.fetch_package(pkg, tmp_path, npm="npm-that-does-not-exist")
    assert "npm is not installed" in str(e.value) and "\n" not in str(e.value)


def test_integrity_mismatch_is_refused(tmp_path):
    t = make_tarball(tmp_path / packages.tarball_name("x", "1.0.0"), "x", "1.0.0", {"A.sol": contract(1)})
    with pytest.raises(SystemExit, match="does not match the integrity"):
        packages.fetch_package({"name": "x", "version": "1.0.0", "integrity": "sha512-AAAA"}, t.parent)


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_npm_pack_fetches_a_local_package(tmp_path, stand_in):
    """The real `npm pack` path, offline: local package folders as the spec."""
    specs = []
    for name, files in (("@test/pkg", {"A.sol": contract(1, licence=""), "B.sol": contract(2)}),
                        ("@test/val", {"C.sol": contract(3)})):
        src = tmp_path / name.replace("/", "_")
        (src / "contracts").mkdir(parents=True)
        (src / "package.json").write_text(json.dumps({"name": name, "version": "1.2.3", "license": "MIT"}))
        for rel, text in files.items():
            (src / "contracts" / rel).write_text(text)
        specs.append({"name": name, "version": "1.2.3", "spec": str(src)})
    root = tmp_path / "src"
    root.mkdir()
    (root / "packages.json").write_text(json.dumps({"val_packages": ["@test/val"], "packages": specs}))
    meta = run_packages(root, tmp_path / "out", "--force")
    assert (root / "cache" / "test-pkg-1.2.3.tgz").exists() and (root / "cache" / "test-val-1.2.3.tgz").exists()
    assert meta["splits"]["train"]["documents"] == 2 and meta["splits"]["val"]["documents"] == 1
    assert meta["sources"][0]["integrity"].startswith("sha512-")


def test_reader_refuses_incomplete_output(tmp_path, stand_in):
    root = make_package_corpus(tmp_path / "src")
    out = tmp_path / "out"
    run_packages(root, out)
    with open(out / "train.bin", "ab") as f:
        f.write(b"\0\0")
    size = (out / "train.bin").stat().st_size
    with pytest.raises(tokens.MetaError) as e:
        tokens.read_meta(out)
    assert str(e.value) == (f"{out}/train.bin is incomplete or missing ({size} bytes, expected {size - 2}): "
                            f"run python data/out/prepare.py")


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
    assert tokens.read_meta(out)["splits"] == before["splits"]


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

    monkeypatch.setattr(tokens.os, "replace", dies_on_bin)
    with pytest.raises(KeyboardInterrupt):
        run_packages(root, out, "--force", "--workers", "0")
    monkeypatch.undo()
    assert not (out / "meta.json").exists()
    with pytest.raises(tokens.MetaError, match="meta.json not found"):
        tokens.read_meta(out)


def test_iter_package_documents_matches_prepared_data(tmp_path, stand_in):
    root = make_package_corpus(tmp_path / "src")
    meta = run_packages(root, tmp_path / "out")
    args = dict(packages_file=root / "packages.json", cache_dir=root / "cache", held_out_dir=root / "held-out")
    train = list(packages.iter_package_documents("train", **args))
    val = list(packages.iter_package_documents("val", **args))
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
    assert first == next(t for _, _, t in packages.iter_package_documents(
        "val", packages_file=root / "packages.json", cache_dir=root / "cache", held_out_dir=root / "held-out"))


def test_npm_pack_ignores_scripts_and_bad_json_is_one_line(tmp_path):
    fake = tmp_path / "npm"
    fake.write_text("#!/bin/sh\necho \"$@\" > \"$(dirname \"$0\")/args\"\necho 'npm WARN not json'\n")
    fake.chmod(0o755)
    pkg = {"name": "x", "version": "1.0.0"}
    with pytest.raises(SystemExit) as exc:
        packages.fetch_package(pkg, tmp_path / "cache", npm=str(fake))
    assert str(exc.value.code).startswith("error: npm pack x@1.0.0 printed no JSON") and "\n" not in str(exc.value.code)
    assert "--ignore-scripts" in (tmp_path / "args").read_text().split()


def test_empty_val_split_is_refused_in_one_line(tmp_path, stand_in):
    """A val package whose files all copy training files leaves val empty: refused, nothing written."""
    root = tmp_path / "src"
    cache = root / "cache"
    pkgs = []
    for name, files in (("alpha", {"A.sol": contract(1), "B.sol": contract(2)}), ("gamma", {"G.sol": contract(1)})):
        t = make_tarball(cache / packages.tarball_name(name, "1.0.0"), name, "1.0.0", files)
        pkgs.append({"name": name, "version": "1.0.0", "integrity": packages.sri_sha512(t)})
    (root / "packages.json").write_text(json.dumps({"val_packages": ["gamma"], "packages": pkgs}))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        run_packages(root, out)
    assert str(e.value) == ("error: data/solidity-packages: the val split is empty (3 documents read, 2 kept, none in "
                            "val): packages.json's val_packages must have permissive files of their own; nothing was "
                            "written")
    assert sorted(p.name for p in out.iterdir()) == []


def test_failed_run_removes_its_temp_files_and_keeps_the_old_output(tmp_path, stand_in, monkeypatch):
    root = make_package_corpus(tmp_path / "src")
    out = tmp_path / "out"
    before = run_packages(root, out)
    files = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(text):
        raise RuntimeError("tokenizer crashed")
    monkeypatch.setattr(stand_in, "encode", broken)
    with pytest.raises(RuntimeError, match="tokenizer crashed"):
        run_packages(root, out, "--force", "--workers", "0")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files   # no *.bin.tmp left, old output untouched
    assert tokens.read_meta(out)["splits"] == before["splits"]


def test_non_utf8_files_are_counted(tmp_path, stand_in):
    root = make_package_corpus(tmp_path / "src")
    spec = json.loads((root / "packages.json").read_text())
    path = root / "cache" / packages.tarball_name("beta", "1.0.0")
    files = {f"contracts/B{i}.sol": contract(10 + i) for i in range(4)}
    files["contracts/Latin1.sol"] = contract(60).encode().replace(b"number", b"n\xe9mero")  # Latin-1 'é'
    make_tarball(path, "beta", "1.0.0", files)
    spec["packages"][1]["integrity"] = packages.sri_sha512(path)
    (root / "packages.json").write_text(json.dumps(spec))
    meta = run_packages(root, tmp_path / "out")
    assert meta["dedup"]["removed"]["not_utf8"] == 1
    assert meta["dedup"]["input_documents"] == 8 + 5 + 5   # alpha, beta (4 + Latin1), gamma


def test_minhash_scheme_is_pinned():
    """The signature uses datasketch's affine32 scheme (datasketch >= 2.0), whatever the version's default is."""
    from datasketch import MinHash

    shingles = dedup.shingle_hashes(contract(1))
    for scheme, same in (("affine32", True), ("legacy", False)):
        m = MinHash(num_perm=128, seed=1, scheme=scheme, hashfunc=int)
        m.update_batch(shingles.tolist())
        assert np.array_equal(np.asarray(m.hashvalues, dtype=np.uint32), dedup.signature(shingles, 128)) is same
