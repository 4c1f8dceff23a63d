"""Proximal Policy Optimization with clipped surrogate and GAE(λ).

Schulman et al. 2017, "Proximal Policy Optimization Algorithms" (arXiv:1707.06347); the
advantages are Schulman et al. 2016's "High-Dimensional Continuous Control Using Generalized
Advantage Estimation" (arXiv:1506.02438). Implementation details follow CleanRL's
ppo_continuous_action.py / ppo.py (orthogonal init, state-independent log-std, per-minibatch
advantage normalisation, value clipping, ½·MSE value loss, Adam ε = 1e-5).

Box actions: a Gaussian policy N(μ(s), diag σ²) with a learnt, state-independent log σ; the
sampled (unclipped) action is what is stored and scored, and it is clipped to the action
bounds only when sent to the environment. Discrete actions: a categorical policy.

Vector observations get separate policy and value MLPs. Image observations (uint8 frame stacks
(C, H, W), as rlrun/envs/make.py's Atari preprocessing makes them) get one Nature CNN shared by a
linear policy head and a linear value head, as CleanRL's ppo_atari.py; the frames stay uint8 in
the rollout and the CNN scales them by 1/255.

Gymnasium ≥ 1.0 vector envs autoreset in NEXT_STEP mode: the step where a sub-env terminates
or truncates returns that episode's *final* observation; the *next* step ignores the action,
resets the sub-env and returns (reset obs, reward 0, terminated = truncated = False). So the
observation stream already contains every final observation, and V(final obs) is simply the
value of the next stored observation; the autoreset step itself is not a transition and is
masked out of the loss, the statistics and the reward normaliser (see `train`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Normal

from rlrun.blocks.buffers import to_device
from rlrun.blocks.nets import NatureCNN, check_image_space, is_image, mlp
from rlrun.blocks.normalize import EPSILON as NORMALIZE_EPSILON
from rlrun.blocks.normalize import RewardScaler, RunningMeanStd
from rlrun.blocks.optim import adam, gradient_step
from rlrun.blocks.policy_modules import Argmax, ClipToBounds, Standardize
from rlrun.blocks.state import Checkpointed
from rlrun.config import ConfigError, in_range, layer_sizes, non_negative, positive
from rlrun.protocols import RunContext

NORMALIZE_CLIP = 10.0  # normalised observations and rewards are clipped to ±this (SB3, CleanRL)


@dataclass(frozen=True)
class PPOConfig:
    """PPO's hyperparameters; defaults are CleanRL ppo_continuous_action.py's, the PPO paper's
    MuJoCo settings; fields say where Stable-Baselines3's PPO defaults differ."""

    lr: float = 3e-4
    """Adam step size; actor, critic and log σ share one optimiser."""
    anneal_lr: bool = True
    """Decay lr linearly towards 0 over the run, once per rollout (CleanRL; SB3 keeps it
    constant)."""
    num_envs: int = 1
    """Environments stepped together as one Gymnasium vector env; sub-environment i is seeded
    seed + i."""
    async_envs: bool = False
    """Step each environment in its own subprocess (AsyncVectorEnv); pays only when an
    environment step costs more than the inter-process round trip."""
    num_steps: int = 2048
    """Environment steps per environment per rollout; a rollout is num_envs × num_steps
    transitions (SB3's n_steps)."""
    gamma: float = 0.99
    """Discount factor; also the discount of the return that reward normalisation tracks."""
    gae_lambda: float = 0.95
    """GAE's λ: 0 gives the one-step TD advantage, 1 the Monte Carlo return minus V."""
    num_minibatches: int = 32
    """Minibatches each rollout is split into, per epoch (SB3's batch_size 64 = 2048 / 32)."""
    update_epochs: int = 10
    """Passes over each rollout (SB3's n_epochs)."""
    clip_coef: float = 0.2
    """ε of the clipped surrogate ratio, PPO paper eq. 7 (and the value clipping's range)."""
    clip_value_loss: bool = True
    """Clip the value update around the rollout's values by ±clip_coef (CleanRL; SB3 does not
    clip by default)."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus."""
    vf_coef: float = 0.5
    """Weight of the value loss, which here is ½·MSE (CleanRL); SB3's 0.5 weighs the plain
    MSE, i.e. vf_coef 1.0 here."""
    max_grad_norm: float = 0.5
    """Clip the global gradient L2 norm of each minibatch step to this."""
    normalize_advantage: bool = True
    """Standardise advantages within each minibatch."""
    normalize_obs: bool = True
    """Standardise observations by their running mean and std (clipped to ±10), as CleanRL's
    NormalizeObservation (SB3: the VecNormalize wrapper, not on by default); the statistics are
    checkpointed and used frozen at evaluation. Vector observations only: image observations
    are scaled by 1/255 instead and need this false."""
    normalize_reward: bool = True
    """Divide rewards by the running std of the discounted return (clipped to ±10), as
    CleanRL's NormalizeReward (SB3: VecNormalize again)."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the policy MLP and, separately, of the value MLP (vector
    observations; image observations get the Nature CNN shared by both heads instead)."""
    activation: Literal["tanh", "relu"] = "tanh"
    """Hidden-layer activation of the MLPs (the Nature CNN is ReLU throughout)."""
    ortho_init: bool = True
    """Orthogonal initialisation (gain √2, the Nature CNN's layers too; policy head 0.01 so the
    first policy is near-uniform, value head 1), zero biases; false keeps PyTorch's default."""
    log_std_init: float = 0.0
    """Initial log σ of the Gaussian policy (Box actions only); 0 starts with σ = 1."""

    @property
    def batch_size(self) -> int:
        """Transitions per rollout: num_envs × num_steps."""
        return self.num_envs * self.num_steps

    def __post_init__(self) -> None:
        positive("algo.lr", self.lr)
        positive("algo.num_envs", self.num_envs)
        positive("algo.num_steps", self.num_steps)
        in_range("algo.gamma", self.gamma, 0.0, 1.0)
        in_range("algo.gae_lambda", self.gae_lambda, 0.0, 1.0)
        positive("algo.num_minibatches", self.num_minibatches)
        positive("algo.update_epochs", self.update_epochs)
        if self.batch_size < 2 * self.num_minibatches:
            raise ConfigError(
                f"algo.num_minibatches={self.num_minibatches} is too many for a rollout of "
                f"algo.num_envs × algo.num_steps = {self.batch_size} transitions; each minibatch needs at least 2"
            )
        positive("algo.clip_coef", self.clip_coef)
        non_negative("algo.ent_coef", self.ent_coef)
        non_negative("algo.vf_coef", self.vf_coef)
        positive("algo.max_grad_norm", self.max_grad_norm)
        layer_sizes("algo.hidden_sizes", self.hidden_sizes)


