"""Bug injection in the style of the SolidiFI benchmark: add a known-vulnerable snippet to a real contract.

    from compiler.inject import KINDS, inject
    text2, where = inject(text, "reentrancy", version="0.8.37")   # None when the file has no contract to host it

The snippet (state variables + one function) goes just before the closing brace of the file's last `contract` (not
interface/library: those cannot hold state or bodies), a position where a member declaration is always valid.
Snippets follow SolidiFI's bug patterns, written for each compiler generation (call syntax changed in 0.5 and 0.6,
msg.sender stopped being payable in 0.8). Injection never decides the label: the labeller runs Slither on the
injected file and records what it finds (EXPECTED is what a confirmed injection should add, used only to report how
often Slither confirms each kind).

Names: the injected identifiers are ordinary ones (`pendingWithdrawals`, `claimRefund`, ...), a few per role, picked
from the file's sha256 so the recipe stays reproducible, and never one the file already uses. A fixed marker (an
earlier version suffixed every name with `_solgpt_inj`) would let any classifier learn "marker => vulnerable", which
says nothing about real contracts. An identifier inherited from an imported file can still clash (the file alone is
looked at); the labeller then records a compile error, as for any variant that does not compile.
"""
from __future__ import annotations

import hashlib
import re

BASE_KINDS = ("reentrancy", "unchecked-send", "unchecked-call", "tx-origin", "timestamp", "overflow")
# Added later, for train files only (data/slither-labels/prepare.py): the held-out split keeps the variants every
# earlier number was measured on. Each gives a pattern-level positive to a class whose clean positives are mostly one
# style of code (arithmetic: assembly-heavy math libraries; other: solady's assembly).
EXTRA_KINDS = ("divide-before-multiply", "strict-equality")
KINDS = BASE_KINDS + EXTRA_KINDS
EXPECTED = {"reentrancy": "reentrancy-eth", "unchecked-send": "unchecked-send", "unchecked-call": "unchecked-lowlevel",
            "tx-origin": "tx-origin", "timestamp": "weak-prng", "overflow": "tautology",
            "divide-before-multiply": "divide-before-multiply", "strict-equality": "incorrect-equality"}
# Plausible names per role (disjoint pools, so two roles of one snippet never share a name).
NAMES = {
    "balances": ("pendingWithdrawals", "userBalances", "credits", "deposits", "refunds", "escrowed"),
    "withdraw": ("withdrawBalance", "claimRefund", "withdrawAll", "cashOut", "redeemCredit", "pullPayment"),
    "send_fn": ("payBonus", "sendReward", "tipCaller", "refundCaller", "payoutFee", "rewardSender"),
    "call_fn": ("forwardCall", "pingTarget", "notifyHook", "triggerCallback", "execCall", "pokeTarget"),
    "callee": ("target", "callee", "hook", "receiverAddr", "dest", "endpoint"),
    "owner": ("admin", "operatorAddress", "controller", "manager", "custodian", "keeper"),
    "set_owner": ("setAdmin", "transferControl", "changeOperator", "updateManager", "setController", "assignKeeper"),
    "new_owner": ("newAdmin", "nextOperator", "account", "newController", "candidate", "successor"),
    "winner": ("lastWinner", "luckyPlayer", "jackpotWinner", "roundWinner", "winnerAddress", "champion"),
    "play": ("play", "enterDraw", "tryLuck", "spin", "drawWinner", "joinRound"),
    "ledger": ("ledger", "accountBalances", "holdings", "tokenBalances", "balanceSheet", "accounts"),
    "transfer_fn": ("move", "transferUnits", "sendUnits", "shiftBalance", "moveTokens", "relay"),
    "share_fn": ("quoteShare", "computeFee", "prorate", "feeFor", "scaleAmount", "splitReward"),
    "funded_fn": ("isFunded", "reachedGoal", "isSettled", "fullyPaid", "targetMet", "isBalanced"),
    "goal": ("fundingGoal", "targetBalance", "expectedBalance", "goalAmount", "requiredBalance", "settleAmount"),
}
ROLES = {"reentrancy": ("balances", "withdraw"), "unchecked-send": ("send_fn",),
         "unchecked-call": ("call_fn", "callee"), "tx-origin": ("owner", "set_owner", "new_owner"),
         "timestamp": ("winner", "play"), "overflow": ("ledger", "transfer_fn"),
         "divide-before-multiply": ("share_fn",), "strict-equality": ("goal", "funded_fn")}
_IDENT_RE = re.compile(r"\b[A-Za-z_$][\w$]*\b")


