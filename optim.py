"""
The optimizer, one config value (`optimizer`):

  - 'adamw': AdamW, weight decay on matrices and embeddings, none on biases and norm gains (GPT-2's recipe).
  - 'muon':  torch.optim.Muon for the 2-D weight matrices inside the transformer blocks (attention and MLP), AdamW as
             above for everything else: the embeddings, lm_head, norm gains and biases. Muon orthogonalises each
             matrix's momentum (Newton-Schulz), so every direction of the matrix learns at the same rate; embeddings and
             the head are lookups/classifiers, not linear maps between hidden states, and stay with AdamW (Keller Jordan).

train.py sees one optimizer either way (step, zero_grad, state_dict, load_state_dict, param_groups; GradScaler works
on it). Every param group carries an `lr_scale`, and set_lr gives each group the scheduled lr times its scale, so one
schedule (warmup, cosine) drives both: the AdamW groups get learning_rate itself, the Muon group
muon_lr / learning_rate times it, i.e. muon_lr at the peak.
Muon's lr uses torch's default 'original' adjustment (x sqrt(max(1, rows/cols)), Keller Jordan's), so muon_lr is on the
scale of his 0.02, not of AdamW's rates; its decoupled weight decay is weight_decay, applied as lr * weight_decay.
"""

import torch

OPTIMIZERS = ("adamw", "muon")


def build_optimizer(model, cfg):
    """The optimizer cfg['optimizer'] names for model (the raw module, not a DDP or compiled wrapper)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if cfg["optimizer"] == "adamw":
        return _adamw(named, cfg)
    if cfg["optimizer"] != "muon":
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {cfg['optimizer']!r}")
    hidden = [p for n, p in named if is_hidden_matrix(n, p)]
    muon = torch.optim.Muon([{"params": hidden, "lr_scale": cfg["muon_lr"] / cfg["learning_rate"]}],
                            lr=cfg["muon_lr"], weight_decay=cfg["weight_decay"], momentum=cfg["muon_momentum"])
    adamw = _adamw([(n, p) for n, p in named if not is_hidden_matrix(n, p)], cfg)
    return MuonWithAdamW(muon, adamw)


def is_hidden_matrix(name, p):
    """A weight matrix inside a transformer block: what Muon trains."""
    return name.startswith("transformer.h.") and p.dim() == 2


def _adamw(named, cfg):
    """AdamW with decay on matrices and embeddings only; biases and norm gains are not decayed. A classifier's new
    head (cls_head.*) gets groups of its own at cls_head_lr_scale times the rate (a fresh layer on top of trained
    ones may want a faster start)."""
    params = [p for _, p in named]

    def decay_groups(part, scale):
        return [{"params": [p for p in part if p.dim() >= 2], "weight_decay": cfg["weight_decay"], "lr_scale": scale},
                {"params": [p for p in part if p.dim() < 2], "weight_decay": 0.0, "lr_scale": scale}]

    head = [p for n, p in named if n.startswith("cls_head.")]
    groups = decay_groups([p for n, p in named if not n.startswith("cls_head.")], 1.0)
    if head:
        groups += decay_groups(head, cfg.get("cls_head_lr_scale", 1.0))
    fused = all(p.device.type == "cuda" for p in params)
    return torch.optim.AdamW(groups, lr=cfg["learning_rate"], betas=(cfg["beta1"], cfg["beta2"]), fused=fused)


def set_lr(optimizer, lr):
    """Set the scheduled lr: each group gets lr times its lr_scale (1 where a group has none: older checkpoints)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


class MuonWithAdamW:
    """Muon and AdamW, driven as one optimizer: param_groups is both optimizers' groups (the same dicts, so setting a
    group's lr sets it in its optimizer), and step/zero_grad/state_dict/load_state_dict do both.
    GradScaler only needs param_groups and step(): unscale_ unscales every group's gradients, and step() runs only
    when none is inf/NaN, as for a single torch optimizer."""

    def __init__(self, muon, adamw):
        self.muon, self.adamw = muon, adamw

    @property
    def param_groups(self):
        return self.muon.param_groups + self.adamw.param_groups

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("MuonWithAdamW.step does not take a closure")
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none=True):
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict):
        """Moments, momentum buffers and hyperparameters from the checkpoint; the lr scales stay this run's, as
        learning_rate does (a resumed run may change --muon_lr as it may change --learning_rate)."""
        if set(state_dict) != {"muon", "adamw"}:
            raise ValueError("the checkpoint's optimizer state is not Muon + AdamW's")
        scales = [g["lr_scale"] for g in self.param_groups]
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        for group, scale in zip(self.param_groups, scales):
            group["lr_scale"] = scale
