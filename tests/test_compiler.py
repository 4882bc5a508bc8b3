"""compiler/: pragma -> solc-js version, the solc-compatible wrapper, compile_source, and Slither through it."""
import json
import shutil
import subprocess

import pytest

import compiler
from compiler import labels

needs_node = pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None,
                                reason="node/npm are not on PATH: solc-js needs Node.js (https://nodejs.org)")

REENTRANT = """// SPDX-License-Identifier: MIT
pragma solidity ^0.8.0;
contract Bank {
    mapping(address => uint256) public balances;
    function deposit() external payable { balances[msg.sender] += msg.value; }
    function withdraw() external {
        (bool ok, ) = msg.sender.call{value: balances[msg.sender]}("");
        require(ok);
        balances[msg.sender] = 0;
    }
}
"""
CLEAN = """// SPDX-License-Identifier: MIT
pragma solidity ^0.8.0;
contract Counter {
    uint256 public count;
    function increment() external { count += 1; }
}
"""


@pytest.mark.parametrize("pragma, expected", [
    ("^0.8.0", "0.8.37"),                 # newest pinned 0.8
    (">=0.6.0 <0.8.0", "0.7.6"),
    ("0.8.15", "0.8.15"),                 # exact pin outside the pinned set
    ("=0.5.16", "0.5.16"),
    (">=0.4.22 <0.6.0", "0.5.17"),
    ("^0.4.24", "0.4.26"),
    ("~0.7.1", "0.7.6"),
    (">0.7.0 <=0.7.5", "0.7.5"),
    ("^0.6", "0.6.12"),
    ("0.7.x", "0.7.6"),
    (">=0.4.22 <0.6.0 || ^0.7.0", "0.7.6"),
    (">= 0.5.0 < 0.6.0", "0.5.17"),       # spaces after operators
])
def test_pick_version(pragma, expected):
    assert compiler.pick_version(f"// SPDX-License-Identifier: MIT\npragma solidity {pragma};\ncontract A {{}}\n") \
        == expected


def test_pick_version_intersects_pragmas_and_ignores_commented_ones():
    src = "pragma solidity ^0.8.0;\n// pragma solidity ^0.4.0;\n  pragma solidity <0.8.20;\ncontract A {}\n"
    assert compiler.pick_version(src) == "0.8.19"
    assert compiler.pick_version("contract A {}") == "0.8.37"  # no pragma: newest pinned


def test_pick_version_unsatisfiable_is_one_line_error():
    with pytest.raises(SystemExit) as e:
        compiler.pick_version("pragma solidity ^0.9.0;")
    assert str(e.value.code) == ("error: no solc-js release from 0.4.11 to 0.8.37 satisfies `pragma solidity ^0.9.0`; "
                                 "fix the pragma")


def test_ensure_solc_rejects_unknown_version():
    with pytest.raises(SystemExit) as e:
        compiler.ensure_solc("0.8.99")
    assert str(e.value.code) == "error: solc 0.8.99 is not a known solc-js release; pick one of 0.4.11..0.8.37"


