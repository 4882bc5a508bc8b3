"""
Token healing at the prompt boundary, shared by sample.py and complete.py.

Our BPE glues a newline and its indentation to the next word ("\\n    function" is one token), so a prompt that ends in
a newline ends in a lone "\\n" token, which in training is almost only the last token of a file: the model then
ends the file at once. Healing drops the prompt's last token and makes the first generated token(s) spell its text
again, letting the model pick the token the text would really have been encoded with ("\\n    function", "\\n\\n",
...). The same holds at any cursor that splits a word, and at the end of a FIM prefix.

    kept, tail = heal(prompt_ids, tok)          # tail: the bytes of the dropped token
    rows = generate(model, kept, tail, token_table(tok), max_new_tokens, ...)   # each row spells tail, then goes on
    text = decode_new(tok, rows[0], tail, tok.eot_token)                          # the continuation after the prompt
"""

import functools

import torch

from model import sample_next


def token_table(tok):
    """bytes of every regular token id; special tokens map to None (never allowed while healing)."""
    return _token_table(tok)


@functools.lru_cache(maxsize=8)
def _token_table(tok):
    specials = set(getattr(tok, "special_tokens", {}).values()) | {tok.eot_token}
    as_bytes = getattr(tok, "decode_bytes", None) or (lambda ids: tok.decode(ids).encode("utf-8"))
    return tuple(None if i in specials else as_bytes([i]) for i in range(tok.n_vocab))


def heal(prompt_ids, tok):
    """(prompt_ids without its last token, that token's bytes). A special token (the leading end-of-text, a FIM
    sentinel) is never dropped: it is not text the model could spell differently. One token, because one new token
    must spell it again (the batch of samples stays in step)."""
    table = token_table(tok)
    if not prompt_ids or prompt_ids[-1] >= len(table) or table[prompt_ids[-1]] is None:
        return list(prompt_ids), b""
    return list(prompt_ids[:-1]), table[prompt_ids[-1]]


def allowed_tokens(tail, table, size):
    """Bool mask (size,) of the regular tokens whose bytes start with tail: one such token spells the dropped text
    and may go on ("\n" -> "\n    function"). The dropped token itself is one, so the set is never empty."""
    mask = torch.zeros(size, dtype=torch.bool)
    mask[[i for i, b in enumerate(table[:size]) if b is not None and b.startswith(tail)]] = True
    return mask


def require_text(table, prompt_len, tail, end_ids):
    """A logits hook for model.generate: a row whose new text (after the healed tail, which is the prompt's) is still
    empty or only whitespace may not produce any of end_ids, nor a second whitespace-only token (our BPE glues
    indentation to the next word, so code never needs two in a row; a blank loop is the other way to say nothing).
    An editor that asks for a completion wants one, and a small model is most sure of the blank answer (a newline,
    then the end). The model still chooses every token; it only cannot stop, or idle, before writing text."""
    carries_text = torch.tensor([b is not None and bool(b.strip()) for b in table])
    blank_tokens = torch.tensor([b is not None and bool(b) and not b.strip() for b in table])
    end_ids = torch.tensor(sorted(end_ids), dtype=torch.long)

    def hook(logits, idx):
        new = idx[:, prompt_len:].cpu()
        has_text = torch.zeros(idx.size(0), dtype=torch.bool)
        has_blank = torch.zeros(idx.size(0), dtype=torch.bool)
        if tail and new.size(1):  # the healed first token: only its bytes after the tail are new text
            first = [(table[i] or b"")[len(tail):] for i in new[:, 0].tolist()]
            has_text = torch.tensor([bool(b.strip()) for b in first])
            has_blank = torch.tensor([bool(b) and not b.strip() for b in first])
            new = new[:, 1:]
        known = new.clamp(max=len(table) - 1)  # ids past the tokenizer (padding) are never generated
        has_text |= carries_text[known].any(dim=1)
        has_blank |= blank_tokens[known].any(dim=1)
        if has_text.all():
            return logits
        logits = logits.clone()
        device = logits.device
        rows = (~has_text).nonzero().flatten().to(device)
        logits[rows[:, None], end_ids.to(device)[None, :]] = float("-inf")
        idle = (~has_text & has_blank).nonzero().flatten().to(device)
        if len(idle):
            size = min(len(table), logits.size(-1))
            logits[idle, :size] = logits[idle, :size].masked_fill(blank_tokens[:size].to(device), float("-inf"))
        return logits

    return hook


def generate(model, prompt_ids, tail, table, max_new_tokens, num_rows=1, temperature=1.0, top_k=None, top_p=None,
             eot_token=None, generator=None, use_cache=True, vocab_limit=None, logits_hook=None):
    """model.generate for num_rows copies of one prompt whose first new token must spell `tail` (b"" = no healing);
    returns each row's new token ids. logits_hook: model.generate's, for the tokens after the first (e.g.
    require_text)."""
    device = next(model.parameters()).device
    idx = torch.tensor([list(prompt_ids)] * num_rows, dtype=torch.long, device=device)
    if tail and max_new_tokens > 0:
        with torch.no_grad():
            logits, _ = model(idx[:1, -model.config.block_size:])  # the rows are equal: one forward serves all
        logits = logits[:, -1, :].float().expand(num_rows, -1)
        mask = allowed_tokens(tail, table, logits.size(-1)).to(device)
        nxt = sample_next(logits.masked_fill(~mask, float("-inf")), temperature, top_k, top_p, generator, vocab_limit)
        idx = torch.cat((idx, nxt), dim=1)
        max_new_tokens -= 1
    y = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, eot_token=eot_token,
                       generator=generator, use_cache=use_cache, vocab_limit=vocab_limit, logits_hook=logits_hook)
    return y[:, len(prompt_ids):].tolist()


def decode_new(tok, new_ids, tail, eot_token=None):
    """Text of the new tokens after the healed tail (which belongs to the prompt), cut at end-of-text."""
    if eot_token is not None and eot_token in new_ids:
        new_ids = new_ids[:new_ids.index(eot_token)]
    as_bytes = getattr(tok, "decode_bytes", None)
    if as_bytes is None:
        return tok.decode(new_ids)[len(tail.decode("utf-8", errors="replace")):]
    return as_bytes(new_ids)[len(tail):].decode("utf-8", errors="replace")
