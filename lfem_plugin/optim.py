"""TransReID/LFEM optimiser (SGD, bias lr x2) and a warmup-cosine schedule with torchreid's ``step()`` contract.

Reference: LFEM paper Sec. 4.2 (SGD lr 8e-3, wd 1e-4, bias wd 1e-4, bias lr x2, linear warmup + cosine);
TransReID ``solver/make_optimizer.py`` and its cosine scheduler (``solver/cosine_lr.py``).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

import torch
from timm.scheduler import CosineLRScheduler
from torch import nn

__all__ = ["build_optimizer", "step_kernels", "guarded_step", "WarmupCosineLR"]


def step_kernels(device: Optional[Union[str, torch.device]]) -> Dict[str, bool]:
    """``{'fused': True}`` on CUDA (one kernel per step for all parameters; it also skips a step on the device, see
    :func:`guarded_step`), ``{'foreach': True}`` elsewhere (multi-tensor kernels; CPU). Same arithmetic as the
    per-parameter loop up to float rounding."""
    return {"fused": True} if torch.device(device).type == "cuda" else {"foreach": True}


def build_optimizer(model: nn.Module, optim: str = "sgd", lr: float = 8e-3, weight_decay: float = 1e-4,
                    momentum: float = 0.9, bias_lr_factor: float = 2.0, weight_decay_bias: float = 1e-4,
                    device: Optional[Union[str, torch.device]] = None) -> torch.optim.Optimizer:
    """Two parameter groups: weights (``lr``, ``weight_decay``) and biases (``lr * bias_lr_factor``,
    ``weight_decay_bias``); parameters with ``requires_grad=False`` are left out.

    Equivalent to TransReID's one-group-per-parameter optimiser (a parameter is a "bias" when its name contains
    ``bias``), with two groups instead of hundreds. ``device`` (default: CUDA when every parameter is on CUDA)
    picks the step kernels, :func:`step_kernels`.
    """
    groups: Dict[bool, List[nn.Parameter]] = {False: [], True: []}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups["bias" in name].append(param)
    params = [{"params": groups[False], "lr": lr, "weight_decay": weight_decay, "name": "weights"},
              {"params": groups[True], "lr": lr * bias_lr_factor, "weight_decay": weight_decay_bias, "name": "biases"}]
    params = [g for g in params if g["params"]]
    if device is None:
        device = "cuda" if all(p.is_cuda for g in params for p in g["params"]) and params else "cpu"
    if optim == "sgd":
        optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, **step_kernels(device))
        if optimizer.defaults["fused"] and momentum:
            # Fused SGD makes its momentum with empty_like on the first step; a first step skipped on the device
            # (GradScaler's overflow, guarded_step) would leave it uninitialised. Zeros give the same first update
            # (dampening 0: buffer = gradient).
            for param in (p for g in params for p in g["params"]):
                optimizer.state[param]["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return optimizer
    if optim == "adamw":
        return torch.optim.AdamW(params, lr=lr, **step_kernels(device))
    raise ValueError(f"unknown optimiser {optim!r}; choices: 'sgd', 'adamw'")


def guarded_step(optimizer: torch.optim.Optimizer, ok: torch.Tensor) -> None:
    """``optimizer.step()`` that changes nothing when the 0-dim bool tensor ``ok`` is False, without reading
    ``ok`` to the host (no device sync).

    Fused optimizers skip the step on the device (``found_inf``, the mechanism GradScaler uses): parameters and
    optimiser state stay as they were. Others step, and the parameters are put back with ``torch.where``: the
    weights stay as they were, the optimiser state may not (a non-finite loss ends the run before any checkpoint,
    so that state is never saved); this costs one copy of the parameters per step.
    """
    if getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.grad_scale, optimizer.found_inf = None, (~ok).float()
        try:
            optimizer.step()
        finally:
            del optimizer.grad_scale, optimizer.found_inf
        return
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    before = [p.detach().clone() for p in params]
    optimizer.step()
    with torch.no_grad():
        for param, old in zip(params, before):
            param.copy_(torch.where(ok, param, old))


class WarmupCosineLR:
    """Linear warmup then cosine decay, stepped once per epoch with no argument (torchreid's engine contract).

    Built on timm's ``CosineLRScheduler`` with TransReID's values: warmup from ``warmup_factor * lr`` for
    ``warmup_epochs``, cosine (counted from epoch 0) down to ``min_lr_factor * lr`` at ``max_epoch``. As in
    TransReID, the schedule is evaluated at ``t = 1`` for the first epoch, ``t = 2`` for the second, and so on.

    Reference: TransReID ``solver/cosine_lr.py`` (timm's ``CosineLRScheduler`` with warmup); LFEM paper Sec. 4.2.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, max_epoch: int, warmup_epochs: int = 5,
                 warmup_factor: float = 0.01, min_lr_factor: float = 0.002) -> None:
        base_lr = optimizer.param_groups[0]["lr"]
        self.optimizer = optimizer
        self.scheduler = CosineLRScheduler(optimizer, t_initial=max_epoch, lr_min=min_lr_factor * base_lr,
                                           cycle_mul=1.0, cycle_decay=0.1, warmup_lr_init=warmup_factor * base_lr,
                                           warmup_t=warmup_epochs, cycle_limit=1, t_in_epochs=True)
        self.last_epoch = 0  # number of finished epochs
        self.scheduler.step(1)

    def step(self) -> None:
        """End of an epoch: set the learning rates of the next one."""
        self.last_epoch += 1
        self.scheduler.step(self.last_epoch + 1)

    def get_last_lr(self) -> List[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> Dict[str, Any]:
        return {"last_epoch": self.last_epoch, "timm": self.scheduler.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Resume at ``state``'s epoch on *this* schedule: the next epochs get the learning rates a fresh run with
        this scheduler's arguments (the current config) has at them. The stored timm state (its ``base_values``,
        ``t_initial``, warmup) is not loaded: it would bring back the old run's schedule; with the same arguments
        both give the same rates."""
        self.last_epoch = int(state["last_epoch"])
        self.scheduler.step(self.last_epoch + 1)

    def changes(self, state: Dict[str, Any]) -> List[str]:
        """How this schedule differs from the one stored in ``state`` (``name: stored -> current``; [] if none)."""
        stored, current = state.get("timm", {}), self.scheduler.state_dict()
        names = ("base_values", "t_initial", "lr_min", "warmup_t", "warmup_lr_init")
        return [f"{name}: {stored[name]} -> {current[name]}" for name in names
                if name in stored and stored[name] != current[name]]
