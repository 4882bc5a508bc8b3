"""codeeval.py scores, the NatSpec-to-body extraction (data/natspec/prepare.py), and the command end to end."""

import importlib.util
import json
from pathlib import Path

import pytest

import codeeval
import solsyntax
from code_fixtures import BODY, CONTRACT, PREFIX, SUFFIX, fixture_checkpoint

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("natspec_prepare", ROOT / "data" / "natspec" / "prepare.py")
natspec_prepare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(natspec_prepare)

ITEM = {"file": "fixture@1.0.0/package/A.sol", "prefix": PREFIX, "body": BODY, "suffix": SUFFIX}
NO_SOLC = codeeval.Compiler("", "", enabled=False)


def test_known_good_and_known_broken_completions():
    good = codeeval.score_function(ITEM, BODY, [BODY], NO_SOLC)
    assert good == {"syntax@1": True, "syntax@k": True, "compile@1": None, "exact@1": True, "edit_sim@1": 1.0}
    reformatted = codeeval.score_function(ITEM, " uint c = a + b; return c; ", [], NO_SOLC)
    assert reformatted["syntax@1"] and not reformatted["exact@1"] and reformatted["edit_sim@1"] == 1.0
    broken = "\n        uint c = a + ;\n        return c;\n    "  # 9 lexemes: the 10 of the original less "b"
    bad = codeeval.score_function(ITEM, broken, [broken, BODY], NO_SOLC)
    assert bad["syntax@1"] is False and bad["syntax@k"] is True and bad["compile@1"] is None  # no compiler here
    assert not bad["exact@1"] and bad["edit_sim@1"] == pytest.approx(1 - 1 / 10)
    unclosed = codeeval.score_function(ITEM, "\n        if (a > b) {\n", [], NO_SOLC)  # MISSING "}" node
    assert unclosed["syntax@1"] is False
    empty = codeeval.score_function(ITEM, "\n    ", [""], NO_SOLC)  # an empty body parses but proves nothing
    assert empty["syntax@1"] is False and empty["syntax@k"] is False
    summary = codeeval.summarize([good, bad, empty], 5, NO_SOLC.reason)
    assert summary["syntax@1"] == pytest.approx(1 / 3) and summary["syntax@5"] == pytest.approx(2 / 3)
    assert summary["compile@1"] == "not run (--solc=False)" and summary["exact@1"] == pytest.approx(1 / 3)


class StubCompiler:
    """compiler.compile_source's interface: ok unless the file says 'revert BAD'; records what it compiled."""

    def __init__(self):
        self.calls = []

    def compile_source(self, path, base_paths=()):
        text = Path(path).read_text()
        self.calls.append((Path(path).name, text))
        return type("CompileResult", (), {"ok": "revert BAD" not in text, "errors": []})()


def test_compile_rate_judges_completions_against_the_original(tmp_path):
    c = codeeval.Compiler("", "", enabled=False)
    c.compiler, c.reason, c.modules, c.original_ok = StubCompiler(), "", tmp_path, {}
    good = codeeval.score_function(ITEM, BODY, [], c)
    wrong = codeeval.score_function(ITEM, " revert BAD(); ", [], c)
    broken = codeeval.score_function(ITEM, " uint c = ; ", [], c)  # syntax fails: not even sent to solc
    assert (good["compile@1"], wrong["compile@1"], broken["compile@1"]) == (True, False, False)
    assert [name for name, _ in c.compiler.calls] == ["A.sol"] * 3  # the original once, then the two parsed ones
    assert c.compiler.calls[0][1] == CONTRACT and not (tmp_path / "fixture" / "A.sol").exists()  # put back
    c.original_ok = {ITEM["file"]: False}  # an original that does not compile here: no verdict on its completions
    assert codeeval.score_function(ITEM, BODY, [], c)["compile@1"] is None
    assert codeeval.summarize([good, wrong, broken], 5, "")["compile@1"] == pytest.approx(1 / 3)


