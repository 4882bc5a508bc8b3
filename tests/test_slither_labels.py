"""data/slither-labels: the committed label file's schema and split, and SolidiFI-style bug injection."""
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest

import compiler
from compiler import inject, labels

ROOT = Path(__file__).resolve().parents[1]
LABELS = ROOT / "data" / "slither-labels" / "labels.json"
sys.path.insert(0, str(ROOT / "data" / "slither-labels"))
import prepare  # noqa: E402
from test_compiler import REENTRANT  # noqa: E402  (the one reentrant contract fixture)

needs_node = pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                                reason="node/npm are not on PATH: solc-js needs Node.js (https://nodejs.org)")

HOST = """// SPDX-License-Identifier: MIT
pragma solidity PRAGMA;
/* a brace in a comment: } */
interface IThing { function thing() external; }
contract Host {
    string internal s = "} not a brace";
    uint256 internal n;
    function set(uint256 v) public { if (v > 0) { n = v; } }
}
library L { function one() internal pure returns (uint256) { return 1; } }
"""


@pytest.fixture(scope="module", params=["labels.json", "labels_new_protocols.json", "labels_extra_train.json"])
def doc(request):
    """Each committed label file: the corpus's, the new-protocol test split's (prepare.py --new_protocols) and the
    extra training packages' (--extra_train)."""
    return json.loads((LABELS.parent / request.param).read_text())


# --------------------------------------------------------------------------------------------------- label file
def test_label_file_header():
    doc = json.loads(LABELS.read_text())
    assert doc["format"] == "solgpt-slither-labels-v1"
    assert doc["classes"] == ["access-control", "arithmetic", "other", "reentrancy", "safe", "unchecked-calls"]
    assert doc["class_of_detector"] == labels.CLASS_OF and len(doc["class_of_detector"]) == 38
    assert doc["split"]["by"] == "package"
    spec = json.loads((ROOT / "data" / "solidity-packages" / "packages.json").read_text())
    assert doc["split"]["held_out_packages"] == spec["val_packages"]


def test_label_file_entries(doc):
    held = set(doc["split"]["held_out_packages"])
    assert doc["files"], "the label file has no entries"
    keys = {"package", "path", "split", "kind", "sha256", "solc", "status", "detectors", "labels", "seconds"}
    for e in doc["files"]:
        assert keys <= set(e), e
        assert e["split"] == ("held_out" if e["package"].rsplit("@", 1)[0] in held else "train"), e
        assert e["kind"] in ("clean",) + inject.KINDS
        assert e["status"] in ("ok", "compile_error", "slither_error", "timeout")
        assert set(e["detectors"]) <= set(labels.DETECTORS), e
        assert len(e["sha256"]) == 64
        if e["status"] == "ok":
            assert e["labels"] == (sorted({labels.CLASS_OF[d] for d in e["detectors"]}) or ["safe"]), e
        else:
            assert e["labels"] is None and e["error"], e
        if e["kind"] != "clean":
            assert e["expected"] == inject.EXPECTED[e["kind"]]
            assert e["confirmed"] == (e["expected"] in e["detectors"])
    assert len({(e["package"], e["path"], e["kind"]) for e in doc["files"]}) == len(doc["files"])


def test_no_package_or_contract_on_both_sides(doc):
    sides = {}
    for e in doc["files"]:
        sides.setdefault(e["package"].rsplit("@", 1)[0], set()).add(e["split"])
    assert all(len(s) == 1 for s in sides.values()), sides
    clean = {e["sha256"]: e for e in doc["files"] if e["kind"] == "clean"}
    for e in doc["files"]:
        if e["kind"] != "clean" and e["source_sha256"] in clean:
            src = clean[e["source_sha256"]]
            assert (src["package"], src["path"], src["split"]) == (e["package"], e["path"], e["split"])


def test_new_protocols_are_outside_the_default_corpus_and_all_held_out():
    doc = json.loads((LABELS.parent / "labels_new_protocols.json").read_text())
    new = [p["name"] for p in json.loads(prepare.NEW_PROTOCOLS_FILE.read_text())["packages"]]
    assert doc["format"] == "solgpt-slither-labels-v1" and doc["split"]["held_out_packages"] == new
    corpus = json.loads((ROOT / "data" / "solidity-packages" / "packages.json").read_text())["packages"]
    import vuln
    assert not {vuln.project_of(p["name"]) for p in corpus} & {vuln.project_of(n) for n in new}
    assert {e["split"] for e in doc["files"]} == {"held_out"}
    assert {e["package"].rsplit("@", 1)[0] for e in doc["files"]} == set(new)
    assert {e["kind"] for e in doc["files"]} <= {"clean", *inject.BASE_KINDS}  # held-out style: no extra kind


