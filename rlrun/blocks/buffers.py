"""Experience storage, preallocated on the training device."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from rlrun.config import RunError


def to_device(array: np.ndarray, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A host array as a tensor on `device`. The copy is non_blocking, so PyTorch adds no sync
    of its own; from pageable memory CUDA consumes the source before returning (the array may be
    reused at once), after the work already queued: in the loops usually none, since they copy
    right after reading an action back. On the CPU it is just the conversion."""
    return torch.as_tensor(array, dtype=dtype).to(device, non_blocking=True)


def filled(tensor: torch.Tensor, n: int) -> torch.Tensor:
    """The first `n` rows of a buffer's storage, for a checkpoint: torch.save writes a view's
    whole storage, so a slice of a part-filled buffer is copied out."""
    return tensor if n == len(tensor) else tensor[:n].clone()


class Batch(NamedTuple):
    obs: torch.Tensor  # (B, *obs_shape), in the buffer's obs_dtype
    actions: torch.Tensor  # (B, *action_shape), in the buffer's action_dtype
    rewards: torch.Tensor  # (B,)
    next_obs: torch.Tensor  # (B, *obs_shape)
    terminated: torch.Tensor  # (B,) 1.0 where the episode truly ended; truncations stay 0.0


class ReplayBufferBase:
    """What every replay buffer here has: a capacity in transitions, the device it lives on,
    the generator it samples with and the dtype its observations are stored in. The run
    recognises replay buffers by this class (checkpoint.replay_buffer=false leaves them out)."""

    def __init__(self, capacity: int, device: torch.device, seed: int, obs_dtype: torch.dtype) -> None:
        self.capacity = capacity
        self.device = device
        self.obs_dtype = obs_dtype
        self.size = 0  # transitions stored, at most capacity
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __len__(self) -> int:
        return self.size

    @property
    def sampleable(self) -> int:
        """How many stored slots a sample may draw (every stored transition unless a subclass
        says otherwise)."""
        return self.size


