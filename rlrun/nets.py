"""Networks shared by the algorithms."""

from __future__ import annotations

import math
from functools import partial
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def hidden_layers(in_dim: int, hidden_sizes: Sequence[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """in → [Linear, activation] per hidden size: a torso whose output is features."""
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [nn.Linear(in_dim, size), activation()]
        in_dim = size
    return nn.Sequential(*layers)


def mlp(
    in_dim: int, hidden_sizes: Sequence[int], out_dim: int, activation: type[nn.Module] = nn.ReLU
) -> nn.Sequential:
    """in → [Linear, activation] per hidden size → OutputLinear → out."""
    torso = hidden_layers(in_dim, hidden_sizes, activation)
    return nn.Sequential(*torso, OutputLinear(hidden_sizes[-1] if hidden_sizes else in_dim, out_dim))


def in_float32(forward, x: torch.Tensor) -> torch.Tensor:
    """`forward(x)` computed in float32, also under bfloat16 autocast (precision=bfloat16)."""
    if not torch.is_autocast_enabled(x.device.type):
        return forward(x)
    with torch.autocast(x.device.type, enabled=False):
        return forward(x.float())


class OutputLinear(nn.Linear):
    """A network's last layer: float32 even under bfloat16 autocast. Its outputs are values,
    logits, means and log-stds, and bfloat16's 8-bit mantissa would round a Q-value near 500
    to a multiple of 4; hidden layers are where mixed precision saves time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_float32(super().forward, x)


class EnsembleLinear(nn.Module):
    """`n` independent Linear layers applied as one batched matmul: (n, B, in) → (n, B, out).

    Each member is initialised like nn.Linear, so an ensemble of n equals n separate MLPs.
    """

    def __init__(self, n: int, in_features: int, out_features: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        # kaiming_uniform(a=√5) as nn.Linear uses reduces to U(-1/√in, 1/√in) for the weights too.
        self.weight = nn.Parameter(torch.empty(n, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, 1, out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)

    def member(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Member `index` alone: (B, in) → (B, out)."""
        return torch.addmm(self.bias[index], x, self.weight[index])


class QEnsemble(nn.Module):
    """`n` state-action value functions Q_i(s, a), evaluated together; returns shape (n, B)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes: Sequence[int], n: int) -> None:
        super().__init__()
        self.n = n
        sizes = [obs_dim + action_dim, *hidden_sizes, 1]
        self.layers = nn.ModuleList(EnsembleLinear(n, a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, action], dim=-1).expand(self.n, -1, -1)
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return in_float32(self.layers[-1], x).squeeze(-1)  # see OutputLinear

    def member(self, index: int, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q_index(s, a) alone, shape (B,), at 1/n of the ensemble's cost: TD3's actor loss
        needs only Q_1, and evaluating every member would double its critic passes."""
        x = torch.cat([obs, action], dim=-1)
        for layer in self.layers[:-1]:
            x = F.relu(layer.member(index, x))
        return in_float32(partial(self.layers[-1].member, index), x).squeeze(-1)


class NatureCNN(nn.Module):
    """The Atari torso of Mnih et al. 2015: 3 conv layers and a 512-unit layer.

    Takes uint8 frame stacks (B, C, H, W) with values 0..255, scaled here to [0, 1], so that
    replay buffers can keep uint8. Returns (B, 512) features.
    """

    out_dim = 512

    def __init__(self, in_channels: int, height: int, width: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )
        conv_h, conv_w = nature_cnn_output_size(height), nature_cnn_output_size(width)
        self.fc = nn.Sequential(nn.Linear(64 * conv_h * conv_w, self.out_dim), nn.ReLU())

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(frames.float() / 255.0))


def nature_cnn_output_size(size: int) -> int:
    """Side of NatureCNN's last feature map for an input side of `size` pixels (84 → 7)."""
    for kernel, stride in ((8, 4), (4, 2), (3, 1)):
        size = (size - kernel) // stride + 1
    return size


class DuelingHead(nn.Module):
    """Q(s, a) = V(s) + A(s, a) − mean_a' A(s, a') (Wang et al. 2016, eq. 9).

    Subtracting the mean advantage makes V and A identifiable: Q − V has zero mean over actions.
    """

    def __init__(self, in_dim: int, num_actions: int) -> None:
        super().__init__()
        self.value = OutputLinear(in_dim, 1)
        self.advantage = OutputLinear(in_dim, num_actions)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        advantage = self.advantage(features)
        return self.value(features) + advantage - advantage.mean(dim=-1, keepdim=True)


LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # the original SAC implementation's clip


def tanh_gaussian_log_prob(pre_tanh: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log π(a|s) of a = tanh(u), u ~ N(mean, std), summed over action dimensions.

    Change of variables: log π(a) = log N(u) − Σ log(1 − tanh(u)²), with the stable form
    log(1 − tanh(u)²) = 2·(log 2 − u − softplus(−2u)).
    """
    normal_log_prob = (
        -0.5 * ((pre_tanh - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    )
    log_det = 2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))
    return (normal_log_prob - log_det).sum(-1)


class TanhGaussianActor(nn.Module):
    """A Gaussian policy squashed by tanh into [-1, 1]^|A| (SAC's actor)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes: Sequence[int]) -> None:
        super().__init__()
        self.trunk = hidden_layers(obs_dim, hidden_sizes)
        self.head = OutputLinear(hidden_sizes[-1], 2 * action_dim)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.head(self.trunk(obs)).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action in [-1, 1] and its log-probability."""
        mean, log_std = self(obs)
        pre_tanh = mean + log_std.exp() * torch.randn_like(mean)
        return torch.tanh(pre_tanh), tanh_gaussian_log_prob(pre_tanh, mean, log_std)

    def sample_action(self, obs: torch.Tensor) -> torch.Tensor:
        """`sample`'s action alone, from the same random draw; acting has no use for the
        log-probability, which is about a third of a one-observation call."""
        mean, log_std = self(obs)
        return torch.tanh(mean + log_std.exp() * torch.randn_like(mean))

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self(obs)[0])


class Adam:
    """Adam (Kingma & Ba 2015) on PyTorch's fused kernel: the same kernel and state that
    torch.optim.Adam(fused=True) uses, so the same numbers bit for bit, without torch.optim's
    wrapper, whose first use imports torch._dynamo (about 1.5 s of every run's start-up here).

    `lr` may be changed between steps (PPO anneals it).
    """

    def __init__(self, params, lr: float, eps: float = 1e-8, betas: tuple[float, float] = (0.9, 0.999)) -> None:
        self.params = list(params)
        self.lr, self.eps, self.betas = lr, eps, betas
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
        torch._fused_adam_(
            [self.params[i] for i in live], [self.params[i].grad for i in live],
            [self.exp_avgs[i] for i in live], [self.exp_avg_sqs[i] for i in live], [], steps,
            lr=self.lr, beta1=self.betas[0], beta2=self.betas[1], weight_decay=0.0, eps=self.eps,
            amsgrad=False, maximize=False, grad_scale=None, found_inf=None,
        )

    def state_dict(self) -> dict:
        return {"lr": self.lr, "exp_avgs": self.exp_avgs, "exp_avg_sqs": self.exp_avg_sqs, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.lr = state["lr"]
        for mine, saved in [(self.exp_avgs, state["exp_avgs"]), (self.exp_avg_sqs, state["exp_avg_sqs"]), (self.steps, state["steps"])]:
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


def compile_networks(agent: object) -> None:
    """torch.compile, in place, every network the agent holds. A module without a forward of
    its own (PPO's ActorCritic, whose methods call its sub-networks) has those compiled instead.
    In-place compilation keeps parameter names, so checkpoints do not change."""

    def visit(module: nn.Module) -> None:
        if type(module).forward is nn.Module.forward:
            for child in module.children():
                visit(child)
        else:
            module.compile()

    for value in vars(agent).values():
        if isinstance(value, nn.Module):
            visit(value)


def bfloat16_updates(agent: object) -> None:
    """Mixed precision for the agent's gradient updates (every algorithm's `update`): hidden
    layers run under bfloat16 autocast, output layers in float32 (OutputLinear); weights and
    optimiser state stay float32. Acting and evaluation stay float32.

    Autocast's cache of bfloat16 weight copies is off: it lives until the autocast region
    ends, so PPO's many optimiser steps inside one `update` would otherwise all use the
    weights from before the first."""
    agent.update = torch.autocast(agent.device.type, dtype=torch.bfloat16, cache_enabled=False)(agent.update)


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """θ_target ← (1 − τ)·θ_target + τ·θ_source, as one fused op over all parameters."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


class DeterministicActor(nn.Module):
    """μ(s) in [-1, 1]^|A| (TD3's and DDPG's actor): an MLP with a tanh output."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_sizes: Sequence[int]) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden_sizes, action_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))
