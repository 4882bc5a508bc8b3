"""
Render a run's metrics.jsonl as a loss-curve PNG and a network-health PNG.

    python plot.py --out_dir=out-cpu                  # writes out-cpu/loss.png and out-cpu/health.png
    python plot.py --out_dir=out-cpu --out=assets/solGPT_loss.png --health_out=assets/solGPT_health.png
    python plot.py --compare=out-ablate/baseline-1337,out-ablate/default-1337 --labels=old,new --budget_s=600 \
        --out=assets/default_vs_old.png       # several runs' val bits per byte on one axis

loss.png, left panel: training loss (every logged iteration, plus a moving average) and the
evaluated train/val loss, against iterations, with tokens seen on the top axis.
Right panel: validation bits per byte against tokens seen, the tokenizer-independent
number to compare runs by.

health.png (the keys health.py adds): the gradient norm before clipping with the clipped
iterations marked, the fraction of steps clipped per log line, and every health_interval
iterations the gradient norm and the update/weight ratio of each layer. A run going
unhealthy shows there first: clipping turns from rare to constant, one layer's gradient
norm climbs away from the others, or an update/weight ratio rises towards 1e-1.
"""
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ArgumentParser, atomic_write  # noqa: E402


def read_records(path):
    """Every JSON record of metrics.jsonl, in file order."""
    records = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                # A run killed mid-write can leave a torn last line; everything before it is good.
                print(f"warning: {path}:{line_no} is not JSON, skipped", file=sys.stderr)
    return records


def latest_per_iter(records):
    """A resumed run appends iterations it already logged before a crash; keep the latest of each, in iter order."""
    return sorted({r["iter"]: r for r in records}.values(), key=lambda r: r["iter"])


def read_metrics(path):
    """Split metrics.jsonl into per-iteration records and evaluation records."""
    records = read_records(path)
    evals = [r for r in records if "val_loss" in r]
    steps = [r for r in records if "loss" in r and "val_loss" not in r]
    return latest_per_iter(steps), latest_per_iter(evals)


def read_health(path):
    """The per-iteration records and the per-layer health records (health.py) of metrics.jsonl."""
    records = read_records(path)
    steps = [r for r in records if "loss" in r and "val_loss" not in r]
    return latest_per_iter(steps), latest_per_iter([r for r in records if "layer_grad_norm" in r])


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


