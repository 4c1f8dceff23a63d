"""Experience storage, preallocated on the training device."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


def to_device(array: np.ndarray, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A host array as a tensor on `device`. The copy is non_blocking, so PyTorch adds no sync
    of its own; from pageable memory CUDA consumes the source before returning (the array may be
    reused at once), after the work already queued: in the loops usually none, since they copy
    right after reading an action back. On the CPU it is just the conversion."""
    return torch.as_tensor(array, dtype=dtype).to(device, non_blocking=True)


class Batch(NamedTuple):
    obs: torch.Tensor  # (B, *obs_shape), in the buffer's obs_dtype
    actions: torch.Tensor  # (B, *action_shape), in the buffer's action_dtype
    rewards: torch.Tensor  # (B,)
    next_obs: torch.Tensor  # (B, *obs_shape)
    terminated: torch.Tensor  # (B,) 1.0 where the episode truly ended; truncations stay 0.0


class ReplayBuffer:
    """A ring buffer of transitions, sampled uniformly with replacement.

    `terminated` is stored without the time-limit truncation flag, so targets still
    bootstrap from states where an episode was only cut off.

    Observations and actions keep the dtypes given: float32 vectors and continuous actions by
    default; uint8 frames (a quarter of float32's memory, scaled by the network) and int64
    discrete actions (shape ()) for DQN on Atari. Memory: 2 × capacity × obs bytes, since
    obs and next_obs are both stored.
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
        self.capacity = capacity
        self.device = device
        self.obs = torch.zeros((capacity, *obs_shape), dtype=obs_dtype, device=device)
        self.next_obs = torch.zeros_like(self.obs)
        self.actions = torch.zeros((capacity, *action_shape), dtype=action_dtype, device=device)
        self.rewards = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.terminated = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.position = 0
        self.size = 0
        self.generator = torch.Generator(device=device).manual_seed(seed)

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

    def __len__(self) -> int:
        return self.size

    @property
    def sampleable(self) -> int:
        """How many stored slots a sample may draw (every stored transition here)."""
        return self.size

    def state_dict(self) -> dict:
        """The stored transitions (only the filled part), the write position and the sampling
        RNG. A full buffer is most of a checkpoint's size (checkpoint.replay_buffer; sizes in
        docs/checkpoints.md)."""
        n = self.size
        return {
            "obs": self.obs[:n],
            "actions": self.actions[:n],
            "rewards": self.rewards[:n],
            "next_obs": self.next_obs[:n],
            "terminated": self.terminated[:n],
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
            "priority": self.priority[:n],
            "startable": self.startable[:n],
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


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritised replay (Schaul et al. 2016) of n-step transitions.

    n-step returns are made at insertion: each sub-environment keeps its last n (s, a, r)
    (`pending`); once it holds n, the oldest leaves as (s_t, a_t, Σ_k γ^k r_{t+k}, s_{t+n},
    γ^n). When an episode ends, every pending step leaves with the shorter return up to the
    end, discount 0 after a termination and γ^m after a time-limit truncation (which still
    bootstraps from its last observation). The ring buffer thus never holds half-made
    returns, and vector envs need no per-environment stride.

    Sampling is exact: slot i is drawn with probability P(i) = p_i^α / Σ_j p_j^α by inverse
    transform on the cumulative sum of the priority vector (O(capacity) per batch on the
    device, no sum tree). A new transition gets the largest priority seen so far.
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
        self.n_step, self.gamma, self.priority_exponent = n_step, gamma, priority_exponent
        self.discounts = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.priority = torch.zeros(capacity, dtype=torch.float32, device=device)
        self.max_priority = torch.tensor(1.0, dtype=torch.float32, device=device)
        # The n-step accumulator: each sub-environment's last steps, oldest first.
        self.pending_obs = torch.zeros((num_envs, n_step, *obs_shape), dtype=obs_dtype, device=device)
        self.pending_actions = torch.zeros((num_envs, n_step), dtype=torch.int64, device=device)
        self.pending_rewards = np.zeros((num_envs, n_step), dtype=np.float64)
        self.pending_count = np.zeros(num_envs, dtype=np.int64)

    def add_batch(self, obs, actions, rewards, next_obs, terminated, truncated) -> None:  # type: ignore[override]
        """One vector step: each sub-environment's (s, a, r) joins its pending steps, and the
        n-step transitions that are now complete are stored."""
        obs, actions, next_obs = (to_device(x, self.device) for x in (obs, actions, next_obs))
        for env in range(len(rewards)):
            count = self.pending_count[env]
            self.pending_obs[env, count], self.pending_actions[env, count] = obs[env], actions[env]
            self.pending_rewards[env, count] = rewards[env]
            count += 1
            ended = bool(terminated[env]) or bool(truncated[env])
            # Leaving: every pending step when the episode ended, else the oldest once n are held.
            leaving = range(count) if ended else range(1) if count == self.n_step else range(0)
            rows = []  # (env, pending index, return, discount, terminated)
            for k in leaving:
                steps = count - k  # m: the steps from s_{t+k} to the episode's end or to s_{t+n}
                # R = Σ_{i<m} γ^i r_{t+k+i}
                ret = float(np.sum(self.pending_rewards[env, k:count] * self.gamma ** np.arange(steps)))
                discount = 0.0 if terminated[env] else self.gamma**steps
                rows.append((env, k, ret, discount, int(bool(terminated[env]))))
            self._store(rows, next_obs)
            if ended:
                count = 0
            elif count == self.n_step:  # the oldest left: shift the rest down one
                self.pending_obs[env, :-1] = self.pending_obs[env, 1:].clone()
                self.pending_actions[env, :-1] = self.pending_actions[env, 1:].clone()
                self.pending_rewards[env, :-1] = self.pending_rewards[env, 1:]
                count -= 1
            self.pending_count[env] = count

    def _store(self, rows: list[tuple[int, int, float, float, int]], next_obs: torch.Tensor) -> None:
        for env, k, ret, discount, done in rows:
            slot = self.position
            self.obs[slot], self.actions[slot] = self.pending_obs[env, k], self.pending_actions[env, k]
            self.rewards[slot], self.discounts[slot], self.terminated[slot] = ret, discount, done
            self.next_obs[slot] = next_obs[env]
            self.priority[slot] = self.max_priority
            self.position = (self.position + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)

    def probabilities(self) -> torch.Tensor:
        """P(i) = p_i^α / Σ_j p_j^α over the stored slots."""
        scaled = self.priority[: self.size] ** self.priority_exponent
        return scaled / scaled.sum()

    def sample(self, batch_size: int, beta: float = 1.0) -> PrioritizedBatch:  # type: ignore[override]
        """`batch_size` slots drawn with replacement in proportion to P(i), with weights
        w_i = (N · P(i))^(−β) / max_j w_j (max over the batch; Schaul et al. 2016, Algorithm 1)."""
        cumulative = (self.priority[: self.size] ** self.priority_exponent).cumsum(0)
        draws = torch.rand(batch_size, device=self.device, generator=self.generator) * cumulative[-1]
        # right=True: a draw lands in the first slot whose cumulative sum exceeds it, never in a
        # slot of zero weight; the clamp only guards against rounding at the top end.
        index = torch.searchsorted(cumulative, draws, right=True).clamp_(max=self.size - 1)
        probability = (self.priority[index] ** self.priority_exponent) / cumulative[-1]
        weights = (self.size * probability) ** -beta
        return PrioritizedBatch(
            self.obs[index],
            self.actions[index],
            self.rewards[index],
            self.next_obs[index],
            self.discounts[index],
            index,
            weights / weights.max(),
        )

    def update_priorities(self, index: torch.Tensor, priority: torch.Tensor) -> None:
        """New priorities p_i for sampled slots; a slot sampled twice keeps the larger one (an
        order-independent choice, so a GPU run does not depend on write order)."""
        self.priority.scatter_reduce_(0, index, priority, reduce="amax", include_self=False)
        torch.maximum(self.max_priority, priority.max(), out=self.max_priority)

    def state_dict(self) -> dict:
        n = self.size
        return super().state_dict() | {
            "discounts": self.discounts[:n],
            "priority": self.priority[:n],
            "max_priority": self.max_priority.clone(),
            "pending_obs": self.pending_obs.clone(),
            "pending_actions": self.pending_actions.clone(),
            "pending_rewards": torch.from_numpy(self.pending_rewards.copy()),
            "pending_count": torch.from_numpy(self.pending_count.copy()),
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        n = state["size"]
        self.discounts[:n], self.priority[:n] = state["discounts"], state["priority"]
        self.max_priority.copy_(state["max_priority"])
        self.pending_obs.copy_(state["pending_obs"])
        self.pending_actions.copy_(state["pending_actions"])
        self.pending_rewards[:] = state["pending_rewards"].numpy()
        self.pending_count[:] = state["pending_count"].numpy()
