"""data/licences.py: SPDX headers and expressions (grammar, precedence, WITH, parentheses) -> permissive or not."""
import pytest

from test_data_fixtures import REPO  # noqa: F401 (puts the repository on sys.path)

from data import licences


@pytest.mark.parametrize("expr,ok", [
    ("MIT", True), ("Apache-2.0", True), ("Apache 2.0", True), ("MIT License", True), ("ISC", True),
    ("BSD-3-Clause", True), ("BSD-2-Clause", True), ("Unlicense", True), ("CC0-1.0", True),
    ("MIT OR Apache-2.0", True), ("(GPL-3.0 OR MIT)", True), ("mit or gpl-3.0", True),
    ("MIT AND GPL-3.0", False), ("GPL-3.0", False), ("AGPL-3.0-only", False), ("BUSL-1.1", False),
    ("UNLICENSED", False), (None, False), ("", False),
    # parentheses and precedence: AND binds tighter than OR
    ("GPL-3.0 AND (MIT OR Apache-2.0)", False),
    ("GPL-3.0 AND MIT OR Apache-2.0", True),          # (GPL-3.0 AND MIT) OR Apache-2.0
    ("MIT OR GPL-3.0 AND BUSL-1.1", True),            # MIT OR (GPL-3.0 AND BUSL-1.1)
    ("(MIT OR GPL-3.0) AND BUSL-1.1", False),
    ("((MIT))", True), ("MIT AND (Apache-2.0 OR (GPL-3.0 AND BUSL-1.1))", True),
    # WITH: an exception adds permissions to its licence, never makes a copyleft one permissive
    ("Apache-2.0 WITH LLVM-exception", True), ("GPL-2.0-or-later WITH Classpath-exception-2.0", False),
    ("GPL-3.0 WITH x OR MIT", True),
    # BSD-Protection is not a BSD licence: it restricts use
    ("BSD-Protection", False), ("BSD-Protection OR GPL-3.0", False),
    # not expressions: refused, never guessed
    ("MIT OR", False), ("(MIT", False), ("MIT)", False), ("AND MIT", False), ("MIT WITH", False),
    ("SEE LICENSE IN LICENSE", False),
])
def test_is_permissive(expr, ok):
    assert licences.is_permissive(expr) is ok


def test_parse_tree_has_spdx_precedence():
    assert licences.parse("A AND B OR C") == ("OR", ("AND", "a", "b"), "c")
    assert licences.parse("A OR B AND C") == ("OR", "a", ("AND", "b", "c"))
    assert licences.parse("A WITH E AND B") == ("AND", ("WITH", "a", "e"), "b")
    assert licences.parse("(A OR B) AND C") == ("AND", ("OR", "a", "b"), "c")
    assert licences.parse("GPL-2.0+") == "gpl-2.0"
    with pytest.raises(licences.SpdxSyntaxError, match="unbalanced"):
        licences.parse("(A OR B")


def test_header_stays_on_its_line_and_ends_at_a_comment():
    assert licences.spdx_expressions("// SPDX-License-Identifier:\npragma solidity ^0.8.0;\n") == []
    assert licences.spdx_expressions("// SPDX-License-Identifier:   \n// SPDX-License-Identifier: MIT\n") == ["MIT"]
    assert licences.spdx_expressions("// SPDX-License-Identifier: MIT // see LICENSE\n") == ["MIT"]
    assert licences.spdx_expressions("/* SPDX-License-Identifier: MIT OR Apache-2.0 */\n") == ["MIT OR Apache-2.0"]
    assert licences.licence_permissive("// SPDX-License-Identifier: MIT // note\ncontract A {}\n", None)
    # an empty header does not make the next line the expression: the package's licence decides
    assert licences.licence_permissive("// SPDX-License-Identifier:\npragma solidity ^0.8.0;\n", "MIT")
    assert not licences.licence_permissive("// SPDX-License-Identifier:\npragma solidity ^0.8.0;\n", "GPL-3.0")


def test_header_beats_package_licence():
    assert licences.licence_of("// SPDX-License-Identifier: GPL-3.0\ncontract A {}", "MIT") == "GPL-3.0"
    assert licences.licence_of("/* SPDX-License-Identifier: MIT */\ncontract A {}", None) == "MIT"
    assert licences.licence_of("contract A {}", "ISC") == "ISC"
    assert licences.licence_of("contract A {}", None) == "NOASSERTION"


def test_every_spdx_identifier_must_be_permissive():
    flattened = "// SPDX-License-Identifier: MIT\ncontract A {}\n// SPDX-License-Identifier: GPL-3.0\ncontract B {}\n"
    assert not licences.licence_permissive(flattened, "MIT")
    assert licences.licence_of(flattened, None) == "MIT AND GPL-3.0"
    both_mit = "// SPDX-License-Identifier: MIT\ncontract A {}\n// SPDX-License-Identifier: MIT\ncontract B {}\n"
    assert licences.licence_permissive(both_mit, None) and licences.licence_of(both_mit, None) == "MIT"
    either = "// SPDX-License-Identifier: MIT OR GPL-3.0\n// SPDX-License-Identifier: Apache-2.0\n"
    assert licences.licence_permissive(either, None)
    assert licences.licence_of(either, None) == "(MIT OR GPL-3.0) AND Apache-2.0"
    assert licences.licence_permissive("contract A {}", "MIT") and not licences.licence_permissive("contract A {}", None)