# ----- GAE ----------------------------------------------------------------------------------
def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """GAE(λ) advantages for a rollout; every argument has shape (T, num_envs).

        δ_t = r_t + γ·(1 − terminated_t)·V(s_{t+1}) − V(s_t)
        Â_t = δ_t + γλ·(1 − done_t)·Â_{t+1},     Â_T = 0

    `next_values[t]` is V of the observation that step t returned — on a truncation that is the
    episode's real final observation, so the time limit is bootstrapped; a termination is not.
    `dones` (terminated or truncated) stops the recursion at episode ends.
    """
    not_terminated, not_done = 1.0 - terminated.float(), 1.0 - dones.float()
    deltas = rewards + gamma * not_terminated * next_values - values
    advantages = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        running = deltas[t] + gamma * lam * not_done[t] * running
        advantages[t] = running
    return advantages


# ----- networks -----------------------------------------------------------------------------
def _orthogonal_init(layers: list[nn.Module], last_gain: float) -> None:
    """Orthogonal weights with gain √2, `last_gain` for the last layer; zero biases (CleanRL, SB3)."""
    for layer in layers:
        nn.init.orthogonal_(layer.weight, last_gain if layer is layers[-1] else math.sqrt(2))
        nn.init.zeros_(layer.bias)


def _mlp(in_dim: int, hidden_sizes: tuple[int, ...], out_dim: int, config: PPOConfig, out_gain: float) -> nn.Sequential:
    """An MLP with the configured activation. With `ortho_init`, weights are orthogonal with
    gain √2 in hidden layers and `out_gain` in the last one, biases zero; otherwise PyTorch's
    default init. No hidden sizes: one linear layer (a head on the CNN's features)."""
    net = mlp(in_dim, hidden_sizes, out_dim, activation={"tanh": nn.Tanh, "relu": nn.ReLU}[config.activation])
    if config.ortho_init:
        _orthogonal_init([layer for layer in net if isinstance(layer, nn.Linear)], out_gain)
    return net