def test_pinned_table_is_the_package_json_aliases():
    deps = json.loads((compiler.HERE / "package.json").read_text())["dependencies"]
    assert compiler.PINNED == {"0.4": "0.4.26", "0.5": "0.5.17", "0.6": "0.6.12", "0.7": "0.7.6", "0.8": "0.8.37"}
    assert deps["solc-0.8"] == "npm:solc@0.8.37"
    lock = json.loads((compiler.HERE / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/solc-0.4"]["version"] == "0.4.26"


@needs_node
def test_wrapper_version_and_combined_json_shapes(tmp_path):
    """crytic-compile's contract: `--version` has the x.y.z; before 0.8 abi/devdoc are JSON *strings*."""
    for version, src in [("0.8.37", CLEAN), ("0.7.6", CLEAN.replace("^0.8.0", "^0.7.0"))]:
        solc = compiler.ensure_solc(version)
        out = subprocess.run([str(solc), "--version"], capture_output=True, text=True, check=True).stdout
        assert f"Version: {version}+" in out
        (tmp_path / "C.sol").write_text(src)
        r = subprocess.run([str(solc), "C.sol", "--combined-json",
                            "abi,ast,bin,bin-runtime,srcmap,srcmap-runtime,userdoc,devdoc,hashes",
                            "--allow-paths", "."], capture_output=True, text=True, cwd=tmp_path, check=True)
        j = json.loads(r.stdout)
        c = j["contracts"]["C.sol:Counter"]
        abi = json.loads(c["abi"]) if version < "0.8" else c["abi"]
        assert isinstance(c["abi"], str) == (version < "0.8")
        assert isinstance(c["devdoc"], str) == (version < "0.8")
        assert sorted(f["name"] for f in abi) == ["count", "increment"]
        assert c["hashes"] == {"count()": "06661abd", "increment()": "d09de08a"}
        assert c["bin"] and c["bin-runtime"]
        assert j["sourceList"] == ["C.sol"] and j["sources"]["C.sol"]["AST"]["nodeType"] == "SourceUnit"


@needs_node
def test_compile_source_resolves_node_modules_imports_and_reports_errors(tmp_path):
    lib = tmp_path / "root" / "node_modules" / "@acme" / "lib"
    lib.mkdir(parents=True)
    (lib / "Base.sol").write_text("pragma solidity ^0.8.0;\ncontract Base { uint256 internal x; }\n")
    app = tmp_path / "root" / "app"
    app.mkdir()
    (app / "App.sol").write_text('pragma solidity ^0.8.0;\nimport "@acme/lib/Base.sol";\n'
                                 "contract App is Base { function f() external { x = 1; } }\n")
    assert compiler.compile_source(app / "App.sol", base_paths=[tmp_path / "root"]) == \
        compiler.CompileResult(ok=True, errors=[], version="0.8.37")
    missing = compiler.compile_source(app / "App.sol")  # without the base path the import is not found
    assert not missing.ok and len(missing.errors) == 1 and missing.errors[0].startswith("ParserError: Source ")
    assert '"@acme/lib/Base.sol" not found' in missing.errors[0]
    (app / "Bad.sol").write_text("pragma solidity ^0.8.0;\ncontract Bad { function f() public { uint x = ; } }\n")
    bad = compiler.compile_source(app / "Bad.sol")
    assert not bad.ok and bad.errors[0].startswith("ParserError: Expected primary expression.")


@needs_node
def test_slither_labels_reentrancy_through_the_wrapper(tmp_path):
    (tmp_path / "Bank.sol").write_text(REENTRANT)
    (tmp_path / "Counter.sol").write_text(CLEAN)
    bank = labels.analyse("Bank.sol", working_dir=tmp_path)
    assert bank["status"] == "ok" and bank["solc"] == "0.8.37"
    assert bank["detectors"] == ["reentrancy-eth"]
    assert labels.classes_of(bank["detectors"]) == ["reentrancy"]
    counter = labels.analyse("Counter.sol", working_dir=tmp_path)
    assert (counter["status"], counter["detectors"], labels.classes_of(counter["detectors"])) == ("ok", [], ["safe"])


@needs_node
def test_findings_of_an_imported_file_are_not_the_importers(tmp_path):
    (tmp_path / "Bank.sol").write_text(REENTRANT)
    (tmp_path / "Child.sol").write_text('pragma solidity ^0.8.0;\nimport "./Bank.sol";\ncontract Child is Bank {}\n')
    child = labels.analyse("Child.sol", working_dir=tmp_path)
    assert (child["status"], child["detectors"]) == ("ok", [])


@needs_node
def test_analyse_records_a_compile_error(tmp_path):
    (tmp_path / "Bad.sol").write_text("pragma solidity ^0.8.0;\ncontract Bad { function f() public { uint x = ; } }\n")
    bad = labels.analyse("Bad.sol", working_dir=tmp_path)
    assert bad["status"] == "compile_error" and bad["detectors"] == []
    assert bad["error"] == "SlitherError: ParserError: Expected primary expression."


def test_error_line_picks_what_went_wrong():
    assert labels._first_line("Invalid compilation: \nUnknown file: src/A.sol\n  - Verify the path exists") == \
        "Invalid compilation: Unknown file: src/A.sol"
    assert labels._first_line("Invalid solc compilation Warning: x\nParserError: Expected ';'\n --> A.sol:1:1") == \
        "ParserError: Expected ';'"


def test_class_mapping():
    assert len(labels.DETECTORS) == 38 and len(set(labels.DETECTORS)) == 38
    expected = {"reentrancy-eth": "reentrancy", "reentrancy-no-eth": "reentrancy", "tx-origin": "access-control",
                "suicidal": "access-control", "arbitrary-send": "access-control", "unchecked-send": "unchecked-calls",
                "unchecked-lowlevel": "unchecked-calls", "unused-return": "unchecked-calls",
                "tautology": "arithmetic", "divide-before-multiply": "arithmetic", "locked-ether": "other",
                "weak-prng": "other", "name-reused": "other"}
    assert {d: labels.CLASS_OF[d] for d in expected} == expected
    assert labels.classes_of(["weak-prng", "tx-origin", "reentrancy-eth", "tx-origin"]) == \
        ["access-control", "other", "reentrancy"]
    assert labels.classes_of([]) == ["safe"]


def test_all_38_detectors_exist_in_installed_slither():
    names = {c.ARGUMENT for c in labels.detector_classes()}
    assert len(names) == 38 and "arbitrary-send-eth" in names and "arbitrary-send" not in names


@needs_node
def test_include_path_imports_reach_slither(tmp_path):
    """`import "src/Lib.sol"` found only through --include-path: crytic-compile cannot find "src/Lib.sol" from the
    working directory, so the wrapper renames the source to where it lies (AST included) and Slither still runs."""
    pkg = tmp_path / "node_modules" / "acme"
    (pkg / "src").mkdir(parents=True)
    (pkg / "src" / "Lib.sol").write_text("pragma solidity ^0.8.0;\ncontract Lib { uint256 internal x; }\n")
    (pkg / "src" / "App.sol").write_text(REENTRANT.replace("contract Bank {", 'import "src/Lib.sol";\n'
                                                                              "contract Bank is Lib {"))
    result = labels.analyse("node_modules/acme/src/App.sol", working_dir=tmp_path, include_paths=[pkg])
    assert (result["status"], result["detectors"]) == ("ok", ["reentrancy-eth"]), result
