"""Bug injection in the style of the SolidiFI benchmark: add a known-vulnerable snippet to a real contract.

    from compiler.inject import KINDS, inject
    text2, where = inject(text, "reentrancy", version="0.8.37")   # None when the file has no contract to host it

The snippet (state variables + one function, names suffixed `_solgpt_inj` so they cannot collide) goes just before
the closing brace of the file's last `contract` (not interface/library: those cannot hold state or bodies), a
position where a member declaration is always valid. Snippets follow SolidiFI's bug patterns, written for each
compiler generation (call syntax changed in 0.5 and 0.6, msg.sender stopped being payable in 0.8). Injection never
decides the label: the labeller runs Slither on the injected file and records what it finds (EXPECTED is what a
confirmed injection should add, used only to report how often Slither confirms each kind).
"""
from __future__ import annotations

import re

SUFFIX = "_solgpt_inj"
KINDS = ("reentrancy", "unchecked-send", "unchecked-call", "tx-origin", "timestamp", "overflow")
EXPECTED = {"reentrancy": "reentrancy-eth", "unchecked-send": "unchecked-send", "unchecked-call": "unchecked-lowlevel",
            "tx-origin": "tx-origin", "timestamp": "weak-prng", "overflow": "tautology"}


def _minor(version: str) -> int:
    return int(version.split(".")[1])


def snippet(kind: str, version: str) -> str | None:
    """Solidity source of one bug for this compiler version; None where the bug does not exist (overflow >= 0.8)."""
    m, s = _minor(version), SUFFIX
    if kind == "reentrancy":  # state written after an external call that sends ether (SolidiFI re_ent)
        if m >= 6:
            call = f"(bool success, ) = msg.sender.call{{value: balances{s}[msg.sender]}}(\"\");"
        elif m == 5:
            call = f"(bool success, ) = msg.sender.call.value(balances{s}[msg.sender])(\"\");"
        else:
            call = f"bool success = msg.sender.call.value(balances{s}[msg.sender])();"
        return (f"    mapping(address => uint256) balances{s};\n"
                f"    function withdrawBalance{s}() public {{\n"
                f"        {call}\n"
                f"        if (!success) {{ revert(); }}\n"
                f"        balances{s}[msg.sender] = 0;\n"
                f"    }}\n")
    if kind == "unchecked-send":  # send's false return ignored (SolidiFI unchk_send)
        to = "payable(msg.sender)" if m >= 8 else "msg.sender"
        return (f"    function bugUnchkSend{s}() public payable {{\n"
                f"        {to}.send(1 ether);\n"
                f"    }}\n")
    if kind == "unchecked-call":  # low-level call's success flag ignored (SolidiFI unchk_call)
        data = "()" if m < 5 else "(\"\")"
        return (f"    function bugUnchkCall{s}(address callee) public {{\n"
                f"        callee.call{data};\n"
                f"    }}\n")
    if kind == "tx-origin":  # authorisation through tx.origin (SolidiFI tx_origin)
        return (f"    address owner{s};\n"
                f"    function setOwnerTxorigin{s}(address newOwner) public {{\n"
                f"        require(tx.origin == owner{s});\n"
                f"        owner{s} = newOwner;\n"
                f"    }}\n")
    if kind == "timestamp":  # a winner decided by the block timestamp (SolidiFI tmstmp)
        return (f"    address winner{s};\n"
                f"    function playTmstmp{s}() public {{\n"
                f"        if (block.timestamp % 15 == 0) {{ winner{s} = msg.sender; }}\n"
                f"    }}\n")
    if kind == "overflow":  # unchecked subtraction guarded by an always-true check (SolidiFI intou)
        if m >= 8:
            return None
        return (f"    mapping(address => uint256) balancesIntou{s};\n"
                f"    function transferIntou{s}(address to, uint256 value) public returns (bool) {{\n"
                f"        require(balancesIntou{s}[msg.sender] - value >= 0);\n"
                f"        balancesIntou{s}[msg.sender] -= value;\n"
                f"        balancesIntou{s}[to] += value;\n"
                f"        return true;\n"
                f"    }}\n")
    raise ValueError(f"unknown injection kind {kind!r}; pick one of {KINDS}")


# Strings and comments are skipped when matching braces: a `}` inside them does not close anything.
_TOKEN_RE = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|//[^\n]*|/\*.*?\*/|[{}]', re.S)
_CONTRACT_RE = re.compile(r"\b(?:abstract\s+)?contract\s+\w+[^{;]*\{")


def _code_spans(text: str):
    """(start, end) of every `{`/`}` outside strings and comments, and the comment/string spans."""
    braces, skipped = [], []
    for m in _TOKEN_RE.finditer(text):
        (braces if m.group() in "{}" else skipped).append(m.span())
    return braces, skipped


def contract_end(text: str) -> int | None:
    """Offset of the `}` closing the file's last contract (outside comments and strings), or None."""
    braces, skipped = _code_spans(text)
    in_skipped = lambda pos: any(a <= pos < b for a, b in skipped)  # noqa: E731
    opens = [m.end() - 1 for m in _CONTRACT_RE.finditer(text) if not in_skipped(m.start())]
    if not opens:
        return None
    start = opens[-1]
    depth = 0
    for a, _ in braces:
        if a < start:
            continue
        depth += 1 if text[a] == "{" else -1
        if depth == 0:
            return a
    return None


def inject(text: str, kind: str, version: str) -> tuple[str, int] | None:
    """(injected text, offset where the snippet went in), or None when the file cannot host this bug."""
    code = snippet(kind, version)
    end = contract_end(text)
    if code is None or end is None:
        return None
    return text[:end] + "\n" + code + text[end:], end
