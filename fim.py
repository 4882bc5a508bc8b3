"""
Fill-in-the-middle (Bavarian et al. 2022, "Efficient Training of Language Models to Fill in the Middle").

A document is cut at two points into prefix, middle and suffix and moved so that a left-to-right model learns to
write the middle after seeing both sides:

    PSM  <|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|> middle <|endoftext|>
    SPM  <|fim_prefix|> <|fim_suffix|> suffix <|fim_middle|> prefix middle <|endoftext|>

(SPM in the paper's variant that keeps prefix and middle adjacent, so one prompt serves both orders when the suffix
is empty.) Each part is encoded on its own, as complete.py encodes the text before and after the cursor.
Split points are uniform over characters, except a share (syntax_rate) that cuts out a whole function body or a
statement found with tree-sitter (solsyntax.py), since that is where editors ask.

At batch time (dataloader.BatchSampler) the transform works on the token window the sampler drew: the window is
split into its documents at <|endoftext|>, each document is transformed with probability `rate` (decoded to text,
cut, re-encoded), and the result is cut back to the window's length, or filled with the tokens that follow the window
in the token file. A document cut off by the window's end is transformed too; its suffix then ends at the cut, as a
suffix does that complete.py cuts to the context window. Randomness comes from (seed, batch index) only, so exact
resume holds.
"""

import hashlib
import random

import numpy as np

FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX = "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>"


class FimError(Exception):
    """The tokenizer cannot do FIM (no sentinel tokens, or not the dataset's); str() says what to do."""


def sentinels(tok, vocab_size=None):
    """(prefix, suffix, middle) sentinel ids of tok, checked to exist and fit vocab_size."""
    missing = [name for name in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE) if name not in tok.special_tokens]
    if missing:
        raise FimError(f"tokenizer {tok.name} has no {', '.join(missing)} token; FIM needs the solgpt tokenizer "
                       f"(or another with the FIM special tokens)")
    ids = tuple(tok.special_tokens[name] for name in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE))
    if vocab_size is not None and max(ids) >= vocab_size:
        raise FimError(f"FIM token id {max(ids)} is outside the vocabulary ({vocab_size}); re-prepare the data with "
                       f"a tokenizer that has the FIM tokens")
    return ids


def fim_ids(prefix_ids, middle_ids, suffix_ids, fim_tokens, spm=False):
    """The FIM layout of already-encoded parts (without the <|endoftext|> that ends the middle).
    With middle_ids = [] this is the prompt complete.py gives the model."""
    pre, suf, mid = fim_tokens
    if spm:
        return [pre, suf, *suffix_ids, mid, *prefix_ids, *middle_ids]
    return [pre, *prefix_ids, suf, *suffix_ids, mid, *middle_ids]


def unfim(ids, tok, fim_tokens):
    """The document text back from a FIM sequence (either order): prefix + middle + suffix."""
    pre, suf, mid = fim_tokens
    ids = list(ids)
    if ids[:2] == [pre, suf]:  # SPM: suffix, then prefix + middle
        s_end = ids.index(mid)
        return tok.decode_bytes(ids[s_end + 1:]).decode() + tok.decode_bytes(ids[2:s_end]).decode()
    p_end, s_end = ids.index(suf), ids.index(mid)
    return (tok.decode_bytes(ids[1:p_end]) + tok.decode_bytes(ids[s_end + 1:])
            + tok.decode_bytes(ids[p_end + 1:s_end])).decode()


def char_split(text, rng):
    """Two uniform character positions i <= j: prefix text[:i], middle text[i:j], suffix text[j:]."""
    i, j = sorted((rng.randint(0, len(text)), rng.randint(0, len(text))))
    return i, j


def syntax_split(text, rng):
    """A whole function body (inside its braces) or a whole statement as the middle; None when there is none."""
    import solsyntax  # tree-sitter is only needed when syntactic splits are asked for

    src = solsyntax.Source(text)
    bodies, stmts = solsyntax.function_bodies(src), solsyntax.statements(src)
    pool = bodies if bodies and (not stmts or rng.random() < 0.5) else stmts
    return rng.choice(pool) if pool else None


class FimTransform:
    """Applies FIM to the documents of token windows; see the module docstring."""

    def __init__(self, tok, rate, spm_rate=0.5, syntax_rate=0.5, vocab_size=None):
        self.tok, self.rate, self.spm_rate, self.syntax_rate = tok, rate, spm_rate, syntax_rate
        self.fim_tokens = sentinels(tok, vocab_size)
        self.eot = tok.eot_token
        if syntax_rate > 0:
            import solsyntax
            try:
                solsyntax.parser()
            except solsyntax.SyntaxUnavailable as e:
                raise FimError(f"{e} (or set fim_syntax_rate=0)") from None

    @classmethod
    def for_dataset(cls, meta, rate, spm_rate=0.5, syntax_rate=0.5):
        """The transform for a prepared dataset: its own tokenizer, checked against the hash in meta.json."""
        from tokenizer import TokenizerError, get_dataset_tokenizer

        try:
            tok = get_dataset_tokenizer(meta)
        except TokenizerError as e:
            raise FimError(f"FIM needs the dataset's tokenizer: {e}") from None
        return cls(tok, rate, spm_rate, syntax_rate, meta["vocab_size"])

    @staticmethod
    def rng(seed, index):
        """The random stream of training batch `index`: a function of (seed, index) alone."""
        key = hashlib.blake2b(f"{seed}:fim:{index}".encode(), digest_size=8).digest()
        return random.Random(int.from_bytes(key, "little"))

    def document(self, ids, rng):
        """FIM tokens of one document's tokens (middle not yet ended), or None when its bytes are not whole UTF-8
        text (a window can start inside a character) or it is empty."""
        try:
            text = self.tok.decode_bytes(ids).decode("utf-8")
        except UnicodeDecodeError:
            return None
        if not text:
            return None
        span = syntax_split(text, rng) if rng.random() < self.syntax_rate else None
        i, j = span or char_split(text, rng)
        spm = rng.random() < self.spm_rate
        enc = self.tok.encode
        return fim_ids(enc(text[:i]), enc(text[i:j]), enc(text[j:]), self.fim_tokens, spm)

    def window(self, data, start, length, rng):
        """length tokens from data[start:], each document transformed with probability rate."""
        tokens = np.asarray(data[start:start + length]).astype(np.int64)
        out, prev = [], 0
        ends = [int(e) for e in np.flatnonzero(tokens == self.eot)] + [length]
        for end in ends:
            piece = tokens[prev:end].tolist()
            moved = self.document(piece, rng) if piece and rng.random() < self.rate else None
            if moved is None:
                out += piece
            else:
                out += moved + ([self.eot] if end == length else [])  # the eot after the piece ends its middle
            if end < length:
                out.append(self.eot)
            prev = end + 1
        if len(out) < length:  # re-encoding merged tokens: go on with the tokens after the window
            out += np.asarray(data[start + length:start + length + length - len(out)]).astype(np.int64).tolist()
            out += [self.eot] * (length - len(out))
        return np.asarray(out[:length], dtype=np.int64)
