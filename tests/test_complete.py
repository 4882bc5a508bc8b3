"""complete.py and token healing on a tiny model that has memorized its answers (tests/code_fixtures.py)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import complete
import healing
import sample
from code_fixtures import BODY, CONTRACT, HEAL_PROMPT, PREFIX, SUFFIX, fixture_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tok():
    from tokenizer import get_tokenizer
    return get_tokenizer()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tok):
    return fixture_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


def completer(ckpt, **knobs):
    cfg = dict(complete.DEFAULTS, ckpt=str(ckpt), temperature=0.0, device="cpu", **knobs)
    model, tok, device = sample.load_for_sampling(cfg)
    return complete.Completer(model, tok, device, cfg)


def run_complete(*args, cwd=None):
    return subprocess.run([sys.executable, str(ROOT / "complete.py"), *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


def test_heal_drops_the_last_token_and_masks_by_its_text(tok):
    ids = [tok.eot_token] + tok.encode("pragma solidity ^0.8.20;\n")
    kept, tail = healing.heal(ids, tok)
    assert kept == ids[:-1] and tail == b"\n" and tok.decode(kept[1:]) == "pragma solidity ^0.8.20;"
    assert healing.heal([tok.eot_token], tok) == ([tok.eot_token], b"")  # a special token is never dropped
    mask = healing.allowed_tokens(b"\n", healing.token_table(tok), 16448)
    newline, glued, semicolon = tok.encode("\n")[0], tok.encode("\ncontract")[0], tok.encode(";")[0]
    assert mask[newline] and mask[glued] and not mask[semicolon] and not mask[tok.eot_token]
    assert not mask[tok.n_vocab:].any()  # padding ids past the tokenizer are never allowed
    assert int(mask.sum()) == sum(tok.decode_bytes([i]).startswith(b"\n") for i in range(tok.n_vocab - 6))


def test_newline_prompt_no_longer_ends_the_sample_at_once(ckpt, tmp_path, capsys):
    (tmp_path / "p.sol").write_text(HEAL_PROMPT)
    args = [f"--ckpt={ckpt}", f"--start=FILE:{tmp_path / 'p.sol'}", "--num_samples=1", "--temperature=0",
            "--max_new_tokens=20", "--device=cpu"]
    sample.main(args + ["--token_healing=False"])  # the defect, reproduced by the fixture model
    captured = capsys.readouterr()
    assert "ended at <|endoftext|> after 0 new tokens" in captured.err
    assert captured.out.split(sample.SEPARATOR)[0] == HEAL_PROMPT
    sample.main(args)  # healed: the model re-spells "\n" as "\ncontract" and writes the file it learned
    captured = capsys.readouterr()
    assert captured.out.split(sample.SEPARATOR)[0] == "pragma solidity ^0.8.19;\ncontract B {}"
    assert "after 0 new tokens" not in captured.err


def test_fill_in_the_middle_returns_the_middle_and_stops_at_the_end_token(ckpt, tok):
    c = completer(ckpt)
    assert c.fill(PREFIX, SUFFIX) == [BODY] and c.fill(PREFIX, SUFFIX, 3) == [BODY] * 3
    prompt, tail, max_new = c.fim_prompt(PREFIX, SUFFIX)
    rows = c._generate(prompt, tail, max_new, 2, c._generator(), c._hook(len(prompt), tail))  # as fill() does
    n_body = len(tok.encode(BODY)) + 1  # the healed token, then the body
    for row in rows:  # generation stopped right after the end token, long before max_new_tokens
        assert row.index(tok.eot_token) == n_body and len(row) == n_body + 1 < max_new
    assert completer(ckpt, token_healing=False).fill(PREFIX, SUFFIX) == [BODY]  # trained on both splits


def test_complete_script_prints_only_the_middle_and_writes_the_file(ckpt, tmp_path):
    (tmp_path / "before.sol").write_text(PREFIX)
    (tmp_path / "after.sol").write_text(SUFFIX)
    proc = run_complete(f"--ckpt={ckpt}", "--prefix=FILE:before.sol", "--suffix=FILE:after.sol", "--temperature=0",
                        "--device=cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == BODY and "completion(s)" in proc.stderr
    proc = run_complete(f"--ckpt={ckpt}", "--prefix=FILE:before.sol", "--suffix=FILE:after.sol", "--temperature=0",
                        "--device=cpu", "--out=done.sol", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout == "" and (tmp_path / "done.sol").read_text() == CONTRACT
    missing = "error: prompt file missing.sol not found (--prefix=FILE:path)"
    for bad, message in ((["--prefix=FILE:missing.sol"], missing),
                         (["--start=x", "--prefix=y"], "error: --start (left to right) and --prefix/--suffix"),
                         ([], "error: nothing to complete"),
                         (["--prefix=x", "--fim_order=mps"], "error: --fim_order must be psm or spm, got 'mps'"),
                         (["--prefix=x", "--repetition_penalty=0.0"], "error: --repetition_penalty must be > 0")):
        proc = run_complete(f"--ckpt={ckpt}", *bad, cwd=tmp_path)
        assert proc.returncode != 0 and proc.stderr.startswith(message) and proc.stderr.count("\n") == 1, proc.stderr


def test_left_to_right_writes_the_body_and_stops_at_its_brace(ckpt, tmp_path):
    assert completer(ckpt).continue_body(PREFIX) == [BODY]
    assert completer(ckpt).continue_body(PREFIX, 3) == [BODY] * 3  # rows of a batch continue chunk after chunk
    (tmp_path / "sig.sol").write_text(PREFIX)
    proc = run_complete(f"--ckpt={ckpt}", "--start=FILE:sig.sol", "--temperature=0", "--device=cpu", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout == BODY, proc.stderr


def test_body_end():
    assert complete.body_end("function f() {", " x = 1; }\n}") == len(" x = 1; ")
    assert complete.body_end("function f()", " { if (a) { b(); } }\n") == len(" { if (a) { b(); } }")
    assert complete.body_end("function f() {", ' s = "}"; // }\n /* } */ }') == len(' s = "}"; // }\n /* } */ ')
    assert complete.body_end("function f() {", " x = 1;") is None


def test_context_is_cut_to_the_text_nearest_the_cursor(ckpt, tok):
    c = completer(ckpt, max_new_tokens=40)
    far = "".join(f"// line {k}\n" for k in range(200))
    prompt, tail, max_new = c.fim_prompt(far + PREFIX, SUFFIX + far)
    block = c.model.config.block_size
    assert len(prompt) + max_new <= block and max_new == 40
    pre_end, suf_start = prompt.index(c.tok.special_tokens["<|fim_suffix|>"]), prompt.index(
        c.tok.special_tokens["<|fim_middle|>"])
    kept_prefix = tok.decode(prompt[2:pre_end]) + tail.decode()
    kept_suffix = tok.decode(prompt[pre_end + 1:suf_start])
    assert (far + PREFIX).endswith(kept_prefix) and len(kept_prefix) > len(PREFIX)  # the end of the prefix ...
    assert (SUFFIX + far).startswith(kept_suffix) and len(kept_suffix) > len(SUFFIX)  # ... the start of the suffix
    assert len(prompt) + 1 == block - 40  # the whole window is used: 3/4 prefix, 1/4 suffix


def test_require_text_forbids_the_end_until_the_answer_holds_text(tok):
    table = healing.token_table(tok)
    eot, prompt = tok.eot_token, [tok.eot_token, *tok.encode("contract A {")]
    logits = torch.zeros(3, 16448)
    blank, word = tok.encode("\n    ")[0], tok.encode(" uint")[0]
    hook = healing.require_text(table, len(prompt), b"", {eot})
    rows = torch.tensor([prompt + [blank, blank], prompt + [blank, word], prompt + [word, blank]])
    out = hook(logits, rows)
    assert out[0, eot] == float("-inf") and out[1, eot] == 0 and out[2, eot] == 0  # only the blank row may not end
    assert out[0, blank] == float("-inf") and out[0, word] == 0  # ... nor idle on a second blank token
    assert torch.isfinite(out[1:]).all() and (logits == 0).all()  # rows with text are free; the input is untouched
    first = hook(logits[:1], torch.tensor([prompt]))  # nothing written yet: no end, but a first blank token is fine
    assert first[0, eot] == float("-inf") and first[0, blank] == 0
    # a healed tail belongs to the prompt: "\n" re-spelt as "\n    " is still blank, as "\n    function" it is text
    healed = healing.require_text(table, len(prompt), b"\n", {eot})
    glued = tok.encode("\n    function")[0]
    assert tok.decode_bytes([glued]).startswith(b"\n") and tok.decode_bytes([blank]).startswith(b"\n")
    out = healed(logits[:3], torch.tensor([prompt + [blank], prompt + [glued], prompt + [tok.encode("\n")[0]]]))
    assert out[0, eot] == float("-inf") and out[0, blank] == float("-inf") and torch.isfinite(out[1]).all()
    assert out[2, eot] == float("-inf") and out[2, blank] == 0  # "\n" re-spelt as itself added nothing yet


def test_the_middle_is_never_left_blank(tok, tmp_path):
    import fim
    from code_fixtures import memorizer, save
    pre, suf = "contract E {\n    function f() public {", "}\n}\n"
    p, m, s = tok.encode(pre), tok.encode("\n    "), tok.encode(suf)  # both ways, as the fixture model (healing)
    seqs = [[tok.eot_token, *fim.fim_ids(a, b, s, fim.sentinels(tok)), tok.eot_token]
            for a, b in ((p, m), (p[:-1], p[-1:] + m))]
    model, args, _ = memorizer(seqs)
    path = save(model, args, tmp_path / "model.pt")
    assert completer(path, allow_empty=True).fill(pre, suf) == ["\n    "]  # what the model learned: nothing
    middle, = completer(path, max_new_tokens=12).fill(pre, suf)
    assert middle.strip(), middle  # by default it must write some text before it may end


def test_middle_end_cuts_where_the_middle_closes_a_block_the_suffix_closes():
    pre, suf = "contract A {\n    function f() public {", "}\n}\n"
    gen = "\n        x = 1;\n    }\n\n    function g() public {\n        y = 2;\n    }\n"
    assert complete.middle_end(pre, suf, gen) == len("\n        x = 1;\n    ")  # the body back, the rest cut
    assert complete.middle_end(pre, suf, "\n        if (a) { b(); }\n") is None  # balanced so far: goes on
    assert complete.middle_end(pre, suf, ' s = "}"; // }\n') is None  # braces in strings and comments are text
    # a middle that must close blocks (the suffix starts at the next contract) may close them, and no more
    assert complete.middle_end(pre, "\ncontract B {}\n", "x = 1; }\n}\n}") == len("x = 1; }\n}\n")
    assert complete.middle_end("", "", "contract A {} }") == len("contract A {} ")


def test_fill_stops_at_the_block_end(tok, tmp_path):
    import fim
    from code_fixtures import memorizer, save
    pre, suf = "contract E {\n    function f() public {", "}\n}\n"
    body, run_on = "\n        x = 1;\n    ", "}\n\n    function g() public {\n        y = 2;\n    }\n}\n"
    p, m, s = tok.encode(pre), tok.encode(body + run_on), tok.encode(suf)  # the model learned to run on
    seqs = [[tok.eot_token, *fim.fim_ids(a, b, s, fim.sentinels(tok)), tok.eot_token]
            for a, b in ((p, m), (p[:-1], p[-1:] + m))]
    path = save(*memorizer(seqs)[:2], tmp_path / "model.pt")
    assert completer(path, stop_at_block_end=False).fill(pre, suf) == [body + run_on]
    assert completer(path).fill(pre, suf) == [body]
    assert completer(path).fill(pre, suf, 2) == [body, body]


def test_repetition_penalty_touches_only_the_tokens_the_completion_wrote():
    hook = complete.penalize_repeats(2, 2.0)
    logits = torch.tensor([[1.0, -1.0, 4.0, -3.0, 0.5]])
    idx = torch.tensor([[0, 1, 2, 3, 2]])  # prompt 0, 1 (not penalised: its names are there to be reused), then 2, 3, 2
    assert hook(logits, idx).tolist() == [[1.0, -1.0, 2.0, -6.0, 0.5]]
    assert hook(logits, idx[:, :2]).tolist() == logits.tolist()  # nothing written yet
    assert logits.tolist() == [[1.0, -1.0, 4.0, -3.0, 0.5]]  # the input is not modified
