"""Decision Transformer: offline RL as sequence modelling, acting on the return it is asked for.

Chen et al. 2021, "Decision Transformer: Reinforcement Learning via Sequence Modeling"
(arXiv:2106.01345; code: github.com/kzl/decision-transformer, gym/). A causal transformer reads
the last K steps of an episode as tokens (R̂_1, s_1, a_1, ..., R̂_K, s_K, a_K), where R̂_t is the
return-to-go Σ_{t'≥t} r_t', and is trained to predict each a_t from the output at s_t (mean
squared error; tanh outputs in [-1, 1], the action space's units). To act, it is given a target
return R̂_1 and, after each step, R̂_{t+1} = R̂_t − r_t; asking for more return asks for the
actions that earned more in the dataset. Learns from `dataset=` by gradient steps on context
windows drawn from the dataset's episodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlrun.blocks.optim import Adam, gradient_step
from rlrun.blocks.policy_modules import RescaleToBounds
from rlrun.blocks.spaces import BoxActions, check_continuous_spaces
from rlrun.blocks.state import Checkpointed
from rlrun.config import ConfigError, non_negative, positive
from rlrun.envs.datasets import DatasetInfo
from rlrun.loops.dataset import DatasetNormalizer
from rlrun.protocols import RunContext


@dataclass(frozen=True)
class DTConfig:
    """Decision Transformer's settings; defaults are the paper's for the D4RL MuJoCo tasks
    (Chen et al. 2021, Table 8, and gym/experiment.py of github.com/kzl/decision-transformer),
    whose runs take 100,000 gradient steps."""

    context_length: int = 20
    """K, the steps of an episode the transformer sees at once: 3K tokens (the paper's 20)."""
    num_layers: int = 3
    """Transformer blocks (the paper's 3)."""
    num_heads: int = 1
    """Attention heads per block; must divide embed_dim (the paper's 1)."""
    embed_dim: int = 128
    """Width of every token's embedding (the paper's 128)."""
    dropout: float = 0.1
    """Dropout on embeddings, attention weights and residual branches while training (the
    paper's 0.1)."""
    lr: float = 1e-4
    """AdamW step size after the warm-up (the paper's 1e-4)."""
    warmup_steps: int = 10_000
    """The step size rises linearly from lr / warmup_steps to lr over these gradient steps
    (the paper's 10,000)."""
    weight_decay: float = 1e-4
    """AdamW's decoupled weight decay, on every parameter (the paper's 1e-4)."""
    batch_size: int = 64
    """Context windows sampled per gradient step (the paper's 64)."""
    max_grad_norm: float = 0.25
    """The gradient is rescaled to at most this L2 norm (the paper's 0.25)."""
    return_scale: float = 1000.0
    """Returns-to-go are divided by this before they are embedded (the paper's 1000 for
    MuJoCo's returns in the thousands; choose about the dataset's return range)."""
    target_return: float | None = None
    """R̂_1, the return asked for at evaluation, in the environment's units (the paper's
    HalfCheetah 6000, Hopper 3600, Walker2d 5000); null asks for the dataset's best episode
    return. Fixed for the run: evaluate= and export= use the run's."""
    max_timestep: int = 1000
    """Size of the timestep embedding table: the longest episode it can read (the paper's
    max_ep_len 1000); later timesteps at evaluation use the last entry."""
    normalize_obs: bool = True
    """Standardise observations with the dataset's per-dimension mean and standard deviation,
    as the paper does (saved in checkpoints, applied when acting and in the exported policy)."""

    def __post_init__(self) -> None:
        positive("algo.context_length", self.context_length)
        positive("algo.num_layers", self.num_layers)
        positive("algo.num_heads", self.num_heads)
        positive("algo.embed_dim", self.embed_dim)
        positive("algo.warmup_steps", self.warmup_steps)
        positive("algo.batch_size", self.batch_size)
        positive("algo.max_timestep", self.max_timestep)
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"algo.num_heads={self.num_heads} must divide algo.embed_dim={self.embed_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"algo.dropout={self.dropout} must lie in [0, 1)")
        positive("algo.lr", self.lr)
        non_negative("algo.weight_decay", self.weight_decay)
        positive("algo.max_grad_norm", self.max_grad_norm)
        positive("algo.return_scale", self.return_scale)
        if self.target_return is not None and not math.isfinite(self.target_return):
            raise ConfigError(f"algo.target_return={self.target_return} must be a finite number, or null for the dataset's best")


# ----- the dataset as context windows --------------------------------------------------------
class ContextWindows:
    """The dataset on the device, sampled as windows of K consecutive steps of one episode,
    each ending at a transition drawn uniformly from the whole dataset. A window that would
    reach back before its episode's start is left-padded: padded steps have zero inputs,
    timestep 0 and mask False, and are neither attended to nor trained on."""

    def __init__(self, obs, unit_actions, rewards, first, context_length: int, device: torch.device, seed: int) -> None:
        n = len(rewards)
        starts = np.maximum.accumulate(np.where(first, np.arange(n), 0))  # each transition's episode start
        self.timesteps = torch.as_tensor(np.arange(n) - starts, device=device)
        self.episode_start = torch.as_tensor(starts, device=device)
        self.returns_to_go = torch.as_tensor(returns_to_go(rewards, first), device=device)
        self.obs = torch.as_tensor(obs, device=device)
        self.actions = torch.as_tensor(unit_actions, device=device)
        self.size, self.context_length = n, context_length
        self.offsets = torch.arange(1 - context_length, 1, device=device)  # K positions, the last one 0
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        ends = torch.randint(self.size, (batch_size,), generator=self.generator, device=self.offsets.device)
        return self.window(ends)

    def window(self, ends: torch.Tensor) -> dict[str, torch.Tensor]:
        """The K-step windows ending at transitions `ends` (B,): returns_to_go (B, K, 1),
        obs (B, K, obs_dim), actions (B, K, action_dim), timesteps (B, K), mask (B, K)."""
        index = ends[:, None] + self.offsets  # (B, K)
        mask = index >= self.episode_start[ends][:, None]
        index = torch.where(mask, index, ends[:, None])  # padded steps read a real row, then zeroed
        keep = mask[..., None].float()
        return {
            "returns_to_go": self.returns_to_go[index][..., None] * keep,
            "obs": self.obs[index] * keep,
            "actions": self.actions[index] * keep,
            "timesteps": self.timesteps[index] * mask,
            "mask": mask,
        }

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "size": self.size}

    def load_state_dict(self, state: dict) -> None:
        if state["size"] != self.size:
            raise ConfigError(
                f"the checkpoint was trained on a dataset of {state['size']} transitions, but dataset= now holds "
                f"{self.size}; resume with the dataset it started with, or start a new run folder"
            )
        self.generator.set_state(state["generator"])


