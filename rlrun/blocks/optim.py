"""The optimiser every algorithm uses, and one gradient step with optional norm clipping."""

from __future__ import annotations

import torch
from torch import nn


class Adam:
    """Adam (Kingma & Ba 2015) on PyTorch's fused kernel: the same kernel and state that
    torch.optim.Adam(fused=True) uses, so the same numbers bit for bit, without torch.optim's
    wrapper, whose first use imports torch._dynamo, a slow import every run would wait for.

    `lr` may be changed between steps (PPO anneals it). A positive `weight_decay` makes it
    AdamW (Loshchilov & Hutter 2019): θ ← θ − lr·weight_decay·θ besides the Adam step,
    decoupled from the gradient's moments (torch.optim.AdamW(fused=True)'s kernel).
    """

    def __init__(
        self,
        params,
        lr: float,
        eps: float = 1e-8,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
    ) -> None:
        self.params = list(params)
        self.lr, self.eps, self.betas, self.weight_decay = lr, eps, betas, weight_decay
        self.exp_avgs = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.params]
        # One step count per parameter, on its device: the fused kernel's bias corrections use it.
        self.steps = [torch.zeros((), device=p.device) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        steps = [self.steps[i] for i in live]
        torch._foreach_add_(steps, 1)
        kernel = torch._fused_adamw_ if self.weight_decay else torch._fused_adam_
        kernel(
            [self.params[i] for i in live],
            [self.params[i].grad for i in live],
            [self.exp_avgs[i] for i in live],
            [self.exp_avg_sqs[i] for i in live],
            [],
            steps,
            lr=self.lr,
            beta1=self.betas[0],
            beta2=self.betas[1],
            weight_decay=self.weight_decay,
            eps=self.eps,
            amsgrad=False,
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )

    def state_dict(self) -> dict:
        return {"lr": self.lr, "exp_avgs": self.exp_avgs, "exp_avg_sqs": self.exp_avg_sqs, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.lr = state["lr"]
        for mine, saved in [
            (self.exp_avgs, state["exp_avgs"]),
            (self.exp_avg_sqs, state["exp_avg_sqs"]),
            (self.steps, state["steps"]),
        ]:
            for tensor, value in zip(mine, saved, strict=True):
                tensor.copy_(value)


def adam(params, lr: float, eps: float = 1e-8) -> Adam:
    return Adam(params, lr=lr, eps=eps)


def gradient_step(optimizer: Adam, loss: torch.Tensor, max_grad_norm: float | None = None) -> None:
    """One optimiser step on `loss`; if `max_grad_norm` is set, the gradient of all the
    optimiser's parameters together is first rescaled to at most that L2 norm."""
    optimizer.zero_grad()
    # Under mixed precision (precision=bfloat16) only forward passes autocast; backward ops
    # follow the dtypes the forward chose, as PyTorch's AMP recipe has it.
    with torch.autocast(loss.device.type, enabled=False):
        loss.backward()
    if max_grad_norm is not None:
        nn.utils.clip_grad_norm_(optimizer.params, max_grad_norm, foreach=True)
    optimizer.step()
