"""The replay buffer gives back what was stored, in the dtypes it was given."""

import numpy as np
import torch

from rlrun.blocks.buffers import ReplayBuffer


def test_replay_buffer_returns_what_was_stored_with_integer_actions_and_uint8_frames():
    capacity, frame_shape = 5, (2, 3, 3)
    buffer = ReplayBuffer(capacity, frame_shape, (), torch.device("cpu"), seed=0, obs_dtype=torch.uint8, action_dtype=torch.int64)
    # Transition k: frames full of k (next frames k + 100), action 3k, reward k/2, terminated if k odd.
    # Added as vector steps of 1, 3 and 4 sub-environments; the last one wraps around the end.
    for ks in (np.arange(0, 1), np.arange(1, 4), np.arange(4, 8)):  # 8 > capacity: 0, 1, 2 are overwritten
        frames = np.ones((len(ks), *frame_shape), dtype=np.uint8) * ks.reshape(-1, 1, 1, 1).astype(np.uint8)
        buffer.add_batch(frames, 3 * ks, ks / 2, frames + 100, terminated=ks % 2 == 1)
    assert len(buffer) == capacity and buffer.position == 8 % capacity
    assert buffer.obs.dtype == torch.uint8 and buffer.actions.dtype == torch.int64
    # Slot i holds the newest transition k with k % capacity == i.
    assert buffer.obs[:, 0, 0, 0].tolist() == [5, 6, 7, 3, 4]

    batch = buffer.sample(200)
    assert batch.obs.dtype == torch.uint8 and batch.actions.dtype == torch.int64 and batch.actions.shape == (200,)
    k = batch.obs[:, 0, 0, 0].long()
    assert set(k.tolist()) == {3, 4, 5, 6, 7}
    assert torch.equal(batch.obs, k.to(torch.uint8).view(-1, 1, 1, 1).expand(-1, *frame_shape))
    assert torch.equal(batch.next_obs, (k + 100).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, *frame_shape))
    assert torch.equal(batch.actions, 3 * k)
    torch.testing.assert_close(batch.rewards, k.float() / 2)
    torch.testing.assert_close(batch.terminated, (k % 2).float())


def test_a_part_filled_buffer_checkpoints_only_what_it_holds():
    """torch.save writes a view's whole storage: the state of a buffer holding 10 of 100,000
    transitions must not carry the other 99,990."""
    import io

    buffer = ReplayBuffer(100_000, (8,), (2,), torch.device("cpu"), seed=0)
    obs = np.ones((10, 8), dtype=np.float32)
    buffer.add_batch(obs, np.ones((10, 2), dtype=np.float32), np.ones(10), obs, np.zeros(10))

    def saved_bytes(state) -> int:
        stream = io.BytesIO()
        torch.save(state, stream)
        return stream.tell()

    full_obs = 100_000 * 8 * 4
    assert saved_bytes(buffer.state_dict()) < full_obs / 100
    restored = ReplayBuffer(100_000, (8,), (2,), torch.device("cpu"), seed=0)
    restored.load_state_dict(buffer.state_dict())
    assert torch.equal(restored.obs[:10], buffer.obs[:10]) and len(restored) == 10
