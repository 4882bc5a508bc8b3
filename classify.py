"""
Flag vulnerability classes in Solidity files with a fine-tuned solGPT classifier (train.py --task=classify).

    python classify.py --ckpt=out-vuln-cpu/model.pt path/to/Contract.sol [more.sol contracts/ ...]
    python classify.py --ckpt=out-vuln-cpu/model.pt --json contracts/      # one JSON object per file per line

For each file: every class's probability and verdict (flagged when at or above the class's threshold, tuned on the
validation split and stored in model.pt; a file with none flagged gets the class closest to its threshold, as in
evaluation), and for each flagged class the contract where it scores highest: the file's windows are scored one by
one, and the best window's text is mapped to the contract (library, interface) it overlaps most.
Labels are Slither's detector classes (data/slither-labels/README.md): a guide to where to look, not an audit.
"""
import json
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import checkpoint as ckpt_io  # noqa: E402
import vuln  # noqa: E402
from common import ArgumentParser, run_main  # noqa: E402


class ClassifyError(SystemExit):
    def __init__(self, message):
        super().__init__(f"error: {message}")


def load_classifier(path, device="cpu"):
    """(model, checkpoint) of a classifier's model.pt; a one-line error for anything else."""
    try:
        model, ckpt = ckpt_io.load_model(path, device)
    except ckpt_io.CheckpointError as e:
        raise ClassifyError(str(e)) from None
    if not vuln.is_classifier(ckpt):
        raise ClassifyError(f"{path} is a language model, not a classifier: fine-tune one with python train.py "
                            f"config/finetune_vuln_cpu.py --init_from={path} and pass its model.pt")
    if (why := vuln.stale_thresholds(ckpt)) is not None:
        print(f"warning: {path}: {why}", file=sys.stderr)
    return model, ckpt


def sol_files(paths):
    """The .sol files named, and those under named directories (recursively, sorted); one-line errors."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*.sol") if f.is_file())
            if not found:
                raise ClassifyError(f"{p} holds no .sol files")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise ClassifyError(f"{p}: no such file or directory")
    return out


def read_text(path):
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ClassifyError(f"cannot read {path}: {type(e).__name__}: {e}; give a readable UTF-8 .sol file") from None


def window_contract(text, ids, tok, start, length, spans):
    """The contract whose source overlaps the window of `length` tokens at token `start` most (None if none)."""
    if not spans:
        return None
    a = len(tok.decode_bytes(ids[:start]).decode("utf-8", errors="ignore"))
    b = a + len(tok.decode_bytes(ids[start:start + length]).decode("utf-8", errors="ignore"))
    overlap = [max(0, min(b, e) - max(a, s)) for _, s, e in spans]
    best = int(np.argmax(overlap))
    return spans[best][0] if overlap[best] > 0 else None


def classify_text(model, ckpt, tok, text, device="cpu"):
    """{"probabilities", "labels", "contracts" (flagged class -> contract name)} for one source text."""
    from solsyntax import contract_spans
    T = model.config.block_size
    text = vuln.model_text(text, ckpt.get("strip_comments", False))  # windows and contract spans: of what it reads
    ids = tok.encode(text)
    windows, starts = vuln.file_windows(ids, T, ckpt["max_windows"], tok.special_tokens[vuln.CLS_TOKEN])
    probs, per_window = vuln.predict(model, [windows], nullcontext(), device=device)
    classes = ckpt["classes"]
    flagged = vuln.decide(probs, ckpt["thresholds"])[0]
    spans = contract_spans(text)
    contracts = {}
    for c in np.flatnonzero(flagged):
        if classes[c] == "safe":
            continue
        w = int(np.argmax(per_window[0][:, c]))
        contracts[classes[c]] = window_contract(text, ids, tok, starts[w], T - 1, spans)
    return {"probabilities": {c: round(float(p), 4) for c, p in zip(classes, probs[0])},
            "labels": [classes[c] for c in np.flatnonzero(flagged)], "contracts": contracts}


def report(path, result, thresholds):
    lines = [f"{path}: {', '.join(result['labels'])}"]
    for (c, p), t in zip(result["probabilities"].items(), thresholds):
        verdict = "FLAGGED" if c in result["labels"] else "-"
        where = f"  (most in contract {result['contracts'][c]})" if result["contracts"].get(c) else ""
        lines.append(f"  {c:<16} {p:.3f}  threshold {t:.3f}  {verdict}{where}")
    return "\n".join(lines)


def main(argv=None):
    p = ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    p.add_argument("paths", nargs="+", help=".sol files or directories (searched recursively)")
    p.add_argument("--ckpt", default="out-vuln-cpu/model.pt", help="a classifier's model.pt")
    p.add_argument("--json", action="store_true", help="one JSON object per file per line")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    files = sol_files(args.paths)  # before the model: a typo in a path fails at once
    model, ckpt = load_classifier(args.ckpt, args.device)
    from tokenizer import TokenizerError, get_dataset_tokenizer
    try:
        tok = get_dataset_tokenizer(ckpt)  # the tokenizer it was trained with, checked by hash
    except TokenizerError as e:
        raise ClassifyError(f"{args.ckpt}: {e}") from None
    for f in files:
        result = classify_text(model, ckpt, tok, read_text(f), args.device)
        if args.json:
            print(json.dumps({"file": str(f), **result}), flush=True)
        else:
            print(report(f, result, ckpt["thresholds"]), flush=True)
    return 0


if __name__ == "__main__":
    run_main(main)
