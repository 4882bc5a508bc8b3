"""
Network health: is the run clipping its gradients, which layer's gradient is growing, and are the optimizer's updates
the right size for the weights they change? train.py feeds every optimizer step through a Health object and writes
what it returns to metrics.jsonl; `python plot.py --out_dir=X` draws it as X/health.png.

Keys it adds to metrics.jsonl:
  every logged iteration's record (beside `grad_norm`, the global gradient norm BEFORE clipping):
    clipped     true when this iteration's gradient was clipped (grad_norm > grad_clip; always false with grad_clip=0)
    clip_frac   fraction of the optimizer steps since the previous logged iteration (this one included) that were
                clipped: with log_interval=10, 0.3 means 3 of the last 10 steps
  one record every health_interval iterations (0 = never), {"iter", "layer_grad_norm", "layer_update_ratio"}:
    layer_grad_norm     {layer: norm of that layer's gradient before clipping}; their root-sum-square is grad_norm
    layer_update_ratio  {layer: ||W_after - W_before|| / ||W_before||}, the relative size of the optimizer's step
                        (around 1e-3 is the usual healthy range for Adam; 1e-1 means the weights are being rewritten;
                        null for a layer whose weights are all zero)
  Layers: wte, wpe (learned positions only), h.0 .. h.{n_layer-1} (one transformer block each), ln_f, and lm_head
  when it is not tied to wte.

Cost: the per-step clip bookkeeping uses the gradient norm train.py already reads. The per-layer numbers are
computed only on health iterations: the weights are copied before the optimizer step (one model-sized copy, freed at
once) and the norms are read back with one host sync.
"""

import math

import torch


def layer_of(name):
    """The layer a parameter belongs to: 'transformer.h.3.attn.c_proj.weight' -> 'h.3', 'lm_head.weight' ->
    'lm_head'."""
    parts = name.replace("_orig_mod.", "").split(".")
    if parts[0] == "transformer":
        parts = parts[1:]
    return f"h.{parts[1]}" if parts[0] == "h" else parts[0]


def group_by_layer(model):
    """{layer: [parameters]} in the model's own order; a tied weight appears once (named_parameters dedups it)."""
    groups = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault(layer_of(name), []).append(p)
    return groups


def _group_norms(tensor_lists):
    """Root-sum-square norm of each list of tensors, as one fp32 tensor on their device (no host sync)."""
    return torch.stack([torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.float()) for t in ts]))
                        for ts in tensor_lists])


class Health:
    """Clip bookkeeping for every step, per-layer gradient norms and update/weight ratios on health steps.

    Use per optimizer step: observe(grad_norm) after clipping; when the optimizer will step, before_update(it,
    grad_norm) just before it and after_update() just after; pop_record() for the health record (or None), and
    log_fields() for the clip keys of a logged iteration's record."""

    def __init__(self, model, grad_clip, interval):
        self.grad_clip, self.interval = grad_clip, interval
        self.groups = group_by_layer(model)
        self.steps = self.clipped_steps = 0
        self.last_clipped = False
        self.snapshot = None  # on a health step: (iter, clipped layer grad norms, unclip factor, weights before)
        self.record = None

    def due(self, it):
        return self.interval > 0 and it % self.interval == 0

    def was_clipped(self, grad_norm):
        # clip_grad_norm_ scales the gradient by grad_clip / (norm + 1e-6) when that is below 1
        return self.grad_clip > 0 and math.isfinite(grad_norm) and grad_norm + 1e-6 > self.grad_clip

    def observe(self, grad_norm):
        """grad_norm: a float, or a device tensor (one GPU without per-step syncs): then the count stays on the device
        and is read only by log_fields(), at log_interval."""
        if torch.is_tensor(grad_norm):
            clipped = torch.isfinite(grad_norm) & (grad_norm + 1e-6 > self.grad_clip) if self.grad_clip > 0 \
                else torch.zeros((), dtype=torch.bool, device=grad_norm.device)
        else:
            clipped = self.was_clipped(grad_norm)
        self.last_clipped = clipped
        self.steps += 1
        self.clipped_steps = self.clipped_steps + clipped

    def log_fields(self):
        """The clip keys of a logged iteration's record; starts a new count for the next log line."""
        fields = {"clipped": bool(self.last_clipped), "clip_frac": float(self.clipped_steps) / max(1, self.steps)}
        self.steps = self.clipped_steps = 0
        return fields

    @torch.no_grad()
    def before_update(self, it, grad_norm):
        """On a health step: per-layer gradient norms (before clipping) and a copy of the weights."""
        if not self.due(it):
            return
        grad_norm = float(grad_norm)  # a health step reads back anyway
        layers = list(self.groups)
        grads = [[p.grad for p in self.groups[k] if p.grad is not None] or [torch.zeros_like(self.groups[k][0])]
                 for k in layers]  # a layer without gradient (frozen this step) counts as 0
        # The gradients are already clipped: undo clip_grad_norm_'s common factor to report the norms it saw.
        scale = (grad_norm + 1e-6) / self.grad_clip if self.was_clipped(grad_norm) else 1.0
        weights = [[p.detach().clone() for p in self.groups[k]] for k in layers]
        self.snapshot = (it, _group_norms(grads), scale, weights)

    @torch.no_grad()
    def after_update(self):
        if self.snapshot is None:
            return
        it, clipped_grad_norms, scale, before = self.snapshot
        self.snapshot = None
        layers = list(self.groups)
        deltas = [[p.detach() - w for p, w in zip(self.groups[k], ws)] for k, ws in zip(layers, before)]
        n = len(layers)
        values = torch.cat([clipped_grad_norms, _group_norms(deltas + before)]).tolist()  # the one host sync
        grads, updates, weights = values[:n], values[n:2 * n], values[2 * n:]
        self.record = {"iter": it, "layer_grad_norm": {k: g * scale for k, g in zip(layers, grads)},
                       "layer_update_ratio": {k: (d / w if w > 0 else None)
                                              for k, d, w in zip(layers, updates, weights)}}

    def pop_record(self):
        record, self.record = self.record, None
        return record