def test_edit_distance_hand_computed():
    assert codeeval.edit_distance("kitten", "sitting") == 3
    assert codeeval.edit_distance("flaw", "lawn") == 2
    assert codeeval.edit_distance([], ["a", "b"]) == 2 and codeeval.edit_distance(["x"], []) == 1
    assert codeeval.lexemes("x += a[1];") == ["x", "+", "=", "a", "[", "1", "]", ";"]


NATSPEC_FIXTURE = """pragma solidity ^0.8.0;
contract C {
    /**
     * @notice one
     */
    function one() public { x = 1; }

    /// @notice two
    /// @param y the value
    function two(uint y) external returns (uint) {
        return y;
    }

    // a plain comment is not NatSpec
    function three() public { x = 3; }

    /// @notice empty body: nothing to write
    function four() public { }

    /// @notice separated from its function by code
    uint z;
    function five() public { x = 5; }

    /// @notice an interface function has no body
    function six() external;

    /// @dev modifiers count too
    modifier onlyOwner() { require(msg.sender == owner); _; }
}
"""


def test_natspec_functions_on_fixture():
    found = solsyntax.natspec_functions(NATSPEC_FIXTURE)
    assert [name for name, _, _ in found] == ["one", "two", "onlyOwner"]
    bodies = [NATSPEC_FIXTURE[a:b] for _, _, (a, b) in found]
    assert bodies == [" x = 1; ", "\n        return y;\n    ", " require(msg.sender == owner); _; "]
    starts = [NATSPEC_FIXTURE[s:s + 10] for _, s, _ in found]
    assert starts == ["/**\n     *", "/// @notic", "/// @dev m"]
    assert NATSPEC_FIXTURE[found[1][1]:].startswith("/// @notice two\n    /// @param y")  # both /// lines


def test_extract_keeps_the_package_split():
    docs = [("train", "p@1", "package/C.sol", NATSPEC_FIXTURE), ("val", "q@2", "package/A.sol", CONTRACT),
            ("val", "q@2", "package/none.sol", "contract N { function f() public { } }")]
    sets = natspec_prepare.extract(docs)
    assert [f["name"] for f in sets["train"]["functions"]] == ["one", "two", "onlyOwner"]
    assert list(sets["val"]["files"]) == ["q@2/package/A.sol"]  # files without NatSpec functions are not kept
    (fn,) = sets["val"]["functions"]
    text = sets["val"]["files"][fn["file"]]
    assert text[fn["body_start"]:fn["body_end"]] == BODY and fn["name"] == "add"


def test_eval_command_on_a_tiny_model(tmp_path, capsys):
    ckpt = fixture_checkpoint(tmp_path / "model.pt")
    sets = natspec_prepare.extract([("val", "fixture@1.0.0", "package/A.sol", CONTRACT)])
    (tmp_path / "test.json").write_text(json.dumps(sets["val"]))
    codeeval.main([f"--ckpt={ckpt}", f"--set={tmp_path / 'test.json'}", "--k=2", "--solc=False", "--device=cpu",
                   "--max_new_tokens=40", f"--out={tmp_path / 'r.json'}"])
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((tmp_path / "r.json").read_text())
    assert report["functions_in_set"] == 1 and report["left_out_unparsable_originals"] == 0
    for mode in ("fim", "l2r"):  # the model memorized this body both ways
        assert report[mode]["functions"] == 1 and report[mode]["syntax@1"] == 1.0 and report[mode]["exact@1"] == 1.0
        assert report[mode]["compile@1"] == "not run (--solc=False)"
    with pytest.raises(SystemExit, match="--modes must be"):
        codeeval.main([f"--ckpt={ckpt}", "--modes=fim,xyz"])
    with pytest.raises(SystemExit, match="run python data/natspec/prepare.py first"):
        codeeval.main([f"--ckpt={ckpt}", f"--set={tmp_path / 'missing.json'}"])
