"""Licences: the SPDX-License-Identifier headers of a Solidity file and whether their expression is permissive.

An SPDX expression is parsed with its grammar (https://spdx.github.io/spdx-spec/v2.3/SPDX-license-expressions/):
WITH binds tightest, then AND, then OR; parentheses group. `X WITH exception` is as permissive as X (an exception
only adds permissions). Beyond the grammar, a few spellings seen in real headers are read as the id they mean:
lower-case operators, "MIT License", "Apache 2.0".
"""
from __future__ import annotations

import re

PERMISSIVE = {"mit", "mit-0", "apache-2.0", "isc", "0bsd", "unlicense", "cc0-1.0", "bsd-1-clause", "bsd-2-clause",
              "bsd-2-clause-patent", "bsd-3-clause", "bsd-3-clause-clear", "bsd-4-clause", "zlib", "bsl-1.0", "wtfpl"}

# `[ \t]*`, not `\s*`: an empty header must not swallow the next line ("SPDX-License-Identifier:\npragma ...").
_HEADER_RE = re.compile(r"SPDX-License-Identifier:[ \t]*([^\n\r]*)")
_TOKEN_RE = re.compile(r"\(|\)|[^\s()]+")
_OPERATORS = ("AND", "OR", "WITH")


class SpdxSyntaxError(ValueError):
    """The text is not an SPDX expression."""


def spdx_expressions(text: str) -> list[str]:
    """Every distinct SPDX-License-Identifier expression in a source file, in order (a flattened file has several).

    The header ends at the end of its line, at a comment's end (`*/`) or at a trailing comment (`MIT // note`)."""
    found = []
    for m in _HEADER_RE.finditer(text):
        expr = re.split(r"\*/|//", m.group(1))[0].strip().strip('"').strip()
        if expr and expr not in found:
            found.append(expr)
    return found


def _licence_id(words: list[str]) -> str:
    """'MIT', 'MIT License', 'Apache 2.0', 'GPL-2.0+' -> the lower-case SPDX id ('mit', 'apache-2.0', 'gpl-2.0')."""
    term = "-".join(words).lower().replace("_", "-")
    return term.removesuffix("-license").removesuffix("+")


def parse(expr: str):
    """The expression as a tree: a licence id (str), ("WITH", id, exception), ("AND", a, b) or ("OR", a, b).

    Raises SpdxSyntaxError when the text is not an expression."""
    tokens = _TOKEN_RE.findall(expr)
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def is_op(tok):
        return tok is not None and tok.upper() in _OPERATORS

    def simple():
        words = []
        while peek() not in (None, "(", ")") and not is_op(peek()):
            words.append(take())
        if not words:
            raise SpdxSyntaxError(f"expected a licence id at {' '.join(tokens[pos:]) or 'the end'!r} in {expr!r}")
        return _licence_id(words)

    def atom():
        if peek() == "(":
            take()
            node = disjunction()
            if peek() != ")":
                raise SpdxSyntaxError(f"unbalanced parenthesis in {expr!r}")
            take()
            return node
        node = simple()
        if is_op(peek()) and peek().upper() == "WITH":
            take()
            node = ("WITH", node, simple())
        return node

    def binary(op, operand):
        def rule():
            node = operand()
            while is_op(peek()) and peek().upper() == op:
                take()
                node = (op, node, operand())
            return node
        return rule

    conjunction = binary("AND", atom)
    disjunction = binary("OR", conjunction)
    tree = disjunction()
    if pos != len(tokens):
        raise SpdxSyntaxError(f"unexpected {tokens[pos]!r} in {expr!r}")
    return tree


def _permissive(node) -> bool:
    if isinstance(node, str):
        return node in PERMISSIVE
    op, a, b = node
    if op == "WITH":
        return _permissive(a)
    if op == "AND":
        return _permissive(a) and _permissive(b)
    return _permissive(a) or _permissive(b)


def is_permissive(expr: str | None) -> bool:
    """True when the expression grants permissive use: an OR needs one permissive side, an AND both.
    Missing or unparseable expressions are not permissive."""
    if not expr:
        return False
    try:
        return _permissive(parse(expr))
    except SpdxSyntaxError:
        return False


def licence_of(text: str, fallback: str | None) -> str:
    """The file's SPDX header(s) (several joined with AND), else the package's licence, else 'NOASSERTION'."""
    exprs = spdx_expressions(text)
    if len(exprs) > 1:
        return " AND ".join(f"({e})" if re.search(r"\s(OR|AND)\s", e, re.I) else e for e in exprs)
    return (exprs[0] if exprs else None) or fallback or "NOASSERTION"


def licence_permissive(text: str, fallback: str | None) -> bool:
    """Every SPDX expression in the file must be permissive (a flattened file mixes its sources' licences: one GPL
    part makes the whole file GPL); with none, the package's licence decides."""
    exprs = spdx_expressions(text)
    return all(is_permissive(e) for e in exprs) if exprs else is_permissive(fallback)