def test_extra_train_packages_are_outside_the_corpus_and_the_test_splits_and_all_train():
    doc = json.loads((LABELS.parent / "labels_extra_train.json").read_text())
    extra = [p["name"] for p in json.loads(prepare.EXTRA_TRAIN_FILE.read_text())["packages"]]
    corpus = json.loads((ROOT / "data" / "solidity-packages" / "packages.json").read_text())["packages"]
    new = json.loads(prepare.NEW_PROTOCOLS_FILE.read_text())["packages"]
    import vuln
    assert not {vuln.project_of(p["name"]) for p in corpus + new} & {vuln.project_of(n) for n in extra}
    assert doc["split"]["held_out_packages"] == [] and {e["split"] for e in doc["files"]} == {"train"}
    assert {e["package"].rsplit("@", 1)[0] for e in doc["files"]} <= set(extra)
    others = [json.loads((LABELS.parent / f).read_text())["files"] for f in ("labels.json", "labels_new_protocols.json")]
    assert not {e["sha256"] for files in others for e in files} & {e["sha256"] for e in doc["files"]}
    # checked against every corpus file and every new-protocol file (those two label files' clean entries, and more)
    clean = sum(e["kind"] == "clean" for files in others for e in files)
    assert doc["left_out_as_leaks"]["checked_against"]["corpus and new-protocol files"] >= clean


def test_label_file_counts_match_entries(doc):
    for key, c in doc["counts"].items():
        split, side = key.split("/")
        es = [e for e in doc["files"] if e["split"] == split and (e["kind"] == "clean") == (side == "clean")]
        ok = [e for e in es if e["status"] == "ok"]
        assert c["files"] == len(es) and c["labelled"] == len(ok)
        assert c["classes"] == dict(Counter(x for e in ok for x in e["labels"]))


# --------------------------------------------------------------------------------------------------- injection
def test_contract_end_skips_strings_comments_interfaces_and_libraries():
    text = HOST.replace("PRAGMA", "^0.8.0")
    end = inject.contract_end(text)
    # the `}` closing `contract Host`: the one just before "\nlibrary L"
    assert end == text.index("}\nlibrary L")
    assert inject.contract_end("interface I { function f() external; }\nlibrary L {}\n") is None


def test_inject_places_snippet_before_the_contract_close():
    text = HOST.replace("PRAGMA", "^0.8.0")
    out, offset = inject.inject(text, "tx-origin", "0.8.37")
    assert offset == text.index("}\nlibrary L")
    assert out.startswith(text[:offset]) and out.endswith(text[offset:])
    owner = inject.pick_names(text, "tx-origin")["owner"]
    assert out[offset:].startswith(f"\n    address {owner};\n    function ")
    assert inject.inject(text, "overflow", "0.8.37") is None  # checked arithmetic since 0.8: no such bug
    with pytest.raises(ValueError):
        inject.snippet("nonsense", "0.8.37")


@needs_node
@pytest.mark.parametrize("version, pragma", [("0.4.26", "^0.4.24"), ("0.5.17", "^0.5.0"), ("0.6.12", "^0.6.0"),
                                             ("0.7.6", "^0.7.0"), ("0.8.37", "^0.8.0")])
def test_every_injection_compiles(tmp_path, version, pragma):
    text = HOST.replace("PRAGMA", pragma)
    kinds = []
    for kind in inject.KINDS:  # all applicable bugs into one file: one compile per compiler generation
        made = inject.inject(text, kind, version)
        if made:
            text, kinds = made[0], kinds + [kind]
    assert kinds == [k for k in inject.KINDS if k != "overflow" or version < "0.8"]
    (tmp_path / "Host.sol").write_text(text)
    result = compiler.compile_source(tmp_path / "Host.sol")
    assert result == compiler.CompileResult(ok=True, errors=[], version=version), result