class ActorCritic(nn.Module):
    """Policy and value heads on a torso: for vectors, no torso and separate MLPs; for images,
    one Nature CNN and two linear heads. For Box actions also a state-independent log σ."""

    def __init__(self, obs_space: gym.spaces.Box, action_space: gym.Space, config: PPOConfig) -> None:
        super().__init__()
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        out_dim = int(action_space.n) if self.discrete else action_space.shape[0]
        if is_image(obs_space):
            # Shared, so the value loss shapes the features the policy sees (CleanRL ppo_atari.py).
            self.torso: nn.Module = NatureCNN(*obs_space.shape)
            if config.ortho_init:
                _orthogonal_init([m for m in self.torso.modules() if isinstance(m, nn.Conv2d | nn.Linear)], math.sqrt(2))
            features, hidden_sizes = NatureCNN.out_dim, ()
        else:
            self.torso = nn.Identity()
            features, hidden_sizes = obs_space.shape[0], config.hidden_sizes
        # Small last-layer gain: the initial policy is near-uniform / near-zero-mean.
        self.actor = _mlp(features, hidden_sizes, out_dim, config, out_gain=0.01)
        self.critic = _mlp(features, hidden_sizes, 1, config, out_gain=1.0)
        if not self.discrete:
            self.log_std = nn.Parameter(torch.full((out_dim,), config.log_std_init))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s), shape (B,)."""
        return self.critic(self.torso(obs)).squeeze(-1)

    def distribution(self, obs: torch.Tensor) -> Distribution:
        """π(·|s)."""
        return self._distribution(self.actor(self.torso(obs)))

    def distribution_and_value(self, obs: torch.Tensor) -> tuple[Distribution, torch.Tensor]:
        """π(·|s) and V(s), through the torso once."""
        features = self.torso(obs)
        return self._distribution(self.actor(features)), self.critic(features).squeeze(-1)

    def _distribution(self, out: torch.Tensor) -> Distribution:
        """validate_args=False: the argument checks would sync the device every call."""
        if self.discrete:
            return Categorical(logits=out, validate_args=False)
        return Normal(out, self.log_std.exp().expand_as(out), validate_args=False)

    def sample(self, dist: Distribution) -> torch.Tensor:
        """An action from π(·|s). For Box, the reparameterised draw μ + σ·ε: the same numbers as
        Normal.sample, without its check that σ ≥ 0, which waits for the device every call."""
        return dist.sample() if self.discrete else dist.rsample()

    def log_prob_entropy(self, dist: Distribution, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log π(a|s) and the entropy H[π(·|s)], summed over action dimensions for Box."""
        if self.discrete:
            return dist.log_prob(actions), dist.entropy()
        return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        """The mode: argmax for categorical, the mean for Gaussian."""
        out = self.actor(self.torso(obs))
        return out.argmax(-1) if self.discrete else out