class ReplayBuffer(ReplayBufferBase):
    """A ring buffer of transitions, sampled uniformly with replacement.

    `terminated` is stored without the time-limit truncation flag, so targets still
    bootstrap from states where an episode was only cut off.

    Observations and actions keep the dtypes given: float32 vectors and continuous actions by
    default; uint8 frames (a quarter of float32's memory, scaled by the network) and int64
    discrete actions (shape ()). Memory: 2 × capacity × obs bytes, since obs and next_obs are
    both stored; Atari's frame stacks go to FrameReplayBuffer instead, which stores each frame
    once.
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        action_shape: tuple[int, ...],
        device: torch.device,
        seed: int,
        obs_dtype: torch.dtype = torch.float32,
        action_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(capacity, device, seed, obs_dtype)
        # bytes_needed below counts these five tensors.
        self.obs = torch.zeros((capacity, *obs_shape), dtype=obs_dtype, device=device)
        self.next_obs = torch.zeros_like(self.obs)
        self.actions = torch.zeros((capacity, *action_shape), dtype=action_dtype, device=device)
        self.rewards = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.terminated = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.position = 0

    @staticmethod
    def bytes_needed(
        capacity: int,
        obs_shape: tuple[int, ...],
        action_shape: tuple[int, ...],
        obs_dtype: torch.dtype = torch.float32,
        action_dtype: torch.dtype = torch.float32,
    ) -> int:
        """The memory a buffer of these sizes allocates: obs and next_obs, actions, rewards, terminated."""
        obs = math.prod(obs_shape) * obs_dtype.itemsize
        action = math.prod(action_shape) * action_dtype.itemsize
        return capacity * (2 * obs + action + 2 * torch.float32.itemsize)

    def add_batch(
        self,
        obs: torch.Tensor | np.ndarray,
        actions: torch.Tensor | np.ndarray,
        rewards: np.ndarray,
        next_obs: torch.Tensor | np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray | None = None,
    ) -> None:
        """Store one transition per sub-environment of a vector step (leading dimension N).
        The training loops pass observations (and the policy's actions) as tensors already on
        the device, the ones they act on, so storing them never waits for the device; rewards
        and termination flags come from the host. Truncations are not stored: transitions
        sampled one at a time need no episode boundaries."""
        obs, actions, next_obs = (to_device(x, self.device) for x in (obs, actions, next_obs))
        # Rewards and flags in one host-to-device copy.
        rewards, terminated = to_device(np.stack([rewards, terminated]).astype(np.float32), self.device)
        n, stored = len(rewards), 0
        while stored < n:  # at most two contiguous runs of rows: up to the end, then from 0
            count = min(n - stored, self.capacity - self.position)
            rows, part = slice(self.position, self.position + count), slice(stored, stored + count)
            self.obs[rows], self.actions[rows], self.rewards[rows] = obs[part], actions[part], rewards[part]
            self.next_obs[rows], self.terminated[rows] = next_obs[part], terminated[part]
            self.position = (self.position + count) % self.capacity
            stored += count
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int) -> Batch:
        index = torch.randint(self.size, (batch_size,), device=self.device, generator=self.generator)
        return Batch(self.obs[index], self.actions[index], self.rewards[index], self.next_obs[index], self.terminated[index])

    def state_dict(self) -> dict:
        """The stored transitions (only the filled part), the write position and the sampling
        RNG. A full buffer is most of a checkpoint's size (checkpoint.replay_buffer; sizes in
        docs/checkpoints.md)."""
        n = self.size
        return {
            "obs": filled(self.obs, n),
            "actions": filled(self.actions, n),
            "rewards": filled(self.rewards, n),
            "next_obs": filled(self.next_obs, n),
            "terminated": filled(self.terminated, n),
            "position": self.position,
            "size": n,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        n = state["size"]
        if n > self.capacity:
            raise ValueError(f"the saved buffer holds {n} transitions, more than this buffer's capacity {self.capacity}")
        for name in ("obs", "actions", "rewards", "next_obs", "terminated"):
            getattr(self, name)[:n] = state[name]
        self.position, self.size = state["position"], n
        self.generator.set_state(state["generator"])


class Sequences(NamedTuple):
    """`horizon` consecutive transitions from each of B sampled start slots."""

    obs: torch.Tensor  # (B, *obs_shape): the first observation of each subsequence
    actions: torch.Tensor  # (B, H, *action_shape)
    rewards: torch.Tensor  # (B, H)
    next_obs: torch.Tensor  # (B, H, *obs_shape): the observation after each transition
    terminated: torch.Tensor  # (B, H); past a termination the rows belong to other episodes
    start: torch.Tensor  # (B,) the start slots, for update_priorities


class SequenceReplayBuffer(ReplayBuffer):
    """A replay buffer of one environment's transitions, sampled as subsequences of up to
    `horizon` consecutive transitions, with start slots drawn in proportion to priorities
    (LAP, Fujimoto et al. 2020; MR.Q's buffer).

    A start slot may be sampled once the `horizon` transitions from it lie in one episode, or
    once its episode terminates within them (the rows after a termination then belong to the
    next episode; learners mask them out). Subsequences that would run past a time-limit
    truncation are never sampled. A new transition gets the largest priority set so far
    (`initial_priority` at first), so it is likely to be replayed soon.
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        action_shape: tuple[int, ...],
        device: torch.device,
        seed: int,
        horizon: int,
        initial_priority: float = 1.0,
    ) -> None:
        if capacity < horizon:
            raise ValueError(f"a buffer of {capacity} transitions cannot hold subsequences of {horizon}")
        super().__init__(capacity, obs_shape, action_shape, device, seed)
        self.horizon = horizon
        self.priority = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.max_priority = torch.tensor(initial_priority, dtype=torch.float32, device=device)
        # Whether each slot may start a subsequence: on the device for sampling, and mirrored
        # on the host so that the loop can count sampleable starts without a device sync.
        self.startable = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.startable_host = np.zeros(capacity, dtype=bool)
        self.startable_count = 0  # how many slots may start a subsequence now
        self.episode_length = 0  # transitions of the current episode stored so far
        self.any_terminated = False  # whether any stored episode ended in a termination

    def add_batch(self, obs, actions, rewards, next_obs, terminated, truncated) -> None:  # type: ignore[override]
        """Store the next transition of the one environment (leading dimension 1);
        `truncated` marks an episode cut off by a time limit."""
        if len(rewards) != 1:
            raise ValueError(f"a SequenceReplayBuffer stores one environment's transitions, got {len(rewards)} at once")
        slot = self.position
        super().add_batch(obs, actions, rewards, next_obs, terminated)
        self.priority[slot] = self.max_priority
        ended_by_termination = bool(terminated[0])
        ended = ended_by_termination or bool(truncated[0])
        self.episode_length += 1
        # The slot's old subsequence is gone with its data; windows that now end here open.
        self._mark(slot, 1, False)
        if ended_by_termination:
            count = min(self.episode_length, self.horizon)
            self._mark((slot - count + 1) % self.capacity, count, True)
            self.any_terminated = True
        elif self.episode_length >= self.horizon:
            self._mark((slot - self.horizon + 1) % self.capacity, 1, True)
        if ended:
            self.episode_length = 0

    def _mark(self, first: int, count: int, startable: bool) -> None:
        """Mark `count` slots from `first` on (wrapping around the end) as startable or not.
        Slices filled with a Python number: no host-to-device copy."""
        for begin, end in ((first, min(first + count, self.capacity)), (0, first + count - self.capacity)):
            if begin < end:
                self.startable_count += (end - begin) * startable - int(self.startable_host[begin:end].sum())
                self.startable_host[begin:end] = startable
                self.startable[begin:end].fill_(float(startable))

    @property
    def sampleable(self) -> int:
        """How many slots may start a subsequence now."""
        return self.startable_count

    def sample_sequences(self, batch_size: int, horizon: int) -> Sequences:
        """`batch_size` subsequences of `horizon` (≤ self.horizon) transitions, their starts
        drawn with probability priority_i / Σ_j priority_j over the startable slots."""
        cumulative = (self.priority * self.startable).cumsum(0)
        draws = torch.rand(batch_size, device=self.device, generator=self.generator) * cumulative[-1]
        # right=True: a draw lands in the first slot whose cumulative sum exceeds it, never a
        # slot of zero weight; the clamp only guards against rounding at the top end.
        start = torch.searchsorted(cumulative, draws, right=True).clamp_(max=self.capacity - 1)
        slots = (start.unsqueeze(1) + torch.arange(horizon, device=self.device)) % self.capacity
        return Sequences(
            self.obs[start], self.actions[slots], self.rewards[slots], self.next_obs[slots], self.terminated[slots], start
        )

    def update_priorities(self, start: torch.Tensor, priority: torch.Tensor) -> None:
        """New priorities for sampled start slots; a slot sampled twice keeps the larger one
        (an order-independent choice, so a GPU run does not depend on write order)."""
        self.priority.scatter_reduce_(0, start, priority, reduce="amax", include_self=False)
        torch.maximum(self.max_priority, priority.max(), out=self.max_priority)

    def mean_absolute_reward(self, eps: float = 1e-8) -> torch.Tensor:
        """E|r| over the stored transitions (at least eps), on the device."""
        return self.rewards[: self.size].abs().mean().clamp(min=eps)

    def state_dict(self) -> dict:
        n = self.size
        return super().state_dict() | {
            "priority": filled(self.priority, n),
            "startable": filled(self.startable, n),
            "max_priority": self.max_priority.clone(),
            "episode_length": self.episode_length,
            "any_terminated": self.any_terminated,
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        n = state["size"]
        self.priority[:n] = state["priority"]
        self.startable[:n] = state["startable"]
        self.startable_host[:n] = state["startable"].cpu().numpy() > 0
        self.startable_count = int(self.startable_host.sum())
        self.max_priority.copy_(state["max_priority"])
        self.episode_length, self.any_terminated = state["episode_length"], state["any_terminated"]


class PrioritizedBatch(NamedTuple):
    """n-step transitions with their slots and importance-sampling weights."""

    obs: torch.Tensor  # (B, *obs_shape): s_t
    actions: torch.Tensor  # (B,) a_t
    returns: torch.Tensor  # (B,) R_t = Σ_{k<m} γ^k r_{t+k}, m ≤ n the steps taken
    next_obs: torch.Tensor  # (B, *obs_shape): s_{t+m}
    discounts: torch.Tensor  # (B,) γ^m, or 0 where the episode terminated within the m steps
    index: torch.Tensor  # (B,) the sampled slots, for update_priorities
    weights: torch.Tensor  # (B,) importance-sampling weights, the largest of the batch 1


class NStepReturns:
    """The n-step accumulator: each sub-environment's last rewards (float64, on the host).

    Once a sub-environment holds n steps, the oldest leaves with Σ_{k<n} γ^k r_{t+k} and
    bootstraps from s_{t+n} (discount γ^n). When an episode ends, every pending step leaves with
    the shorter return up to the end: discount 0 after a termination, γ^m after a time-limit
    truncation (which still bootstraps from its last observation). So a buffer never holds
    half-made returns, and vector envs need no per-environment stride.
    """

    def __init__(self, num_envs: int, n_step: int, gamma: float) -> None:
        self.n_step, self.gamma = n_step, gamma
        self.rewards = np.zeros((num_envs, n_step), dtype=np.float64)
        self.count = np.zeros(num_envs, dtype=np.int64)  # pending steps of each sub-environment

    def add(self, env: int, reward: float, terminated: bool, truncated: bool) -> list[tuple[int, int, float, float, int]]:
        """Adds sub-environment `env`'s step; returns the transitions it completes, oldest first,
        as (k, m, R, discount, terminated): pending step k (0 the oldest, counted before this
        call drops them) and its m-step return R = Σ_{i<m} γ^i r_{t+k+i}."""
        count = self.count[env]
        self.rewards[env, count] = reward
        count += 1
        ended = bool(terminated) or bool(truncated)
        # Leaving: every pending step when the episode ended, else the oldest once n are held.
        leaving = range(count) if ended else range(1) if count == self.n_step else range(0)
        rows = []
        for k in leaving:
            steps = count - k  # m: the steps from s_{t+k} to the episode's end or to s_{t+n}
            ret = float(np.sum(self.rewards[env, k:count] * self.gamma ** np.arange(steps)))
            discount = 0.0 if terminated else self.gamma**steps
            rows.append((k, steps, ret, discount, int(bool(terminated))))
        if ended:
            count = 0
        elif count == self.n_step:  # the oldest left: shift the rest down one
            self.rewards[env, :-1] = self.rewards[env, 1:]
            count -= 1
        self.count[env] = count
        return rows

    def state_dict(self) -> dict:
        return {"pending_rewards": torch.from_numpy(self.rewards.copy()), "pending_count": torch.from_numpy(self.count.copy())}

    def load_state_dict(self, state: dict) -> None:
        self.rewards[:] = state["pending_rewards"].numpy()
        self.count[:] = state["pending_count"].numpy()


def draw_proportional(weights: torch.Tensor, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch_size` slots drawn with replacement, slot i with probability w_i / Σ_j w_j, by
    inverse transform on the cumulative sum (exact, O(slots) on the device, no sum tree);
    returns them and Σ_j w_j."""
    cumulative = weights.cumsum(0)
    draws = torch.rand(batch_size, device=weights.device, generator=generator) * cumulative[-1]
    # right=True: a draw lands in the first slot whose cumulative sum exceeds it, never in a
    # slot of zero weight; the clamp only guards against rounding at the top end.
    return torch.searchsorted(cumulative, draws, right=True).clamp_(max=len(weights) - 1), cumulative[-1]


class Priorities:
    """Proportional priorities p_i of a buffer's slots (Schaul et al. 2016): slot i is drawn
    with probability P(i) = p_i^α / Σ_j p_j^α. A new transition gets the largest priority set
    so far, so it is likely to be replayed soon."""

    def __init__(self, slots: int, exponent: float, device: torch.device) -> None:
        self.exponent = exponent  # α
        self.priority = torch.zeros(slots, dtype=torch.float32, device=device)
        self.max_priority = torch.tensor(1.0, dtype=torch.float32, device=device)

    def draw(
        self, scaled: torch.Tensor, count: int, batch_size: int, beta: float, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Slots drawn in proportion to `scaled` (p_i^α, 0 where a slot may not be drawn), with
        weights w_i = (N · P(i))^(−β) / max_j w_j over the N = `count` drawable slots (max over
        the batch; Schaul et al. 2016, Algorithm 1)."""
        index, total = draw_proportional(scaled, batch_size, generator)
        weights = (count * (scaled[index] / total)) ** -beta
        return index, weights / weights.max()

    def update(self, index: torch.Tensor, priority: torch.Tensor) -> None:
        """New priorities p_i for sampled slots; a slot sampled twice keeps the larger one (an
        order-independent choice, so a GPU run does not depend on write order)."""
        self.priority.scatter_reduce_(0, index, priority, reduce="amax", include_self=False)
        torch.maximum(self.max_priority, priority.max(), out=self.max_priority)


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritised replay (Schaul et al. 2016) of n-step transitions, for vector
    observations (frame stacks: PrioritizedFrameReplayBuffer).

    n-step returns are made at insertion (NStepReturns): each sub-environment keeps its last
    n (s, a) here and their rewards in the accumulator, and a transition enters the ring only
    once its return is complete. Sampling is exact: P(i) = p_i^α / Σ_j p_j^α by inverse
    transform on the cumulative sum of the priorities (O(capacity) per batch on the device).
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        device: torch.device,
        seed: int,
        num_envs: int,
        n_step: int,
        gamma: float,
        priority_exponent: float,
        obs_dtype: torch.dtype = torch.float32,
    ) -> None:
        if capacity < n_step:
            raise ValueError(f"a buffer of {capacity} transitions cannot hold {n_step}-step returns")
        super().__init__(capacity, obs_shape, (), device, seed, obs_dtype=obs_dtype, action_dtype=torch.int64)
        self.discounts = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.priorities = Priorities(capacity, priority_exponent, device)
        self.returns = NStepReturns(num_envs, n_step, gamma)
        # Each sub-environment's pending steps, oldest first.
        self.pending_obs = torch.zeros((num_envs, n_step, *obs_shape), dtype=obs_dtype, device=device)
        self.pending_actions = torch.zeros((num_envs, n_step), dtype=torch.int64, device=device)

    @property
    def pending_count(self) -> np.ndarray:
        return self.returns.count

    def add_batch(self, obs, actions, rewards, next_obs, terminated, truncated) -> None:  # type: ignore[override]
        """One vector step: each sub-environment's (s, a, r) joins its pending steps, and the
        n-step transitions that are now complete are stored."""
        obs, actions, next_obs = (to_device(x, self.device) for x in (obs, actions, next_obs))
        for env in range(len(rewards)):
            count = self.returns.count[env]
            self.pending_obs[env, count], self.pending_actions[env, count] = obs[env], actions[env]
            rows = self.returns.add(env, rewards[env], terminated[env], truncated[env])
            for k, _, ret, discount, done in rows:
                slot = self.position
                self.obs[slot], self.actions[slot] = self.pending_obs[env, k], self.pending_actions[env, k]
                self.rewards[slot], self.discounts[slot], self.terminated[slot] = ret, discount, done
                self.next_obs[slot] = next_obs[env]
                self.priorities.priority[slot] = self.priorities.max_priority
                self.position = (self.position + 1) % self.capacity
                self.size = min(self.size + 1, self.capacity)
            if rows and self.returns.count[env] > 0:  # the oldest left, the episode goes on: shift
                self.pending_obs[env, :-1] = self.pending_obs[env, 1:].clone()
                self.pending_actions[env, :-1] = self.pending_actions[env, 1:].clone()

    def scaled_priorities(self) -> torch.Tensor:
        """p_i^α over the stored slots."""
        return self.priorities.priority[: self.size] ** self.priorities.exponent

    def probabilities(self) -> torch.Tensor:
        """P(i) = p_i^α / Σ_j p_j^α over the stored slots."""
        scaled = self.scaled_priorities()
        return scaled / scaled.sum()

    def sample(self, batch_size: int, beta: float = 1.0) -> PrioritizedBatch:  # type: ignore[override]
        """`batch_size` slots drawn with replacement in proportion to P(i), with their
        importance-sampling weights (Priorities.draw)."""
        index, weights = self.priorities.draw(self.scaled_priorities(), self.size, batch_size, beta, self.generator)
        return PrioritizedBatch(
            self.obs[index], self.actions[index], self.rewards[index], self.next_obs[index], self.discounts[index], index, weights
        )

    def update_priorities(self, index: torch.Tensor, priority: torch.Tensor) -> None:
        self.priorities.update(index, priority)

    def state_dict(self) -> dict:
        n = self.size
        return (
            super().state_dict()
            | {
                "discounts": filled(self.discounts, n),
                "priority": filled(self.priorities.priority, n),
                "max_priority": self.priorities.max_priority.clone(),
                "pending_obs": self.pending_obs.clone(),
                "pending_actions": self.pending_actions.clone(),
            }
            | self.returns.state_dict()
        )

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        n = state["size"]
        self.discounts[:n], self.priorities.priority[:n] = state["discounts"], state["priority"]
        self.priorities.max_priority.copy_(state["max_priority"])
        self.pending_obs.copy_(state["pending_obs"])
        self.pending_actions.copy_(state["pending_actions"])
        self.returns.load_state_dict(state)


class FrameReplayBuffer(ReplayBufferBase):
    """A replay buffer of frame stacks that stores each frame once: DQN's and Rainbow's for
    image observations (Atari's four 84×84 frames).

    An observation (S, H, W) is its sub-environment's last S frames, so consecutive ones share
    S − 1 frames, and a plain buffer's obs and next_obs hold every frame 2S times. Here each
    sub-environment writes one stream of frames into its own ring of `frames_per_env`: the
    first observation of an episode (or of the buffer) whole, its S frames exactly as the env
    returned them (Gymnasium's FrameStackObservation repeats the first frame at a reset, and
    that is what is kept), then only the newest frame of each step's next observation. An
    episode's final observation is that step's next observation like any other, so truncated
    episodes still bootstrap from it, and the next episode's stack starts after it.

    A transition lives in the slot of its observation's newest frame: obs is the S frames that
    end there and next_obs the S frames that end `steps` frames later, gathered at sample time
    by one (B, S) index tensor. A slot can be drawn once its n-step return is complete
    (NStepReturns; n_step = 1 gives DQN's one-step transitions) and until a new frame
    overwrites the oldest frame its observation needs. Sampling is uniform over the drawable
    slots (O(slots) per batch, as prioritised sampling).

    Memory: one frame and 33 bytes per transition, plus S frames per episode; with Atari's
    frames 1/8 of ReplayBuffer's (measured by scripts/buffer_memory.py, docs/benchmarks.md).
    The capacity is shared out evenly: each sub-environment's ring holds ⌈capacity / num_envs⌉
    transitions, less S for each episode in it (its first stack).
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        device: torch.device,
        seed: int,
        num_envs: int,
        n_step: int = 1,
        gamma: float = 1.0,
    ) -> None:
        if len(obs_shape) != 3:
            raise ValueError(f"a FrameReplayBuffer stores stacks of frames (S, H, W), got observations of shape {obs_shape}")
        super().__init__(capacity, device, seed, torch.uint8)
        self.num_envs, self.stack = num_envs, obs_shape[0]
        # A sub-environment's share of the capacity, with the S − 1 older frames its oldest
        # observation needs and the newest next frame; at least a fresh stack and n frames more,
        # so that no frame a pending n-step transition needs is overwritten.
        self.frames_per_env = max(-(-capacity // num_envs) + self.stack, 2 * self.stack + n_step)
        slots = num_envs * self.frames_per_env
        self.frames = torch.zeros((slots, *obs_shape[1:]), dtype=torch.uint8, device=device)
        self.actions = torch.zeros(slots, dtype=torch.int64, device=device)
        self.rewards = torch.zeros(slots, dtype=torch.float32, device=device)  # the n-step return R
        self.terminated = torch.zeros(slots, dtype=torch.float32, device=device)
        self.discounts = torch.zeros(slots, dtype=torch.float32, device=device)  # γ^m, or 0 after a termination
        self.steps = torch.zeros(slots, dtype=torch.int64, device=device)  # m: next_obs ends m frames on
        # Whether each slot may be drawn: on the device for sampling, mirrored on the host so
        # that the loop can count them without a device sync.
        self.drawable = torch.zeros(slots, dtype=torch.float32, device=device)
        self.drawable_host = np.zeros(slots, dtype=bool)
        self.drawable_count = 0
        self.written = np.zeros(num_envs, dtype=np.int64)  # frames each stream has written, ever
        self.fresh = np.ones(num_envs, dtype=bool)  # whether its next observation starts a stream
        self.returns = NStepReturns(num_envs, n_step, gamma)
        self.window = torch.arange(1 - self.stack, 1, device=device)  # a stack's frames, newest last
        self.checked = False  # whether an observation was checked against the frames stored

    @property
    def sampleable(self) -> int:
        """How many slots may be drawn now."""
        return self.drawable_count

    def add_batch(self, obs, actions, rewards, next_obs, terminated, truncated) -> None:
        """One vector step: every sub-environment's new frames, its action, and the n-step
        transitions now complete. `truncated` marks episodes cut off by a time limit."""
        obs, actions, next_obs = (to_device(x, self.device) for x in (obs, actions, next_obs))
        if not self.checked:
            self._check_stacks(obs)
        ring, envs = self.frames_per_env, np.arange(len(rewards))
        fresh = np.flatnonzero(self.fresh)
        # Positions count each stream's frames from its first: position p is ring slot p % ring.
        first_new = self.written.copy()
        stack_at = first_new[fresh, None] + np.arange(self.stack)
        self.written[fresh] += self.stack
        obs_at, next_at = self.written - 1, self.written.copy()  # each observation's newest frame, the next's
        self.written += 1
        cleared = self._forget(first_new)
        sources = next_obs[:, -1]
        if len(fresh):
            sources = torch.cat([obs[to_device(fresh, self.device)].flatten(0, 1), sources])
        at = np.concatenate([np.repeat(fresh, self.stack) * ring + stack_at.ravel() % ring, envs * ring + next_at % ring])
        self.frames[to_device(at, self.device)] = sources
        self.actions[to_device(envs * ring + obs_at % ring, self.device)] = actions

        done = []  # (slot, steps, R, discount, terminated) of the transitions now complete
        for env in envs:
            for _, steps, ret, discount, ended in self.returns.add(env, rewards[env], terminated[env], truncated[env]):
                done.append((env * ring + (next_at[env] - steps) % ring, steps, ret, discount, ended))
        self.fresh = np.logical_or(terminated, truncated)
        completed = self._complete(done)
        changed = np.concatenate([cleared, completed])
        self.drawable[to_device(changed, self.device)] = to_device(self.drawable_host[changed].astype(np.float32), self.device)

    def _forget(self, first_new: np.ndarray) -> np.ndarray:
        """The slots whose observations lose their oldest frame to the frames just written
        (positions first_new to written − 1 of each stream), no longer drawable; returned."""
        ring, reach = self.frames_per_env, self.stack - 1
        slots = np.concatenate(
            [env * ring + np.arange(first_new[env], self.written[env] + reach) % ring for env in range(self.num_envs)]
        )
        self.drawable_count -= int(self.drawable_host[slots].sum())
        self.drawable_host[slots] = False
        return slots

    def _complete(self, done: list[tuple[int, int, float, float, int]]) -> np.ndarray:
        """Store the returns of the transitions now complete and make their slots drawable."""
        slots = np.array([row[0] for row in done], dtype=np.int64)
        if not done:
            return slots
        index = to_device(slots, self.device)
        values = to_device(np.array([row[2:] for row in done], dtype=np.float32).T, self.device)
        self.rewards[index], self.discounts[index], self.terminated[index] = values
        self.steps[index] = to_device(np.array([row[1] for row in done], dtype=np.int64), self.device)
        self._stored(index)
        self.drawable_count += int((~self.drawable_host[slots]).sum())
        self.drawable_host[slots] = True
        self.size = min(self.size + len(done), self.capacity)
        return slots

    def _stored(self, index: torch.Tensor) -> None:
        """A hook for the transitions just stored at `index` (PrioritizedFrameReplayBuffer)."""

    def _check_stacks(self, obs: torch.Tensor) -> None:
        """Once (one device sync): an observation that continues a stream must be the S frames
        stored last for it; otherwise the observations are not frame stacks."""
        going = np.flatnonzero(~self.fresh)
        if not len(going):
            return
        env = int(going[0])
        newest = env * self.frames_per_env + (self.written[env] - 1) % self.frames_per_env
        stored = self._stacks(torch.tensor([newest], device=self.device), torch.zeros(1, dtype=torch.int64, device=self.device))
        if not torch.equal(stored[0], obs[env]):
            raise RunError(
                "the image observations are not frame stacks (each the previous one shifted by one frame); "
                "store them whole with algo.frame_buffer=false"
            )
        self.checked = True

    def _stacks(self, index: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """The stacks (B, S, H, W) whose newest frames lie `steps` frames after slots `index`."""
        ring = self.frames_per_env
        start, newest = index - index % ring, index % ring + steps
        return self.frames[start.unsqueeze(1) + (newest.unsqueeze(1) + self.window) % ring]

    def sample(self, batch_size: int) -> Batch:
        """`batch_size` transitions drawn uniformly, with replacement, from the drawable slots;
        `rewards` holds the n-step return (the reward when n_step = 1)."""
        index, _ = draw_proportional(self.drawable, batch_size, self.generator)
        obs, next_obs = self._stacks(index, 0), self._stacks(index, self.steps[index])
        return Batch(obs, self.actions[index], self.rewards[index], next_obs, self.terminated[index])

    # Per-slot tensors a checkpoint holds, for the part of each ring written so far.
    slot_tensors = ("frames", "actions", "rewards", "terminated", "discounts", "steps", "drawable")

    def _rings(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.view(self.num_envs, self.frames_per_env, *tensor.shape[1:])

    def state_dict(self) -> dict:
        """Each ring up to the furthest position any stream has reached (cloned, so that a
        checkpoint holds only that part), the streams' positions, the n-step accumulator and
        the sampling RNG."""
        used = int(min(self.written.max(), self.frames_per_env))
        parts = {name: self._rings(getattr(self, name)) for name in self.slot_tensors}
        if used < self.frames_per_env:  # torch.save would write a slice's whole storage
            parts = {name: part[:, :used].clone() for name, part in parts.items()}
        return parts | {
            "frames_per_env": self.frames_per_env,
            "written": torch.from_numpy(self.written.copy()),
            "fresh": torch.from_numpy(self.fresh.copy()),
            "size": self.size,
            "generator": self.generator.get_state(),
            **self.returns.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["frames_per_env"] != self.frames_per_env or len(state["written"]) != self.num_envs:
            raise ValueError(
                f"the saved buffer has {len(state['written'])} rings of {state['frames_per_env']} frames, "
                f"this one {self.num_envs} of {self.frames_per_env}"
            )
        used = state["frames"].shape[1]
        for name in self.slot_tensors:
            self._rings(getattr(self, name))[:, :used] = state[name]
        self.drawable_host = self.drawable.cpu().numpy() > 0
        self.drawable_count = int(self.drawable_host.sum())
        self.written[:], self.fresh[:] = state["written"].numpy(), state["fresh"].numpy()
        self.size = state["size"]
        self.generator.set_state(state["generator"])
        self.returns.load_state_dict(state)


class PrioritizedFrameReplayBuffer(FrameReplayBuffer):
    """FrameReplayBuffer with proportional prioritised sampling of its n-step transitions
    (Rainbow's on image observations): as PrioritizedReplayBuffer, over the drawable slots."""

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        device: torch.device,
        seed: int,
        num_envs: int,
        n_step: int,
        gamma: float,
        priority_exponent: float,
    ) -> None:
        super().__init__(capacity, obs_shape, device, seed, num_envs, n_step, gamma)
        self.priorities = Priorities(len(self.actions), priority_exponent, device)

    def _stored(self, index: torch.Tensor) -> None:
        self.priorities.priority[index] = self.priorities.max_priority

    def scaled_priorities(self) -> torch.Tensor:
        """p_i^α, 0 where a slot may not be drawn."""
        return self.priorities.priority**self.priorities.exponent * self.drawable

    def probabilities(self) -> torch.Tensor:
        """P(i) = p_i^α / Σ_j p_j^α over the drawable slots (0 elsewhere)."""
        scaled = self.scaled_priorities()
        return scaled / scaled.sum()

    def sample(self, batch_size: int, beta: float = 1.0) -> PrioritizedBatch:  # type: ignore[override]
        index, weights = self.priorities.draw(self.scaled_priorities(), self.drawable_count, batch_size, beta, self.generator)
        obs, next_obs = self._stacks(index, 0), self._stacks(index, self.steps[index])
        return PrioritizedBatch(obs, self.actions[index], self.rewards[index], next_obs, self.discounts[index], index, weights)

    def update_priorities(self, index: torch.Tensor, priority: torch.Tensor) -> None:
        self.priorities.update(index, priority)

    def state_dict(self) -> dict:
        used = int(min(self.written.max(), self.frames_per_env))
        return super().state_dict() | {
            "priority": self._rings(self.priorities.priority)[:, :used].clone(),
            "max_priority": self.priorities.max_priority.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._rings(self.priorities.priority)[:, : state["priority"].shape[1]] = state["priority"]
        self.priorities.max_priority.copy_(state["max_priority"])