@needs_node
def test_slither_confirms_an_injected_tx_origin(tmp_path):
    text = HOST.replace("PRAGMA", "^0.8.0")
    (tmp_path / "Host.sol").write_text(text)
    (tmp_path / "HostInj.sol").write_text(inject.inject(text, "tx-origin", "0.8.37")[0])
    assert labels.analyse("Host.sol", working_dir=tmp_path)["detectors"] == []
    assert labels.analyse("HostInj.sol", working_dir=tmp_path)["detectors"] == ["tx-origin"]


@needs_node
@pytest.mark.parametrize("kind", inject.EXTRA_KINDS)
def test_slither_confirms_the_extra_injections_alone(tmp_path, kind):
    text = HOST.replace("PRAGMA", "^0.6.0")
    (tmp_path / "HostInj.sol").write_text(inject.inject(text, kind, "0.6.12")[0])
    assert labels.analyse("HostInj.sol", working_dir=tmp_path)["detectors"] == [inject.EXPECTED[kind]]


# --------------------------------------------------------------------------------------------------- prepare helpers
def test_pick_dependency():
    versions = ["5.7.0", "4.9.6", "3.4.2"]
    assert prepare.pick_dependency(versions, "^5.1.0") == "5.7.0"
    assert prepare.pick_dependency(versions, "4.3.2") == "4.9.6"          # exact pin we lack: same major
    assert prepare.pick_dependency(versions, "^3.4.2-solc-0.7") == "3.4.2"
    assert prepare.pick_dependency(versions, None) == "5.7.0"             # no range: first listed
    assert prepare.pick_dependency(["1.1.2"], "github:foundry-rs/forge-std#v1.9.7") == "1.1.2"


def test_make_jobs_alternates_kinds_and_skips_overflow_on_08():
    files = [{"solc": "0.8.37", "n": i} for i in range(7)]
    kinds = [j["kind"] for j in prepare.make_jobs(files, inject_every=1, extra_every=0)]
    assert kinds[0::2] == ["clean"] * 7
    assert kinds[1::2] == ["reentrancy", "unchecked-send", "unchecked-call", "tx-origin", "timestamp",
                           "reentrancy", "unchecked-send"]
    assert [j["kind"] for j in prepare.make_jobs(files[:4], inject_every=2, extra_every=0)] == \
        ["clean", "reentrancy", "clean", "clean", "unchecked-send", "clean"]


def test_make_jobs_adds_extra_kinds_to_train_files_only_and_keeps_the_base_turns():
    files = [{"solc": "0.8.37", "split": "train", "n": i} for i in range(5)]
    kinds = [j["kind"] for j in prepare.make_jobs(files, inject_every=1, extra_every=2)]
    assert kinds == ["clean", "reentrancy", "divide-before-multiply", "clean", "unchecked-send",
                     "clean", "unchecked-call", "strict-equality", "clean", "tx-origin",
                     "clean", "timestamp", "divide-before-multiply"]
    base = [k for k in kinds if k not in inject.EXTRA_KINDS]  # the variants made before extra kinds existed
    assert base == [j["kind"] for j in prepare.make_jobs(files, inject_every=1, extra_every=0)]
    held = [{"solc": "0.7.6", "split": "held_out"}]
    assert [j["kind"] for j in prepare.make_jobs(held, inject_every=1, extra_every=1)] == ["clean", *inject.BASE_KINDS]


def test_round_robin():
    assert prepare.round_robin([[1, 2, 3], [4], [5, 6]]) == [1, 4, 5, 2, 6, 3]


def test_labelled_examples_rebuild_texts_and_check_hashes(tmp_path):
    import io
    import tarfile
    text = HOST.replace("PRAGMA", "^0.8.0")
    with tarfile.open(tmp_path / "acme-1.0.0.tgz", "w:gz") as tf:
        data = text.encode()
        info = tarfile.TarInfo("package/Host.sol")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    injected = inject.inject(text, "reentrancy", "0.8.37")[0]
    base = {"package": "acme@1.0.0", "path": "package/Host.sol", "split": "train", "solc": "0.8.37", "status": "ok"}
    entries = [{**base, "kind": "clean", "sha256": prepare.sha256(text), "detectors": [], "labels": ["safe"]},
               {**base, "kind": "reentrancy", "sha256": prepare.sha256(injected), "detectors": ["reentrancy-eth"],
                "labels": ["reentrancy"]},
               {**base, "kind": "clean", "split": "held_out", "status": "compile_error", "sha256": "0" * 64,
                "detectors": [], "labels": None}]
    (tmp_path / "labels.json").write_text(json.dumps({"files": entries}))
    got = list(prepare.labelled_examples("train", tmp_path / "labels.json", tmp_path))
    assert [(g["kind"], g["labels"], g["text"]) for g in got] == [("clean", ["safe"], text),
                                                                   ("reentrancy", ["reentrancy"], injected)]
    assert list(prepare.labelled_examples("held_out", tmp_path / "labels.json", tmp_path)) == []
    entries[1]["sha256"] = "f" * 64  # a label that no longer matches its code must not be served
    (tmp_path / "labels.json").write_text(json.dumps({"files": entries}))
    with pytest.raises(SystemExit) as e:
        list(prepare.labelled_examples(None, tmp_path / "labels.json", tmp_path))
    assert str(e.value.code) == ("error: acme@1.0.0 package/Host.sol (reentrancy) does not match labels.json's "
                                 "sha256: the tarball or compiler/inject.py changed; rerun this script")


