"""
Solidity syntax through tree-sitter's Solidity grammar (pip: tree-sitter, tree-sitter-solidity): the one place that
parses code, for the FIM split points (fim.py), the NatSpec-to-body set (data/natspec/prepare.py) and the syntax
check of generated code (codeeval.py). Every span here is in characters of the str given (tree-sitter counts bytes).
"""

import functools
import warnings
from itertools import accumulate


class SyntaxUnavailable(Exception):
    """tree-sitter or its Solidity grammar is not installed; str() says what to do."""


@functools.lru_cache(maxsize=1)
def parser():
    try:
        import tree_sitter
        import tree_sitter_solidity
    except ImportError:
        raise SyntaxUnavailable("tree-sitter's Solidity grammar is not installed; "
                                "pip install tree-sitter tree-sitter-solidity") from None
    with warnings.catch_warnings():  # the grammar wheel hands over a pointer as int, which tree-sitter 0.25+ frowns on
        warnings.simplefilter("ignore", DeprecationWarning)
        language = tree_sitter.Language(tree_sitter_solidity.language())
    return tree_sitter.Parser(language)


class Source:
    """A parsed text: the tree plus byte -> character offset conversion."""

    def __init__(self, text):
        self.text = text
        data = text.encode("utf-8")
        self.tree = parser().parse(data)
        # byte offset -> char offset; only non-ASCII text needs the table
        self._char_at = None if len(data) == len(text) else _byte_to_char(text)
        self._by_type = None

    def char(self, byte_offset):
        return byte_offset if self._char_at is None else self._char_at[byte_offset]

    def span(self, node):
        return self.char(node.start_byte), self.char(node.end_byte)

    def nodes(self, *types):
        """Every node of these types, in document order (one walk of the tree serves every later call)."""
        if self._by_type is None:
            self._by_type, stack = {}, [self.tree.root_node]
            while stack:
                node = stack.pop()
                self._by_type.setdefault(node.type, []).append(node)
                stack.extend(reversed(node.children))
        found = [n for t in types for n in self._by_type.get(t, [])]
        return sorted(found, key=lambda n: n.start_byte) if len(types) > 1 else found


def _byte_to_char(text):
    ends = list(accumulate(len(c.encode("utf-8")) for c in text))
    table = [0] * (ends[-1] + 1 if ends else 1)
    start = 0
    for i, end in enumerate(ends):
        for b in range(start, end):
            table[b] = i  # a byte inside a character maps to that character
        start = end
    table[-1] = len(text)
    return table


def is_valid(text):
    """True when the whole text parses with no ERROR or MISSING node."""
    root = Source(text).tree.root_node
    return not root.has_error


def body_span(source, body):
    """Characters strictly inside a function_body's braces: the part FIM and the NatSpec set ask to write."""
    children = body.children
    if len(children) < 2 or children[0].type != "{" or children[-1].type != "}" or children[-1].is_missing:
        return None
    return source.char(children[0].end_byte), source.char(children[-1].start_byte)


def function_bodies(source):
    """Spans inside the braces of every complete function/modifier/constructor body."""
    spans = (body_span(source, n) for n in source.nodes("function_body") if not n.has_error)
    return [s for s in spans if s is not None]


def statements(source):
    """Spans of complete statements (a statement with its trailing semicolon, or a whole block statement)."""
    return [source.span(n) for n in source.nodes("statement") if not n.has_error and n.end_byte > n.start_byte]


def natspec_functions(text):
    """(name, NatSpec start, body span) of every function with a /** */ or /// comment right before it and a
    non-empty body; spans are character offsets."""
    src = Source(text)
    found = []
    for fn in src.nodes("function_definition", "modifier_definition", "constructor_definition"):
        body = next((c for c in fn.children if c.type == "function_body"), None)
        comment = fn.prev_named_sibling
        if body is None or fn.has_error or comment is None or comment.type != "comment":
            continue
        doc = src.text[src.char(comment.start_byte):src.char(comment.end_byte)]
        if not (doc.startswith("/**") or doc.startswith("///")):
            continue
        # the comment must be right above the function: nothing but whitespace in between
        if src.text[src.char(comment.end_byte):src.char(fn.start_byte)].strip():
            continue
        span = body_span(src, body)
        if span is None or not src.text[span[0]:span[1]].strip():
            continue
        ident = next((c for c in fn.children if c.type == "identifier"), None)
        name = src.text[slice(*src.span(ident))] if ident is not None else fn.type.split("_")[0]  # constructor
        found.append((name, _natspec_start(src, comment), span))
    return found


def _natspec_start(src, comment):
    """Start of the NatSpec block: consecutive /// lines are separate comment nodes, take them all."""
    node = comment
    while True:
        prev = node.prev_named_sibling
        if prev is None or prev.type != "comment" or not src.text[src.char(prev.start_byte):].startswith("///"):
            break
        if src.text[src.char(prev.end_byte):src.char(node.start_byte)].count("\n") > 1:
            break
        node = prev
    return src.char(node.start_byte)


CONTRACT_TYPES = ("contract_declaration", "library_declaration", "interface_declaration")


def contract_spans(text):
    """[(name, start, end)] in characters of every contract, library and interface of text, in order. tree-sitter
    when installed, else a regex + brace count (strings and comments skipped)."""
    try:
        src = Source(text)
    except SyntaxUnavailable:
        return _contract_spans_regex(text)
    out = []
    for node in src.nodes(*CONTRACT_TYPES):
        name = node.child_by_field_name("name")
        out.append((src.text[slice(*src.span(name))] if name else "?", *src.span(node)))
    return out


def _contract_spans_regex(text):
    import re

    from compiler.inject import _code_spans, closing_brace
    braces, _ = _code_spans(text)
    out = []
    for m in re.finditer(r"\b(?:abstract\s+)?(?:contract|library|interface)\s+(\w+)[^{;]*\{", text):
        end = closing_brace(text, braces, m.end() - 1)
        out.append((m.group(1), m.start(), len(text) if end is None else end + 1))
    return out