def returns_to_go(rewards: np.ndarray, first: np.ndarray) -> np.ndarray:
    """R̂_t = Σ_{t'=t}^{T} r_t' within each episode (undiscounted, as the paper's)."""
    found = np.zeros(len(rewards), dtype=np.float64)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + running
        found[t] = running
        if first[t]:
            running = 0.0
    return found.astype(np.float32)


# ----- the transformer -------------------------------------------------------------------------
class CausalSelfAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.out = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x (B, T, E); allowed (B, 1, T, T): query i may attend to key j."""
        b, t, e = x.shape
        heads = self.num_heads
        q, k, v = (z.view(b, t, heads, e // heads).transpose(1, 2) for z in self.qkv(x).split(self.embed_dim, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, t, e))


class Block(nn.Module):
    """A GPT-2 block: x + attention(LN(x)), then x + MLP(LN(x)), the MLP 4× wide with GELU."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(embed_dim), nn.LayerNorm(embed_dim)
        self.attention = CausalSelfAttention(embed_dim, num_heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, 4 * embed_dim), nn.GELU(), nn.Linear(4 * embed_dim, embed_dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attention(self.ln1(x), allowed))
        return x + self.drop(self.mlp(self.ln2(x)))


class DecisionTransformerNet(nn.Module):
    """(returns-to-go, observations, actions, timesteps, mask) over K steps → predicted unit
    actions (B, K, action_dim), each from its step's observation token. Each of the 3K tokens
    is its input's linear embedding plus its timestep's embedding (the paper's replacement for
    GPT-2's positional embedding); observations arrive already normalised."""

    def __init__(self, obs_dim: int, action_dim: int, config: DTConfig) -> None:
        super().__init__()
        e = config.embed_dim
        self.max_timestep = config.max_timestep
        self.embed_timestep = nn.Embedding(config.max_timestep, e)
        self.embed_return = nn.Linear(1, e)
        self.embed_obs = nn.Linear(obs_dim, e)
        self.embed_action = nn.Linear(action_dim, e)
        self.embed_ln = nn.LayerNorm(e)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(e, config.num_heads, config.dropout) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(e)
        self.predict_action = nn.Sequential(nn.Linear(e, action_dim), nn.Tanh())

    def forward(
        self, returns_to_go: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor, timesteps: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        b, k = mask.shape
        time = self.embed_timestep(timesteps.clamp(0, self.max_timestep - 1))
        tokens = torch.stack(
            [self.embed_return(returns_to_go) + time, self.embed_obs(obs) + time, self.embed_action(actions) + time], dim=2
        ).reshape(b, 3 * k, -1)  # R̂_1, s_1, a_1, R̂_2, ...
        x = self.drop(self.embed_ln(tokens))
        x_mask = mask.repeat_interleave(3, dim=1)  # (B, 3K)
        causal = torch.ones(3 * k, 3 * k, dtype=torch.bool, device=mask.device).tril()
        # Keys: earlier real tokens; each token also sees itself, so that a padded one's row is not empty.
        allowed = (causal & x_mask[:, None, :]) | torch.eye(3 * k, dtype=torch.bool, device=mask.device)
        for block in self.blocks:
            x = block(x, allowed[:, None])
        x = self.ln_f(x).reshape(b, k, 3, -1)
        return self.predict_action(x[:, :, 1])  # a_t from s_t's output


class ContextPolicy(nn.Module):
    """The exported policy: raw (unnormalised) context → the last step's action in the
    environment's units. Inputs: returns_to_go (B, K, 1) already divided by return_scale,
    obs (B, K, obs_dim), actions (B, K, action_dim) in [-1, 1], timesteps (B, K) int64 and
    mask (B, K) bool, left-padded: the newest step is the last, its action any value."""

    def __init__(self, normalizer: DatasetNormalizer, net: DecisionTransformerNet, low: np.ndarray, high: np.ndarray) -> None:
        super().__init__()
        self.normalizer, self.net, self.rescale = normalizer, net, RescaleToBounds(low, high)

    def forward(self, returns_to_go, obs, actions, timesteps, mask) -> torch.Tensor:
        return self.rescale(self.net(returns_to_go, self.normalizer(obs), actions, timesteps, mask)[:, -1])


# ----- the algorithm -----------------------------------------------------------------------------
class DecisionTransformer(Checkpointed):
    Config = DTConfig
    action_spaces = (gym.spaces.Box,)
    name = "dt"

    @classmethod
    def check_spaces(cls, config: DTConfig, obs_space: gym.Space, action_space: gym.Space) -> None:
        check_continuous_spaces(cls.name, obs_space, action_space)

    @classmethod
    def check_dataset(cls, config: DTConfig, info: DatasetInfo) -> None:
        if config.context_length > info.longest_episode:
            raise ConfigError(
                f"algo.context_length={config.context_length} is longer than every episode of dataset={info.source} "
                f"(the longest has {info.longest_episode} steps); choose at most {info.longest_episode}"
            )
        if info.longest_episode > config.max_timestep:
            raise ConfigError(
                f"dataset={info.source} has an episode of {info.longest_episode} steps, longer than "
                f"algo.max_timestep={config.max_timestep}; set algo.max_timestep={info.longest_episode} or more"
            )

    def __init__(self, config: DTConfig, obs_space: gym.Space, action_space: gym.Space, device: torch.device, seed: int) -> None:
        self.config = config
        self.device = device
        self.seed = seed
        self.obs_dim, self.action_dim = obs_space.shape[0], action_space.shape[0]
        self.actions = BoxActions(action_space)
        self.normalizer = DatasetNormalizer(self.obs_dim, config.normalize_obs).to(device)
        self.net = DecisionTransformerNet(self.obs_dim, self.action_dim, config).to(device)
        self.optimizer = Adam(self.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.updates = 0
        # R̂_1 at evaluation, in the environment's units: the setting, or the dataset's best return (set by train).
        self.target_return = torch.tensor(config.target_return if config.target_return is not None else 0.0)
        self.begin_episode()

    # ----- acting (rlrun.protocols.EpisodeAware) ------------------------------------------------
    def begin_episode(self) -> None:
        """An empty context, its return-to-go the target."""
        k = self.config.context_length
        self.context = {
            "returns_to_go": torch.zeros(1, k, 1, device=self.device),
            "obs": torch.zeros(1, k, self.obs_dim, device=self.device),
            "actions": torch.zeros(1, k, self.action_dim, device=self.device),
            "timesteps": torch.zeros(1, k, dtype=torch.long, device=self.device),
            "mask": torch.zeros(1, k, dtype=torch.bool, device=self.device),
        }
        self.return_to_go = float(self.target_return)
        self.timestep = 0

    def observe_reward(self, reward: float) -> None:
        """R̂_{t+1} = R̂_t − r_t."""
        self.return_to_go -= reward
        self.timestep += 1

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """The action for `obs` given the episode so far, in environment units; deterministic
        either way. The context shifts left by one step and the newest step enters on the right."""
        step = {
            "returns_to_go": torch.tensor([self.return_to_go / self.config.return_scale], device=self.device),
            "obs": torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device),
            "actions": torch.zeros(self.action_dim, device=self.device),
            "timesteps": torch.tensor(self.timestep, device=self.device),
            "mask": torch.tensor(True, device=self.device),
        }
        for name, value in step.items():
            self.context[name] = torch.cat([self.context[name][:, 1:], value[None, None]], dim=1)
        self.net.eval()
        c = self.context
        unit_action = self.net(c["returns_to_go"], self.normalizer(c["obs"]), c["actions"], c["timesteps"], c["mask"])[0, -1]
        self.net.train()
        self.context["actions"][0, -1] = unit_action
        return self.actions.to_env(unit_action.cpu().numpy())

    def policy_module(self) -> nn.Module:
        return ContextPolicy(self.normalizer, self.net, self.actions.low, self.actions.high).eval()

    def export_example(self, batch: int) -> dict[str, torch.Tensor]:
        """Inputs for `rlrun export=` (ContextPolicy's), by name: a batch of one-step contexts."""
        k = self.config.context_length
        mask = torch.zeros(batch, k, dtype=torch.bool)
        mask[:, -1] = True
        return {
            "returns_to_go": torch.zeros(batch, k, 1),
            "obs": torch.zeros(batch, k, self.obs_dim),
            "actions": torch.zeros(batch, k, self.action_dim),
            "timesteps": torch.zeros(batch, k, dtype=torch.long),
            "mask": mask,
        }

    # ----- learning ------------------------------------------------------------------------------
    def update(self, window: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # Linear warm-up: lr · min(1, (n + 1) / warmup_steps) at update n.
        self.optimizer.lr = self.config.lr * min(1.0, (self.updates + 1) / self.config.warmup_steps)
        predicted = self.net(
            window["returns_to_go"] / self.config.return_scale,
            self.normalizer(window["obs"]),
            window["actions"],
            window["timesteps"],
            window["mask"],
        )
        # Mean squared error over the real (unpadded) steps' actions.
        mask = window["mask"][..., None].float()
        loss = (((predicted - window["actions"]) ** 2) * mask).sum() / (mask.sum() * self.action_dim)
        gradient_step(self.optimizer, loss, self.config.max_grad_norm)
        self.updates += 1
        return {"losses/action": loss.detach()}

    def train(self, run: RunContext) -> None:
        data = run.dataset()
        unit_actions = np.clip(self.actions.to_unit(data.actions), -1.0, 1.0).astype(np.float32)
        windows = ContextWindows(
            data.obs, unit_actions, data.rewards, data.first, self.config.context_length, self.device, self.seed
        )
        # A resumed run restores the same statistics and target from its checkpoint.
        self.normalizer.fit(windows.obs)
        if self.config.target_return is None:
            self.target_return = windows.returns_to_go[windows.timesteps == 0].max().cpu()
        _, step = run.start(self, loop={"sampling": windows})
        while step < run.total_steps:
            step += 1
            run.record(self.update(windows.sample(self.config.batch_size)))
            run.after_step(step)

    # ----- checkpoints ---------------------------------------------------------------------------
    checkpointed = ("normalizer", "net", "optimizer", "updates", "target_return")