def test_prepare_rejects_bad_arguments_in_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        prepare.main(["--workers", "0"])
    assert e.value.code == 2
    assert capsys.readouterr().err == ("error: --workers and --timeout_s must be >= 1, --inject_every and "
                                       "--extra_every >= 0 (see --help)\n")
    with pytest.raises(SystemExit) as e:
        prepare.main(["--extra_every", "-1"])
    assert e.value.code == 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        prepare.main(["--new_protocols", "--extra_train"])
    assert e.value.code == 2
    assert capsys.readouterr().err == ("error: --new_protocols and --extra_train label different package lists: run "
                                       "them one at a time (see --help)\n")


def _tarball(path, files: dict):
    import io
    import tarfile
    with tarfile.open(path, "w:gz") as tf:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


@needs_node
def test_prepare_end_to_end_on_two_tiny_packages(tmp_path):
    """A train package with a reentrant contract and a held-out package importing it through node_modules: labels,
    split, one injection per file confirmed by Slither, findings kept to the file they are in."""
    bank = REENTRANT
    vault = ('// SPDX-License-Identifier: MIT\npragma solidity ^0.8.0;\nimport "@acme/bank/Bank.sol";\n'
             "contract Vault is Bank {\n    uint256 public fee;\n    function setFee(uint256 f) external { fee = f; }\n}\n")
    _tarball(tmp_path / "acme-bank-1.0.0.tgz", {"Bank.sol": bank, "package.json": '{"name": "@acme/bank"}'})
    _tarball(tmp_path / "vault-2.0.0.tgz", {"Vault.sol": vault, "package.json": '{"name": "vault", "license": "MIT"}'})
    (tmp_path / "packages.json").write_text(json.dumps({"val_packages": ["vault"], "packages": [
        {"name": "@acme/bank", "version": "1.0.0"}, {"name": "vault", "version": "2.0.0"}]}))
    out = tmp_path / "labels.json"
    prepare.main(["--packages", str(tmp_path / "packages.json"), "--tarball_dir", str(tmp_path), "--cache_dir",
                  str(tmp_path / "cache"), "--out", str(out), "--workers", "1", "--held_out_dir", str(tmp_path / "ho")])
    doc = json.loads(out.read_text())
    got = {(e["package"], e["kind"]): (e["split"], e["status"], e["detectors"], e["labels"]) for e in doc["files"]}
    assert got == {
        ("@acme/bank@1.0.0", "clean"): ("train", "ok", ["reentrancy-eth"], ["reentrancy"]),
        ("@acme/bank@1.0.0", "reentrancy"): ("train", "ok", ["reentrancy-eth"], ["reentrancy"]),
        # a train file also gets an extra kind (the first train file: extra_every 2 counts from it)
        ("@acme/bank@1.0.0", "divide-before-multiply"): ("train", "ok", ["divide-before-multiply", "reentrancy-eth"],
                                                         ["arithmetic", "reentrancy"]),
        ("vault@2.0.0", "clean"): ("held_out", "ok", [], ["safe"]),  # Bank's bug is Bank's, not Vault's
        # a held-out file gets every base kind of bug its compiler allows (0.8: all but overflow), no extra kind
        ("vault@2.0.0", "unchecked-send"): ("held_out", "ok", ["arbitrary-send", "unchecked-send"],
                                            ["access-control", "unchecked-calls"]),
        ("vault@2.0.0", "reentrancy"): ("held_out", "ok", ["reentrancy-eth"], ["reentrancy"]),
        ("vault@2.0.0", "unchecked-call"): ("held_out", "ok", ["unchecked-lowlevel"], ["unchecked-calls"]),
        ("vault@2.0.0", "tx-origin"): ("held_out", "ok", ["tx-origin"], ["access-control"]),
        ("vault@2.0.0", "timestamp"): ("held_out", "ok", ["incorrect-equality", "weak-prng"], ["other"]),
    }
    assert doc["counts"]["held_out/clean"] == {"files": 1, "labelled": 1, "failed": {}, "classes": {"safe": 1}}
    assert doc["injection_confirmed"]["unchecked-send"] == "1/1"
    assert doc["counts"]["held_out/injected"]["files"] == 5
    # the examples reader rebuilds exactly the analysed texts
    texts = {(x["package"], x["kind"]): x["text"] for x in prepare.labelled_examples(None, out, tmp_path)}
    assert texts[("@acme/bank@1.0.0", "clean")] == bank
    assert "payable(msg.sender).send(1 ether);" in texts[("vault@2.0.0", "unchecked-send")]


