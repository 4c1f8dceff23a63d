"""The frame-once replay buffer (FrameReplayBuffer, PrioritizedFrameReplayBuffer) gives back
exactly the observations a plain buffer stores for the same stream of transitions: across
resets, truncations, terminations, several sub-environments and the ring's wrap-around."""

import io

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlrun.blocks.buffers import (
    FrameReplayBuffer,
    PrioritizedFrameReplayBuffer,
    PrioritizedReplayBuffer,
    ReplayBuffer,
)
from rlrun.config import RunError

CPU = torch.device("cpu")


class RandomFrames(gym.Env):
    """6×6 uint8 frames drawn from the env's seeded generator; an episode terminates with
    probability `termination` at each step (the TimeLimit wrapper truncates the rest)."""

    observation_space = gym.spaces.Box(0, 255, (6, 6), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, termination: float) -> None:
        self.termination = termination

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._frame(), {}

    def step(self, action):
        return self._frame(), float(self.np_random.normal()), bool(self.np_random.random() < self.termination), False, {}

    def _frame(self):
        return self.np_random.integers(0, 256, (6, 6), dtype=np.uint8)


def frame_stacked_envs(num_envs: int, stack: int = 4, time_limit: int = 7, termination: float = 0.1) -> gym.vector.VectorEnv:
    """Gymnasium's FrameStackObservation (the one rlrun's Atari preprocessing ends with) over
    short episodes, in SAME_STEP autoreset as the replay loop steps them."""

    def make():
        return gym.wrappers.FrameStackObservation(gym.wrappers.TimeLimit(RandomFrames(termination), time_limit), stack)

    return gym.vector.SyncVectorEnv([make] * num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def play(envs: gym.vector.VectorEnv, steps: int, seed: int = 0):
    """The replay loop's transitions (rlrun/loops/replay.py): (obs, ids, rewards, next_obs with
    each finished episode's final observation, terminated, truncated) per vector step. The
    actions stored are the transitions' numbers, so that a sample says which ones it drew."""
    obs, _ = envs.reset(seed=seed)
    number = 0
    for _ in range(steps):
        next_obs, rewards, terminated, truncated, info = envs.step(envs.action_space.sample())
        final = next_obs.copy()
        for i in np.flatnonzero(info.get("_final_obs", [])):
            final[i] = info["final_obs"][i]
        ids = np.arange(number, number + envs.num_envs)
        number += envs.num_envs
        yield obs, ids, rewards, final, terminated, truncated
        obs = next_obs


def stored_by_id(buffer) -> dict[int, tuple]:
    """A plain buffer's transitions by their numbers: (obs, next_obs, reward or return, discount)."""
    discounts = getattr(buffer, "discounts", buffer.terminated)
    return {
        int(buffer.actions[i]): (buffer.obs[i], buffer.next_obs[i], float(buffer.rewards[i]), float(discounts[i]))
        for i in range(len(buffer))
    }


def assert_samples_match(frames, plain_by_id, batch):
    ids = batch.actions.tolist()
    assert set(ids) <= plain_by_id.keys()
    for row, number in enumerate(ids):
        obs, next_obs, reward, _ = plain_by_id[number]
        assert torch.equal(batch.obs[row], obs) and torch.equal(batch.next_obs[row], next_obs), number
        assert float(batch.returns[row] if hasattr(batch, "returns") else batch.rewards[row]) == reward


@pytest.mark.parametrize("num_envs", [1, 3])
def test_sampled_stacks_equal_what_a_plain_buffer_stores(num_envs):
    envs = frame_stacked_envs(num_envs)
    capacity = 60  # 300 transitions: the rings wrap around several times
    frames = FrameReplayBuffer(capacity, (4, 6, 6), CPU, seed=0, num_envs=num_envs)
    plain = ReplayBuffer(10_000, (4, 6, 6), (), CPU, seed=0, obs_dtype=torch.uint8, action_dtype=torch.int64)
    ended = 0
    for obs, ids, rewards, next_obs, terminated, truncated in play(envs, 300 // num_envs):
        frames.add_batch(torch.as_tensor(obs), torch.as_tensor(ids), rewards, torch.as_tensor(next_obs), terminated, truncated)
        plain.add_batch(obs, ids, rewards, next_obs, terminated, truncated)
        ended += int(terminated.sum() + truncated.sum())
    assert ended > 30  # many resets, by termination and by truncation, inside the buffer
    plain_by_id = stored_by_id(plain)
    batch = frames.sample(2000)
    assert_samples_match(frames, plain_by_id, batch)
    assert torch.equal(batch.terminated, torch.tensor([plain.terminated[int(i)].item() for i in batch.actions]))
    # Drawn: the newest transitions whose frames the rings still hold, all of them.
    drawn = set(batch.actions.tolist())
    newest = set(range(300 - capacity + 4 * 12, 300))  # a few boundaries' frames below the capacity
    assert newest <= drawn and min(drawn) >= 300 - capacity - num_envs
    assert len(frames) == capacity and frames.sampleable == len(drawn) <= capacity


def test_a_ring_overwrites_the_oldest_transitions_first_and_never_samples_them():
    envs = frame_stacked_envs(1, time_limit=1000, termination=0.0)  # one long episode: no boundaries
    frames = FrameReplayBuffer(10, (4, 6, 6), CPU, seed=0, num_envs=1)
    stream = list(play(envs, 25))
    for obs, ids, rewards, next_obs, _, _ in stream:
        frames.add_batch(obs, ids, rewards, next_obs, np.array([False]), np.array([False]))
    assert frames.frames_per_env == 10 + 4
    # 25 transitions through a ring of 14 frames: the last 10 keep all four of their frames.
    assert set(frames.sample(1000).actions.tolist()) == set(range(15, 25)) and frames.sampleable == 10
    for number in range(15, 25):
        obs, next_obs = stream[number][0][0], stream[number][3][0]
        index = torch.tensor([3 + number])  # stack k's newest frame is the stream's frame 3 + k
        assert torch.equal(frames._stacks(index % 14, 0)[0], torch.as_tensor(obs))
        assert torch.equal(frames._stacks(index % 14, frames.steps[index % 14])[0], torch.as_tensor(next_obs))


@pytest.mark.parametrize("num_envs", [1, 2])
def test_n_step_prioritised_frames_equal_the_plain_prioritised_buffer(num_envs):
    envs = frame_stacked_envs(num_envs, time_limit=6)
    args = dict(num_envs=num_envs, n_step=3, gamma=0.9, priority_exponent=0.5)
    frames = PrioritizedFrameReplayBuffer(50, (4, 6, 6), CPU, 0, **args)
    plain = PrioritizedReplayBuffer(10_000, (4, 6, 6), CPU, 0, obs_dtype=torch.uint8, **args)
    for obs, ids, rewards, next_obs, terminated, truncated in play(envs, 200 // num_envs, seed=1):
        frames.add_batch(obs, ids, rewards, next_obs, terminated, truncated)
        plain.add_batch(obs, ids, rewards, next_obs, terminated, truncated)
    assert frames.returns.count.tolist() == plain.pending_count.tolist()
    plain_by_id = stored_by_id(plain)
    batch = frames.sample(1000, beta=0.4)
    assert_samples_match(frames, plain_by_id, batch)
    assert [float(d) for d in batch.discounts] == [plain_by_id[int(i)][3] for i in batch.actions]
    # New transitions at the largest priority: all 1 here, so the weights are all 1.
    assert torch.equal(batch.weights, torch.ones(1000))
    probabilities = frames.probabilities()
    assert probabilities[frames.drawable == 0].sum() == 0
    torch.testing.assert_close(probabilities.sum(), torch.tensor(1.0))
    frames.update_priorities(batch.index[:1], torch.tensor([5.0]))
    assert frames.priorities.max_priority == 5.0


def through_a_checkpoint(state):
    file = io.BytesIO()
    torch.save(state, file)
    file.seek(0)
    return torch.load(file, weights_only=True)


@pytest.mark.parametrize("prioritized", [False, True])
def test_a_restored_buffer_continues_bit_identically(prioritized):
    def make():
        if prioritized:
            return PrioritizedFrameReplayBuffer(40, (4, 6, 6), CPU, 3, 2, n_step=3, gamma=0.9, priority_exponent=0.5)
        return FrameReplayBuffer(40, (4, 6, 6), CPU, 3, num_envs=2)

    def sample(buffer):
        return buffer.sample(16, beta=0.5) if prioritized else buffer.sample(16)

    stream = list(play(frame_stacked_envs(2), 60, seed=2))
    original = make()
    for step, transition in enumerate(stream):
        original.add_batch(*transition)
        if step == 4:  # before any ring is full: only the written part is saved
            state = through_a_checkpoint(original.state_dict())
            assert state["frames"].shape[1] < original.frames_per_env
            partly = make()
            partly.load_state_dict(state)
        if step == 30:  # after the rings wrapped around
            restored = make()
            restored.load_state_dict(through_a_checkpoint(original.state_dict()))
            assert restored.sampleable == original.sampleable and len(restored) == len(original)
    for step, transition in enumerate(stream[5:], start=5):
        partly.add_batch(*transition)
        if step > 30:
            restored.add_batch(*transition)
    for copy in (partly, restored):
        for name in ("frames", "actions", "rewards", "discounts", "steps", "drawable"):
            assert torch.equal(getattr(copy, name), getattr(original, name)), name
        assert torch.equal(copy.generator.get_state(), original.generator.get_state())
    expected = sample(original)
    for copy in (partly, restored):
        assert all(torch.equal(a, b) for a, b in zip(sample(copy), expected))


def test_memory_is_an_eighth_of_the_plain_buffer_for_atari_frame_stacks():
    shape, capacity = (4, 84, 84), 2000

    def nbytes(buffer):
        return sum(t.nbytes for t in vars(buffer).values() if isinstance(t, torch.Tensor))

    frames = FrameReplayBuffer(capacity, shape, CPU, 0, num_envs=1)
    plain = ReplayBuffer(capacity, shape, (), CPU, 0, obs_dtype=torch.uint8, action_dtype=torch.int64)
    assert nbytes(frames) / capacity < 7200 and nbytes(plain) / capacity > 56_000
    assert nbytes(frames) < nbytes(plain) / 7.8


def test_images_that_are_not_frame_stacks_are_refused_with_one_line():
    frames = FrameReplayBuffer(20, (3, 6, 6), CPU, 0, num_envs=1)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 1, 3, 6, 6), dtype=np.uint8)  # RGB images, no shared frames
    no = np.array([False])
    frames.add_batch(images[0], np.array([0]), np.array([0.0]), images[1], no, no)
    with pytest.raises(RunError, match=r"not frame stacks.*algo\.frame_buffer=false"):
        frames.add_batch(images[1] + 1, np.array([1]), np.array([0.0]), images[2], no, no)


def test_a_run_on_images_that_are_not_frame_stacks_stops_with_one_line_naming_the_setting(rlrun, tmp_path):
    args = ["experiment=smoke", "algo=dqn", "env=CartPole", "env.id=tests.plain_env:RandomImages-v0", "total_steps=300"]
    refused = rlrun(*args, "algo.learning_starts=100", f"hydra.run.dir={tmp_path / 'frames'}")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        "rlrun: error: the image observations are not frame stacks (each the previous one shifted by one frame); "
        "store them whole with algo.frame_buffer=false"
    )
    whole = rlrun(*args, "algo.learning_starts=100", "algo.frame_buffer=false", f"hydra.run.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr
