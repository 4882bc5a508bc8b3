"""
Render a run's metrics.jsonl as a loss-curve PNG.

    python plot.py --out_dir=out-cpu                  # writes out-cpu/loss.png
    python plot.py --out_dir=out-cpu --out=assets/solGPT_loss.png

Left panel: training loss (every logged iteration, plus a moving average) and the
evaluated train/val loss, against iterations, with tokens seen on the top axis.
Right panel: validation bits per byte against tokens seen, the tokenizer-independent
number to compare runs by.
"""
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ArgumentParser, atomic_write  # noqa: E402


def read_metrics(path):
    """Split metrics.jsonl into per-iteration records and evaluation records."""
    steps, evals = [], []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                # A run killed mid-write can leave a torn last line; everything before it is good.
                print(f"warning: {path}:{line_no} is not JSON, skipped", file=sys.stderr)
                continue
            if "val_loss" in record:
                evals.append(record)
            elif "loss" in record:
                steps.append(record)
    # A resumed run appends iterations it already logged before a crash; keep the latest of each.
    steps = list({r["iter"]: r for r in steps}.values())
    evals = list({r["iter"]: r for r in evals}.values())
    return sorted(steps, key=lambda r: r["iter"]), sorted(evals, key=lambda r: r["iter"])


def tokens_per_iter(steps):
    """Tokens processed per iteration, from the cumulative `tokens` field of the step records."""
    with_tokens = [r for r in steps if r.get("tokens")]
    if len(with_tokens) >= 2:
        first, last = with_tokens[0], with_tokens[-1]
        if last["iter"] > first["iter"]:
            return (last["tokens"] - first["tokens"]) / (last["iter"] - first["iter"])
    if with_tokens and with_tokens[0]["iter"] > 0:
        return with_tokens[0]["tokens"] / with_tokens[0]["iter"]
    return None


def moving_average(values, window):
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot(metrics_path, out_path, title=None):
    import matplotlib
    matplotlib.use("Agg")  # no display needed: we only write a file
    import matplotlib.pyplot as plt

    steps, evals = read_metrics(metrics_path)
    if not steps and not evals:
        raise SystemExit(f"error: {metrics_path} has no training records yet: train for at least log_interval iterations first")
    per_iter = tokens_per_iter(steps)

    fig, (ax_loss, ax_bpb) = plt.subplots(1, 2, figsize=(12, 4.5))
    if steps:
        iters = [r["iter"] for r in steps]
        losses = [r["loss"] for r in steps]
        window = len(losses) // 50
        if window > 1:  # many logged iterations: show the noisy curve faintly under its moving average
            ax_loss.plot(iters, losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="train loss (logged)")
            ax_loss.plot(iters, moving_average(losses, window), color="tab:blue", linewidth=1.5,
                         label=f"train loss (moving average of {window})")
        else:
            ax_loss.plot(iters, losses, color="tab:blue", linewidth=1.0, label="train loss (logged iterations)")
    if evals:
        ax_loss.plot([r["iter"] for r in evals], [r["train_loss"] for r in evals], "o-", color="tab:green",
                     markersize=3, label="train loss (eval)")
        ax_loss.plot([r["iter"] for r in evals], [r["val_loss"] for r in evals], "o-", color="tab:red",
                     markersize=3, label="val loss (eval)")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("cross-entropy loss (nats/token)")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(fontsize=8)
    if per_iter:
        top = ax_loss.secondary_xaxis("top", functions=(lambda i: i * per_iter / 1e6, lambda t: t * 1e6 / per_iter))
        top.set_xlabel("tokens seen (millions)")

    bpb = [r for r in evals if r.get("val_bpb") is not None and math.isfinite(r["val_bpb"])]
    if bpb and per_iter:
        ax_bpb.plot([r["iter"] * per_iter / 1e6 for r in bpb], [r["val_bpb"] for r in bpb], "o-", color="tab:purple",
                    markersize=3)
        ax_bpb.set_xlabel("tokens seen (millions)")
    elif bpb:
        ax_bpb.plot([r["iter"] for r in bpb], [r["val_bpb"] for r in bpb], "o-", color="tab:purple", markersize=3)
        ax_bpb.set_xlabel("iteration")
    ax_bpb.set_ylabel("validation bits per byte")
    ax_bpb.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()

    try:  # a crash never leaves a half-written PNG
        atomic_write(out_path, lambda f: fig.savefig(f, format="png", dpi=120))
    finally:
        plt.close(fig)
    return out_path


def main(argv=None):
    parser = ArgumentParser(description="Plot a solGPT run's metrics.jsonl (loss and val bits-per-byte) to PNG.")
    parser.add_argument("--out_dir", default="out", help="run directory holding metrics.jsonl (default: out)")
    parser.add_argument("--metrics", help="path to metrics.jsonl (default: OUT_DIR/metrics.jsonl)")
    parser.add_argument("--out", help="PNG to write (default: OUT_DIR/loss.png)")
    parser.add_argument("--title", help="figure title")
    args = parser.parse_args(argv)
    metrics = args.metrics or os.path.join(args.out_dir, "metrics.jsonl")
    if not os.path.isfile(metrics):
        raise SystemExit(f"error: {metrics} not found: train first (python train.py ...) or pass --out_dir/--metrics")
    out = plot(metrics, args.out or os.path.join(args.out_dir, "loss.png"), args.title)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