def _label_listed(tmp_path, flag):
    """Run prepare.py with --new_protocols or --extra_train on tmp_path's packages.json and tarballs: (label file,
    its document, its sorted (package, path, kind, split) entries)."""
    out = tmp_path / f"labels{flag.replace('-', '_')}.json"
    prepare.main([flag, "--packages", str(tmp_path / "packages.json"), "--tarball_dir", str(tmp_path),
                  "--cache_dir", str(tmp_path / "cache"), "--out", str(out), "--workers", "1",
                  "--held_out_dir", str(tmp_path / "ho")])
    doc = json.loads(out.read_text())
    return out, doc, sorted((e["package"], e["path"], e["kind"], e["split"]) for e in doc["files"])


@needs_node
def test_prepare_new_protocols_labels_only_their_own_files(tmp_path, monkeypatch):
    """--new_protocols: the new packages' files only, every base kind injected (held-out style); a file that copies
    a corpus file is not theirs (dedup against the corpus) and the corpus's held-out registry is left alone."""
    escrow = ('// SPDX-License-Identifier: MIT\npragma solidity ^0.8.0;\n'
              "contract Escrow {\n    mapping(address => uint256) public held;\n"
              "    function put() external payable { held[msg.sender] += msg.value; }\n}\n")
    _tarball(tmp_path / "acme-bank-1.0.0.tgz", {"Bank.sol": REENTRANT, "package.json": '{"name": "@acme/bank"}'})
    _tarball(tmp_path / "newco-1.0.0.tgz", {"Escrow.sol": escrow, "vendor/Bank.sol": REENTRANT,
                                            "package.json": '{"name": "newco", "license": "MIT"}'})
    (tmp_path / "packages.json").write_text(json.dumps({"val_packages": [], "packages": [
        {"name": "@acme/bank", "version": "1.0.0"}]}))
    (tmp_path / "new.json").write_text(json.dumps({"packages": [{"name": "newco", "version": "1.0.0"}]}))
    monkeypatch.setattr(prepare, "NEW_PROTOCOLS_FILE", tmp_path / "new.json")
    out, doc, got = _label_listed(tmp_path, "--new_protocols")
    kinds = [k for k in inject.BASE_KINDS if k != "overflow"]  # 0.8: all but overflow
    assert got == sorted(("newco@1.0.0", "package/Escrow.sol", k, "held_out") for k in ["clean", *kinds])
    assert doc["split"]["held_out_packages"] == ["newco"]
    assert not (tmp_path / "ho").exists()  # the corpus's own registry part was not rebuilt for this list
    assert [x["kind"] for x in prepare.labelled_examples("held_out", out, tmp_path)][0] == "clean"


def _contract(name: str, n: int = 30) -> str:
    """A contract with enough distinct code for the registry's containment test (>= SAMPLE shingles)."""
    body = "\n".join(f"    function {name.lower()}{i}(uint256 a) external pure returns (uint256) {{ return a * {i} + "
                     f"{7 * i}; }}" for i in range(n))
    return f"// SPDX-License-Identifier: MIT\npragma solidity ^0.8.0;\ncontract {name} {{\n{body}\n}}\n"


