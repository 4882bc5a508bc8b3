"""data/heldout.py: the held-out registry drops exact copies, near copies and files that contain a held-out file."""
import json

import numpy as np

from test_data_fixtures import contract, load_script, make_tarball, near_copy, read_docs, stand_in  # noqa: F401

from data import cleaning, heldout, packages, tokens


def registry(texts, tmp_path, name="solidity-packages-val"):
    path = heldout.part_path(tmp_path, name)
    heldout.write_part(path, texts, {"name": name, "source": "test"})
    return heldout.Registry.from_files([path])


def test_registry_finds_exact_near_and_containing_copies(tmp_path):
    held = contract(1)
    reg = registry([held, contract(2)], tmp_path)
    assert reg.match("\n" + held.replace("\n", "\r\n") + "  ") == "held_out_exact"   # whitespace differs only
    assert reg.match(held.replace("/// @notice", "// a comment the registry ignores\n/// @notice")) == "held_out_exact"
    assert reg.match(near_copy(held)) == "held_out_near"
    flattened = contract(10) + contract(11) + held + contract(12)    # Jaccard ~1/4, but held sits inside
    assert reg.match(flattened) == "held_out_contains"
    assert reg.match(contract(3)) is None
    assert reg.match(contract(10) + contract(11)) is None
    # a flattened file holding only half of a held-out file does not contain it
    half = "\n".join(held.split("\n")[: len(held.split("\n")) // 2])
    assert reg.match(contract(10) + half + contract(12)) is None
    assert reg.matching_ids(flattened + contract(2)) == {0, 1}


def test_small_held_out_files_are_matched_exactly_not_by_containment(tmp_path):
    snippet = "interface IThing {\n    function thing() external;\n}\n"    # fewer than SAMPLE shingles
    reg = registry([snippet], tmp_path)
    assert reg.match(snippet) == "held_out_exact"
    assert reg.match(contract(5) + snippet) is None


def test_part_file_round_trip_and_info(tmp_path):
    path = heldout.part_path(tmp_path, "slither-eval")
    info = heldout.write_part(path, [contract(1), contract(2)], {"name": "slither-eval", "source": "x"},
                              addresses=["0xa", "0xb"])
    assert heldout.read_part_info(path) == info and info["documents"] == 2
    assert heldout.part_array(path, "addresses").tolist() == ["0xa", "0xb"]
    reg = heldout.Registry.from_files([path])
    assert reg.parts["slither-eval"]["documents"] == 2 and len(reg) == 2
    assert heldout.read_part_info(tmp_path / "missing.npz") is None


def test_default_corpus_val_keeps_only_its_own_files(tmp_path, stand_in):
    """A val package that vendors a training file, or whose file a training file contains (flattened), loses
    that file to train: the training original is never dropped, and the registry's part is exactly val."""
    root = tmp_path / "src"
    cache = root / "cache"
    train_files = {"A.sol": contract(1), "B.sol": contract(2), "Flat.sol": contract(3) + contract(40) + contract(4)}
    val_files = {"G.sol": contract(30), "Lib.sol": contract(40),
                 "Vendored.sol": contract(1).replace("/// @notice", "\n".join(f"// vendored note {k} by team {k}"
                                                                               for k in range(40)) + "\n/// @notice")}
    pkgs = []
    for name, files in (("alpha", train_files), ("gamma", val_files)):
        t = make_tarball(cache / packages.tarball_name(name, "1.0.0"), name, "1.0.0", files)
        pkgs.append({"name": name, "version": "1.0.0", "integrity": packages.sri_sha512(t)})
    (root / "packages.json").write_text(json.dumps({"val_packages": ["gamma"], "packages": pkgs}))
    out, held = tmp_path / "out", tmp_path / "held-out"
    load_script("data/solidity-packages/prepare.py").main(
        ["--packages", str(root / "packages.json"), "--cache_dir", str(cache), "--out_dir", str(out),
         "--held_out_dir", str(held), "--quiet"])
    meta = tokens.read_meta(out)
    assert read_docs(out, "train", meta) == [cleaning.clean(train_files[f]) for f in ("A.sol", "B.sol", "Flat.sol")]
    assert read_docs(out, "val", meta) == [cleaning.clean(contract(30))]
    assert meta["dedup"]["removed"] == {"val_shares_train": 2}
    info = heldout.read_part_info(heldout.part_path(held, "solidity-packages-val"))
    assert info["documents"] == 1 and info["shares_train"] == 2
    assert np.array_equal(heldout.Registry.from_files([heldout.part_path(held, "solidity-packages-val")])
                          .index.store.signatures()[0], heldout.features(contract(30))[1])