def compare_figure(runs, budget_s=None):
    """Validation bits per byte of several runs on one axis. runs: [(label, steps, evals)]. With budget_s, each
    run's iterations are spread over that many seconds (runs that got the same wall-clock budget in their own
    iterations, as ablate.py gives them), else the axis is tokens seen. A run's last evaluation flagged `final` is
    the exact one over the whole val split (a filled marker); the others are periodic estimates."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, steps, evals in runs:
        bpb = [r for r in evals if r.get("val_bpb") is not None and math.isfinite(r["val_bpb"])]
        if not bpb:
            raise SystemExit(f"error: run {label!r} has no evaluation with val_bpb; train it with evaluations")
        last = max(r["iter"] for r in steps + evals)
        per_iter = tokens_per_iter(steps)
        if budget_s:
            x = lambda it: it / last * budget_s  # noqa: E731
        elif per_iter:
            x = lambda it: it * per_iter / 1e6  # noqa: E731
        else:
            x = lambda it: it  # noqa: E731
        line, = ax.plot([x(r["iter"]) for r in bpb], [r["val_bpb"] for r in bpb], "o-", markersize=3,
                        label=f"{label} (final {bpb[-1]['val_bpb']:.4f})")
        final = [r for r in bpb if r.get("final")]
        if final:
            ax.plot([x(final[-1]["iter"])], [final[-1]["val_bpb"]], "s", color=line.get_color(), markersize=7)
    ax.set_xlabel("training seconds (each run's iterations over the budget)" if budget_s
                  else "tokens seen (millions)")
    ax.set_ylabel("validation bits per byte")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_compare(run_dirs, labels, out_path, budget_s=None, title=None):
    import matplotlib.pyplot as plt

    runs = []
    for run_dir, label in zip(run_dirs, labels):
        metrics = os.path.join(run_dir, "metrics.jsonl")
        if not os.path.isfile(metrics):
            raise SystemExit(f"error: {metrics} not found: pass run directories that hold a metrics.jsonl")
        runs.append((label, *read_metrics(metrics)))
    fig = compare_figure(runs, budget_s)
    if title:
        fig.suptitle(title)
    try:
        atomic_write(out_path, lambda f: fig.savefig(f, format="png", dpi=120))
    finally:
        plt.close(fig)
    return out_path


def layer_series(health, key):
    """{layer: values over the health records} for one per-layer key; a layer missing from a record is NaN."""
    layers = list(dict.fromkeys(name for r in health for name in r.get(key, {})))
    value = lambda r, name: r.get(key, {}).get(name)  # noqa: E731
    return {name: [float("nan") if value(r, name) is None else value(r, name) for r in health] for name in layers}


def health_figure(steps, health, title=None):
    """A 2x2 figure: gradient norm with clip events, fraction clipped, per-layer gradient norms, per-layer
    update/weight ratios. Returns the matplotlib Figure (the caller saves and closes it)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    (ax_norm, ax_clip), (ax_layer, ax_ratio) = axes
    norms = [r for r in steps if r.get("grad_norm") is not None]
    ax_norm.plot([r["iter"] for r in norms], [r["grad_norm"] for r in norms], color="tab:blue", linewidth=1.0,
                 label="gradient norm (before clipping)")
    clipped = [r for r in norms if r.get("clipped")]
    if clipped:
        ax_norm.plot([r["iter"] for r in clipped], [r["grad_norm"] for r in clipped], "x", color="tab:red",
                     markersize=5, label="clipped")
    ax_norm.set_yscale("log")
    ax_norm.set_ylabel("global gradient norm")
    ax_norm.set_title("gradient norm and clip events")
    ax_norm.legend(fontsize=8)

    fracs = [r for r in steps if r.get("clip_frac") is not None]
    ax_clip.step([r["iter"] for r in fracs], [r["clip_frac"] for r in fracs], where="post", color="tab:red")
    ax_clip.set_ylim(-0.02, 1.02)
    ax_clip.set_ylabel("fraction of steps clipped")
    ax_clip.set_title("clipping per log interval")

    iters = [r["iter"] for r in health]
    for ax, key, label in ((ax_layer, "layer_grad_norm", "gradient norm (before clipping)"),
                           (ax_ratio, "layer_update_ratio", "||update|| / ||weight||")):
        series = layer_series(health, key)
        colors = plt.cm.viridis([i / max(1, len(series) - 1) for i in range(len(series))])
        for color, (name, values) in zip(colors, series.items()):
            ax.plot(iters, values, "o-", color=color, markersize=2, linewidth=1.0, label=name)
        if not series:
            ax.text(0.5, 0.5, "no per-layer records\n(train with --health_interval > 0)", ha="center", va="center",
                    transform=ax.transAxes, color="gray")
        else:
            ax.set_yscale("log")
            ax.legend(fontsize=7, ncol=2)
        ax.set_ylabel(label)
        ax.set_xlabel("iteration")
    ax_layer.set_title("per-layer gradient norm")
    ax_ratio.set_title("per-layer update/weight ratio")
    if layer_series(health, "layer_update_ratio"):
        ax_ratio.axhline(1e-3, color="gray", linestyle="--", linewidth=0.8, label="1e-3 (typical healthy)")
        ax_ratio.legend(fontsize=7, ncol=2)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_health(metrics_path, out_path, title=None):
    """Write health.png; returns None (writing nothing) when the metrics hold no gradient records."""
    import matplotlib.pyplot as plt

    steps, health = read_health(metrics_path)
    if not health and not any(r.get("grad_norm") is not None for r in steps):
        return None
    fig = health_figure(steps, health, title)
    try:
        atomic_write(out_path, lambda f: fig.savefig(f, format="png", dpi=120))
    finally:
        plt.close(fig)
    return out_path


def main(argv=None):
    parser = ArgumentParser(description="Plot a solGPT run's metrics.jsonl (loss and val bits-per-byte) to PNG.")
    parser.add_argument("--out_dir", default="out", help="run directory holding metrics.jsonl (default: out)")
    parser.add_argument("--metrics", help="path to metrics.jsonl (default: OUT_DIR/metrics.jsonl)")
    parser.add_argument("--out", help="PNG to write (default: OUT_DIR/loss.png)")
    parser.add_argument("--health_out", help="network-health PNG to write (default: OUT_DIR/health.png)")
    parser.add_argument("--title", help="figure title")
    parser.add_argument("--compare", help="comma-separated run directories: their val bpb on one axis (needs --out)")
    parser.add_argument("--labels", help="comma-separated legend labels for --compare (default: the directories)")
    parser.add_argument("--budget_s", type=float, help="--compare: spread each run's iterations over this many "
                        "seconds (runs given the same wall-clock budget); default: tokens seen")
    args = parser.parse_args(argv)
    if args.compare:
        dirs = [d for d in args.compare.split(",") if d]
        labels = args.labels.split(",") if args.labels else dirs
        if len(labels) != len(dirs) or not args.out:
            parser.error("--compare needs --out, and as many --labels as directories")
        print(f"wrote {plot_compare(dirs, labels, args.out, args.budget_s, args.title)}")
        return
    metrics = args.metrics or os.path.join(args.out_dir, "metrics.jsonl")
    if not os.path.isfile(metrics):
        raise SystemExit(f"error: {metrics} not found: train first (python train.py ...) or pass --out_dir/--metrics")
    out = plot(metrics, args.out or os.path.join(args.out_dir, "loss.png"), args.title)
    print(f"wrote {out}")
    health = plot_health(metrics, args.health_out or os.path.join(args.out_dir, "health.png"), args.title)
    print(f"wrote {health}" if health else f"no gradient records in {metrics}: health plot skipped")


if __name__ == "__main__":
    main()
