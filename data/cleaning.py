"""Cleaning of source text before dedup and tokenisation: line endings, trailing space, blank runs, comments."""
import re

# Strings first so that "//" or "/*" inside a string literal is never taken for a comment.
_COMMENT_RE = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|//[^\n]*|/\*.*?(?:\*/|\Z)', re.S)
_BLANK_RUN_RE = re.compile(r"\n{3,}")


def strip_comments(text: str) -> str:
    """Remove // and /* */ comments (NatSpec included) and the lines they leave empty."""
    def repl(m: re.Match) -> str:
        s = m.group(0)
        if s[0] in "\"'":
            return s
        return "\n" if s.startswith("/*") and "\n" in s else ""
    out = _COMMENT_RE.sub(repl, text)
    return "\n".join(line.rstrip() for line in out.split("\n") if line.strip())


def clean(text: str, strip: bool = False) -> str:
    """Unix line endings, no BOM, no trailing spaces, at most one blank line in a row, one final newline."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if strip:
        text = strip_comments(text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = _BLANK_RUN_RE.sub("\n\n", text).strip("\n")
    return text + "\n" if text else ""
