"""Run tracking beside metrics.jsonl (which stays the source of truth): Weights & Biases, and the training ETA.

    python train.py config/train_cpu.py --wandb_log=True --wandb_project=solgpt --wandb_run_name=cpu-1
    WANDB_MODE=offline python train.py ... --wandb_log=True      # no account: a local run, `wandb sync` it later

wandb is optional (requirements-export.txt) and imported only when --wandb_log=True.
"""
import statistics


class WandbRun:
    """Forwards train.py's metrics records to a wandb run, stepped by iteration; files go to out_dir/wandb/."""

    def __init__(self, cfg):
        try:
            import wandb
        except ImportError:
            raise SystemExit("error: --wandb_log=True needs wandb: pip install wandb (or -r requirements-export.txt), "
                             "or drop --wandb_log") from None
        try:
            self.run = wandb.init(project=cfg["wandb_project"], name=cfg["wandb_run_name"] or None, config=dict(cfg),
                                  dir=cfg["out_dir"])
        except Exception as e:  # not logged in, no network: say how to go on, not a wandb traceback
            reason = " ".join(str(e).split())[:200] or type(e).__name__
            raise SystemExit(f"error: wandb could not start a run ({reason}); run `wandb login`, or set "
                             f"WANDB_MODE=offline to log locally and `wandb sync` later") from None

    def log(self, record):
        # An evaluation and a training step share an iteration, and both records have "tokens" (seen before vs
        # after the step): a prefix per kind keeps both, as wandb panels group them.
        self.run.log(flat_record(record), step=record["iter"])

    def finish(self):
        self.run.finish()


def record_kind(record):
    return "eval" if "val_loss" in record else "health" if "layer_grad_norm" in record else "train"


def flat_record(record):
    """wandb keys of a metrics.jsonl record: 'eval/val_loss', 'train/loss', 'health/layer_grad_norm/h.0', ...
    (a health record's per-layer dicts become one key per layer; a null ratio, of all-zero weights, is left out)."""
    kind, flat = record_kind(record), {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update({f"{kind}/{key}/{layer}": v for layer, v in value.items() if v is not None})
        elif key != "iter":
            flat[f"{kind}/{key}"] = value
    return flat


def start(cfg, master):
    """A WandbRun on the master rank when cfg asks for one, else None."""
    return WandbRun(cfg) if cfg["wandb_log"] and master else None


def eta_seconds(iters_left, recent_dts):
    """Iterations left x the median of the recent iteration times (the median ignores a slow first iteration or
    an evaluation pause)."""
    return max(iters_left, 0) * statistics.median(recent_dts) if recent_dts else 0.0


def format_duration(seconds):
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
