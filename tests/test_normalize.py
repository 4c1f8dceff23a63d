"""Running statistics against numpy, and the reward scaler's discounted-return variance."""

import numpy as np
import pytest

from rlrun.blocks.normalize import RewardScaler, RunningMeanStd


def test_running_mean_std_matches_numpy_on_random_chunks():
    rng = np.random.default_rng(0)
    # A negligible prior count, so the merge is compared exactly (the default 1e-4, as SB3 and
    # Gymnasium, weighs a prior of mean 0 and variance 1 by 1e-4 samples).
    rms = RunningMeanStd((3,), epsilon=1e-12)
    chunks = [rng.normal([1.0, -5.0, 100.0], [0.1, 2.0, 30.0], size=(n, 3)) for n in (1, 0, 7, 64, 2, 500)]
    for chunk in chunks:
        rms.update(chunk)
    data = np.concatenate(chunks)
    np.testing.assert_allclose(rms.mean, data.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(rms.var, data.var(axis=0), rtol=1e-9)
    assert rms.count == pytest.approx(len(data))


def test_reward_scaler_uses_the_std_of_the_discounted_return_and_skips_autoreset_steps():
    gamma = 0.5
    scaler = RewardScaler(num_envs=1, gamma=gamma, clip=1e9)
    scaler.rms = RunningMeanStd((), epsilon=1e-12)  # no prior sample, to compare with numpy exactly
    # Episode r = 1, 2, 4 (done), then an autoreset step (reward 0, inactive), then r = 3.
    steps = [(1.0, False, True), (2.0, False, True), (4.0, True, True), (0.0, False, False), (3.0, False, True)]
    for reward, done, active in steps:
        scaled = scaler(np.array([reward]), np.array([done]), np.array([active]))
    returns = np.array([1.0, 2.5, 5.25, 3.0])  # R = γR + r, restarted after the done; autoreset step left out
    np.testing.assert_allclose(scaler.rms.var, returns.var(), rtol=1e-9)
    assert scaled.item() == pytest.approx(3.0 / np.sqrt(scaler.rms.var + 1e-8))