class Rollout:
    """One rollout's storage, (T, N, ...) on the device, and how far it is filled; a
    checkpoint taken mid-rollout saves it so that a resumed run finishes the same rollout."""

    def __init__(
        self,
        T: int,
        N: int,
        obs_shape: tuple,
        obs_dtype: torch.dtype,
        action_shape: tuple,
        action_dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.obs = torch.zeros((T, N, *obs_shape), dtype=obs_dtype, device=device)
        self.actions = torch.zeros((T, N, *action_shape), dtype=action_dtype, device=device)
        self.log_probs = torch.zeros((T, N), device=device)
        self.values = torch.zeros((T, N), device=device)
        self.rewards = torch.zeros((T, N), device=device)
        self.terminated = torch.zeros((T, N), dtype=torch.bool, device=device)
        self.dones = torch.zeros((T, N), dtype=torch.bool, device=device)
        # Host-side: True where the step is a NEXT_STEP autoreset, i.e. not a real transition.
        self.autoreset = np.zeros((T, N), dtype=bool)
        self.next_autoreset = np.zeros(N, dtype=bool)  # sub-envs whose next step only resets them
        self.filled = 0  # steps of this rollout collected so far

    _TENSORS = ("obs", "actions", "log_probs", "values", "rewards", "terminated", "dones")

    def state_dict(self) -> dict:
        state = {name: getattr(self, name) for name in self._TENSORS}
        state.update(
            autoreset=torch.from_numpy(self.autoreset), next_autoreset=torch.from_numpy(self.next_autoreset), filled=self.filled
        )
        return state

    def load_state_dict(self, state: dict) -> None:
        for name in self._TENSORS:
            getattr(self, name).copy_(state[name])
        self.autoreset = state["autoreset"].numpy().copy()
        self.next_autoreset = state["next_autoreset"].numpy().copy()
        self.filled = state["filled"]


class PPO(Checkpointed):
    Config = PPOConfig
    action_spaces = (gym.spaces.Box, gym.spaces.Discrete)

    @staticmethod
    def check_spaces(config: PPOConfig, obs_space: gym.Space, action_space: gym.Space) -> None:
        if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) not in (1, 3):
            raise ConfigError(f"algo=ppo needs flat vector or (C, H, W) image observations, got {obs_space}")
        if is_image(obs_space):
            check_image_space("ppo", obs_space)
            if config.normalize_obs:
                raise ConfigError(
                    "algo.normalize_obs=true standardises vector observations; image observations are "
                    "scaled by 1/255 in the CNN: set algo.normalize_obs=false (configs/tuned/ppo-Pong.yaml does)"
                )
        if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) != 1:
            raise ConfigError(f"algo=ppo needs a flat (1-D) Box action space, got {action_space}")

    def __init__(self, config: PPOConfig, obs_space: gym.Space, action_space: gym.Space, device: torch.device, seed: int) -> None:
        self.config = config
        self.device = device
        self.seed = seed
        self.obs_shape = obs_space.shape
        # uint8 frames stay uint8 in the rollout (the CNN scales them); vectors are float32.
        self.obs_dtype = torch.uint8 if is_image(obs_space) else torch.float32
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        self.action_shape = () if self.discrete else action_space.shape
        if not self.discrete:
            self.action_low, self.action_high = action_space.low, action_space.high

        self.model = ActorCritic(obs_space, action_space, config).to(device)
        # One optimiser over actor, critic and log σ, so one gradient-norm clip covers all;
        # ε = 1e-5 as CleanRL and SB3 (PyTorch's default is 1e-8).
        self.optimizer = adam(self.model.parameters(), config.lr, eps=1e-5)
        # Stats live here, not in an env wrapper, so they are checkpointed and reused frozen
        # by `act` at evaluation. Both exist even when switched off (then left untouched).
        self.obs_rms = RunningMeanStd(obs_space.shape)
        self.reward_scaler = RewardScaler(config.num_envs, config.gamma, NORMALIZE_CLIP)

    # ----- acting ---------------------------------------------------------------------------
    def normalize_obs(self, obs: np.ndarray, update: bool) -> torch.Tensor:
        """An observation batch on the device (float32 vectors, uint8 frames); standardised if
        `normalize_obs` is on, after merging this batch into the running stats when `update`."""
        if self.config.normalize_obs:
            if update:
                self.obs_rms.update(obs)
            obs = self.obs_rms.normalize(obs, NORMALIZE_CLIP)
        return to_device(obs, self.device, self.obs_dtype)

    def to_env(self, actions: torch.Tensor) -> np.ndarray:
        """Policy actions → environment actions: clipped to the bounds for Box."""
        actions = actions.cpu().numpy()
        return actions if self.discrete else np.clip(actions, self.action_low, self.action_high)

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray | int:
        """The action for ONE observation, with the training stats frozen: the mode of π(·|s),
        or a sample if not `deterministic`."""
        obs_t = self.normalize_obs(obs[None], update=False)
        if deterministic:
            action = self.model.deterministic(obs_t)[0]
        else:
            action = self.model.sample(self.model.distribution(obs_t))[0]
        return int(action) if self.discrete else self.to_env(action)

    def policy_module(self) -> nn.Module:
        """observations (B, *obs_shape) → the mode of π(·|s) (argmax, or the mean clipped to the
        bounds), with the frozen normalisation statistics, for export."""
        layers: list[nn.Module] = []
        if self.config.normalize_obs:
            layers.append(Standardize(self.obs_rms.mean, self.obs_rms.var, NORMALIZE_EPSILON, NORMALIZE_CLIP))
        layers += [self.model.torso, self.model.actor]
        layers.append(Argmax() if self.discrete else ClipToBounds(self.action_low, self.action_high))
        return nn.Sequential(*layers)

    # ----- learning -------------------------------------------------------------------------
    def update(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        log_probs: torch.Tensor,
        values: torch.Tensor,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        indices: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """`update_epochs` passes over the real transitions `indices` of the flat rollout, in
        `num_minibatches` shuffled minibatches each; returns the passes' mean statistics."""
        config = self.config
        stats: dict[str, list[torch.Tensor]] = {k: [] for k in ("policy", "value", "entropy", "approx_kl", "clip_fraction")}
        # Fewer minibatches if leaving out autoreset steps left too few transitions for ≥ 2 each
        # (a 1-sample minibatch has no advantage std; an empty one would give NaN losses).
        num_minibatches = max(1, min(config.num_minibatches, len(indices) // 2))
        for _ in range(config.update_epochs):
            permutation = indices[torch.randperm(len(indices), device=self.device)]
            for mb in permutation.tensor_split(num_minibatches):
                dist, new_value = self.model.distribution_and_value(obs[mb])
                new_log_prob, entropy = self.model.log_prob_entropy(dist, actions[mb])
                log_ratio = new_log_prob - log_probs[mb]
                ratio = log_ratio.exp()  # r_t(θ) = π_θ(a|s) / π_θ_old(a|s)

                with torch.no_grad():
                    # KL(π_old ‖ π_θ) ≈ E[(r − 1) − log r]  (unbiased, low variance; Schulman's blog "Approximating KL")
                    stats["approx_kl"].append(((ratio - 1.0) - log_ratio).mean())
                    stats["clip_fraction"].append(((ratio - 1.0).abs() > config.clip_coef).float().mean())

                adv = advantages[mb]
                if config.normalize_advantage:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)

                # Clipped surrogate (PPO eq. 7), as a loss: −E[min(r·Â, clip(r, 1−ε, 1+ε)·Â)]
                clipped_ratio = ratio.clamp(1.0 - config.clip_coef, 1.0 + config.clip_coef)
                policy_loss = torch.max(-adv * ratio, -adv * clipped_ratio).mean()

                # Value: ½·E[(V − R)²], or with clipping ½·E[max((V − R)², (V_old + clip(V − V_old, ±ε) − R)²)]
                value_error = (new_value - returns[mb]) ** 2
                if config.clip_value_loss:
                    clipped_value = values[mb] + (new_value - values[mb]).clamp(-config.clip_coef, config.clip_coef)
                    value_error = torch.max(value_error, (clipped_value - returns[mb]) ** 2)
                value_loss = 0.5 * value_error.mean()

                entropy_loss = entropy.mean()
                # PPO eq. 9, as a loss: L^CLIP + c1·L^VF − c2·H[π]
                loss = policy_loss + config.vf_coef * value_loss - config.ent_coef * entropy_loss

                gradient_step(self.optimizer, loss, config.max_grad_norm)

                stats["policy"].append(policy_loss.detach())
                stats["value"].append(value_loss.detach())
                stats["entropy"].append(entropy_loss.detach())

        mean = {name: torch.stack(values_).mean() for name, values_ in stats.items()}
        # Fraction of the return variance the value function explains (1 = perfect, ≤ 0 = none).
        y_true, y_pred = returns[indices], values[indices]
        var_y = y_true.var()
        explained_variance = torch.where(var_y > 0, 1.0 - (y_true - y_pred).var() / var_y, torch.nan)
        return {
            "losses/policy": mean["policy"],
            "losses/value": mean["value"],
            "losses/entropy": mean["entropy"],
            "train/approx_kl": mean["approx_kl"],
            "train/clip_fraction": mean["clip_fraction"],
            "train/learning_rate": torch.full((), self.optimizer.lr, device=self.device),  # a fill, not a copy
            "train/explained_variance": explained_variance,
        }

    # ----- the loop -------------------------------------------------------------------------
    def train(self, run: RunContext) -> None:
        config = self.config
        T, N = config.num_steps, config.num_envs
        envs = run.make_vector_env(N, config.async_envs)
        action_dtype = torch.long if self.discrete else torch.float32
        rollout = Rollout(T, N, self.obs_shape, self.obs_dtype, self.action_shape, action_dtype, self.device)
        num_iterations = math.ceil(run.total_steps / config.batch_size)

        obs_np, step = run.start(self, loop={"rollout": rollout})  # a new run: sub-env i seeded seed + i
        # A resumed run's statistics already include this observation.
        obs = self.normalize_obs(obs_np, update=step == 0)
        # A resumed run continues the iteration whose rollout it was collecting (or training on).
        for iteration in range((step - rollout.filled * N) // config.batch_size, num_iterations):
            if config.anneal_lr:  # linear from lr to lr/num_iterations over the run (CleanRL)
                self.optimizer.lr = config.lr * (1.0 - iteration / num_iterations)

            for t in range(rollout.filled, T):  # from 0, or where a resumed rollout stopped
                with torch.no_grad():
                    dist, rollout.values[t] = self.model.distribution_and_value(obs)
                    action = self.model.sample(dist)
                    log_prob, _ = self.model.log_prob_entropy(dist, action)
                rollout.obs[t], rollout.actions[t], rollout.log_probs[t] = obs, action, log_prob
                autoreset = rollout.autoreset[t] = rollout.next_autoreset

                next_obs_np, reward, terminated, truncated, info = envs.step(self.to_env(action))
                step += N  # autoreset steps count too, as in CleanRL and SB3's step counting
                done = terminated | truncated
                # Stored observations are normalised with the stats at collection time.
                obs = self.normalize_obs(next_obs_np, update=True)
                if config.normalize_reward:
                    reward = self.reward_scaler(reward, done, active=~autoreset)
                rollout.rewards[t] = to_device(reward, self.device)
                rollout.terminated[t] = to_device(terminated, self.device)
                rollout.dones[t] = to_device(done, self.device)
                rollout.next_autoreset = done  # sub-envs whose next step only resets them
                rollout.filled = t + 1

                if "_episode" in info:
                    for i in np.flatnonzero(info["_episode"]):
                        run.episode_end(step, info["episode"]["r"][i], info["episode"]["l"][i])
                run.after_step(step)
                if step >= run.total_steps:
                    return  # a partial last rollout is not trained on: nothing would evaluate it

            with torch.no_grad():
                # V(s_{t+1}) is the next stored value; after a done that observation is the final
                # one (NEXT_STEP autoreset), so truncations bootstrap from the real final state.
                next_values = torch.cat([rollout.values[1:], self.model.value(obs)[None]])
            advantages = compute_gae(
                rollout.rewards, rollout.values, next_values, rollout.terminated, rollout.dones, config.gamma, config.gae_lambda
            )
            returns = advantages + rollout.values
            # Only real transitions are trained on; autoreset steps (final obs → reset obs, the
            # action ignored) are left out. The mask is on the host, so this costs no device sync.
            indices = to_device(np.flatnonzero(~rollout.autoreset.reshape(-1)), self.device)
            run.record(
                self.update(
                    rollout.obs.reshape(T * N, *self.obs_shape),
                    rollout.actions.reshape(T * N, *self.action_shape),
                    rollout.log_probs.reshape(-1),
                    rollout.values.reshape(-1),
                    advantages.reshape(-1),
                    returns.reshape(-1),
                    indices,
                )
            )
            rollout.filled = 0

    # ----- checkpoints ----------------------------------------------------------------------
    checkpointed = {
        "model": "model",
        "optimizer": "optimizer",
        "obs_rms": "obs_rms",
        "return_rms": "reward_scaler.rms",
        "discounted_returns": "reward_scaler.returns",
    }