def test_without_leaks_drops_copies_containers_contained_and_hub_contracts(tmp_path, capsys):
    """An extra training file must not be a test file, nor paste one in, nor be a library a test file pastes in,
    nor be a Hub validation/test contract (the registry's slither-eval part, where prepared)."""
    from data import heldout
    held, lib, hub = _contract("Held"), _contract("Lib"), _contract("Deployed")
    heldout.write_part(heldout.part_path(tmp_path, "slither-eval"), [hub], {"name": "slither-eval"})
    files = [{"name": n, "text": t} for n, t in [
        ("own", _contract("Own")), ("copy", held), ("near", held.replace("a * 3 + 21", "a * 3 + 22")),
        ("flattened", _contract("Before") + held), ("vendored", lib), ("hub", hub), ("other", _contract("Other"))]]
    kept, left_out, checked = prepare.without_leaks(files, [held, lib + _contract("Protocol")], tmp_path)
    assert [f["name"] for f in kept] == ["own", "other"] and left_out == 5
    assert checked == {"corpus and new-protocol files": 2, "slither-eval": 1} and not capsys.readouterr().err
    kept, _, checked = prepare.without_leaks(files, [held, lib + _contract("Protocol")], tmp_path / "no-hub")
    assert [f["name"] for f in kept] == ["own", "hub", "other"]  # unchecked, and said so
    assert capsys.readouterr().err.startswith("warning: held-out part slither-eval is missing (not excluded)")
    assert checked["slither-eval"].startswith("missing (not excluded)")


@needs_node
def test_prepare_extra_train_labels_their_own_files_as_train(tmp_path, monkeypatch):
    """--extra_train: the listed packages' own files, labelled like train files (one injected kind), split train;
    a copy of a new-protocol test file is left out, so is a file that pastes in a held-out file, and so is a copy
    of a corpus file (dedup). A listed package that the corpus has too is refused."""
    escrow = ('// SPDX-License-Identifier: MIT\npragma solidity ^0.8.0;\n'
              "contract Escrow {\n    mapping(address => uint256) public held;\n"
              "    function put() external payable { held[msg.sender] += msg.value; }\n}\n")
    pool = escrow.replace("Escrow", "Pool").replace("held", "shares")
    held = _contract("Held")  # a held-out file, long enough for containment
    _tarball(tmp_path / "acme-bank-1.0.0.tgz", {"Bank.sol": REENTRANT, "package.json": '{"name": "@acme/bank"}'})
    _tarball(tmp_path / "heldco-1.0.0.tgz", {"Held.sol": held, "package.json": '{"name": "heldco", "license": "MIT"}'})
    _tarball(tmp_path / "newco-1.0.0.tgz", {"Escrow.sol": escrow, "package.json": '{"name": "newco"}'})
    _tarball(tmp_path / "extraco-1.0.0.tgz", {"Pool.sol": pool, "vendor/Escrow.sol": escrow, "vendor/Bank.sol": REENTRANT,
                                              "Flat.sol": _contract("Before") + held,
                                              "package.json": '{"name": "extraco", "license": "MIT"}'})
    (tmp_path / "packages.json").write_text(json.dumps({"val_packages": ["heldco"], "packages": [
        {"name": "@acme/bank", "version": "1.0.0"}, {"name": "heldco", "version": "1.0.0"}]}))
    (tmp_path / "new.json").write_text(json.dumps({"packages": [{"name": "newco", "version": "1.0.0"}]}))
    (tmp_path / "extra.json").write_text(json.dumps({"packages": [{"name": "extraco", "version": "1.0.0"}]}))
    monkeypatch.setattr(prepare, "NEW_PROTOCOLS_FILE", tmp_path / "new.json")
    monkeypatch.setattr(prepare, "EXTRA_TRAIN_FILE", tmp_path / "extra.json")
    _, doc, got = _label_listed(tmp_path, "--extra_train")
    assert got == sorted(("extraco@1.0.0", "package/Pool.sol", k, "train")
                         for k in ("clean", inject.BASE_KINDS[0], inject.EXTRA_KINDS[0]))
    assert doc["split"]["held_out_packages"] == [] and doc["left_out_as_leaks"]["files"] == 2  # Escrow.sol, Flat.sol
    (tmp_path / "extra.json").write_text(json.dumps({"packages": [{"name": "heldco", "version": "1.0.0"}]}))
    with pytest.raises(SystemExit, match=r"^error: extra.json lists heldco, which the corpus has too: list packages "
                                         r"outside the corpus only$"):
        _label_listed(tmp_path, "--extra_train")