def pick_names(text: str, kind: str) -> dict[str, str]:
    """{role: name} for this file and bug: the pool's names in an order fixed by sha256(kind + text), the first
    one the file does not use anywhere (any identifier, comments included: cheap and safe)."""
    used = set(_IDENT_RE.findall(text))
    out = {}
    for role in ROLES[kind]:
        pool = NAMES[role]
        start = int.from_bytes(hashlib.sha256(f"{kind}:{role}\0{text}".encode()).digest()[:4], "little")
        order = [pool[(start + i) % len(pool)] for i in range(len(pool))]
        free = [n for n in order if n not in used]
        # every name of the pool taken (never seen in the corpus): number the first one rather than give up
        out[role] = free[0] if free else next(f"{order[0]}{i}" for i in range(2, 10 ** 6) if f"{order[0]}{i}" not in used)
    return out


def _minor(version: str) -> int:
    return int(version.split(".")[1])


def snippet(kind: str, version: str, names: dict[str, str] | None = None) -> str | None:
    """Solidity source of one bug for this compiler version; None where the bug does not exist (overflow >= 0.8).
    names: {role: identifier} (pick_names); by default each role's first name."""
    if kind not in ROLES:
        raise ValueError(f"unknown injection kind {kind!r}; pick one of {KINDS}")
    n = {role: NAMES[role][0] for role in ROLES[kind]} | (names or {})
    m = _minor(version)
    if kind == "reentrancy":  # state written after an external call that sends ether (SolidiFI re_ent)
        bal = n["balances"]
        if m >= 6:
            call = f"(bool success, ) = msg.sender.call{{value: {bal}[msg.sender]}}(\"\");"
        elif m == 5:
            call = f"(bool success, ) = msg.sender.call.value({bal}[msg.sender])(\"\");"
        else:
            call = f"bool success = msg.sender.call.value({bal}[msg.sender])();"
        return (f"    mapping(address => uint256) {bal};\n"
                f"    function {n['withdraw']}() public {{\n"
                f"        {call}\n"
                f"        if (!success) {{ revert(); }}\n"
                f"        {bal}[msg.sender] = 0;\n"
                f"    }}\n")
    if kind == "unchecked-send":  # send's false return ignored (SolidiFI unchk_send)
        to = "payable(msg.sender)" if m >= 8 else "msg.sender"
        return (f"    function {n['send_fn']}() public payable {{\n"
                f"        {to}.send(1 ether);\n"
                f"    }}\n")
    if kind == "unchecked-call":  # low-level call's success flag ignored (SolidiFI unchk_call)
        data = "()" if m < 5 else "(\"\")"
        return (f"    function {n['call_fn']}(address {n['callee']}) public {{\n"
                f"        {n['callee']}.call{data};\n"
                f"    }}\n")
    if kind == "tx-origin":  # authorisation through tx.origin (SolidiFI tx_origin)
        return (f"    address {n['owner']};\n"
                f"    function {n['set_owner']}(address {n['new_owner']}) public {{\n"
                f"        require(tx.origin == {n['owner']});\n"
                f"        {n['owner']} = {n['new_owner']};\n"
                f"    }}\n")
    if kind == "timestamp":  # a winner decided by the block timestamp (SolidiFI tmstmp)
        return (f"    address {n['winner']};\n"
                f"    function {n['play']}() public {{\n"
                f"        if (block.timestamp % 15 == 0) {{ {n['winner']} = msg.sender; }}\n"
                f"    }}\n")
    if kind == "divide-before-multiply":  # precision lost: the division truncates before the product
        return (f"    function {n['share_fn']}(uint256 amount, uint256 total, uint256 rate) public pure "
                f"returns (uint256) {{\n"
                f"        return amount / total * rate;\n"
                f"    }}\n")
    if kind == "strict-equality":  # a state decided by an exact ether balance, which anyone can move by sending ether
        return (f"    uint256 {n['goal']} = 10 ether;\n"
                f"    function {n['funded_fn']}() public view returns (bool) {{\n"
                f"        return address(this).balance == {n['goal']};\n"
                f"    }}\n")
    # overflow: unchecked subtraction guarded by an always-true check (SolidiFI intou)
    if m >= 8:
        return None
    led = n["ledger"]
    return (f"    mapping(address => uint256) {led};\n"
            f"    function {n['transfer_fn']}(address to, uint256 value) public returns (bool) {{\n"
            f"        require({led}[msg.sender] - value >= 0);\n"
            f"        {led}[msg.sender] -= value;\n"
            f"        {led}[to] += value;\n"
            f"        return true;\n"
            f"    }}\n")


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
    return closing_brace(text, braces, opens[-1])


def closing_brace(text: str, braces, start: int) -> int | None:
    """Offset of the `}` matching the `{` at start, given the code braces (_code_spans), or None."""
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
    code = snippet(kind, version, pick_names(text, kind))
    end = contract_end(text)
    if code is None or end is None:
        return None
    return text[:end] + "\n" + code + text[end:], end
