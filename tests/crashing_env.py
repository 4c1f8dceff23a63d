"""Gymnasium environments that fail in the ways real ones do, for the fault tests.

`env.id=tests.crashing_env:CrashingPendulum-v0` raises in step() at step RLRUN_TEST_CRASH_AT
(150 by default; 0 turns the crash off, as when the fault is gone and a sweep is rerun).
`NaNRewardPendulum-v0` returns a NaN reward and `NaNObservationPendulum-v0` a NaN observation
at step RLRUN_TEST_NAN_AT (250); `BrokenResetPendulum-v0` raises in reset() after its first
RLRUN_TEST_RESETS_OK resets (1); `BrokenConstructor-v0` raises when made.
"""

import os

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.pendulum import PendulumEnv

CRASH_AT_STEP = int(os.environ.get("RLRUN_TEST_CRASH_AT", 150))
NAN_AT_STEP = int(os.environ.get("RLRUN_TEST_NAN_AT", 250))
RESETS_OK = int(os.environ.get("RLRUN_TEST_RESETS_OK", 1))


class CrashingPendulum(PendulumEnv):
    steps = 0

    def step(self, action):
        CrashingPendulum.steps += 1
        if CrashingPendulum.steps == CRASH_AT_STEP:
            raise RuntimeError(f"simulated crash at step {CRASH_AT_STEP}")
        return super().step(action)


class NaNRewardPendulum(PendulumEnv):
    steps = 0

    def step(self, action):
        NaNRewardPendulum.steps += 1
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, (float("nan") if NaNRewardPendulum.steps == NAN_AT_STEP else reward), terminated, truncated, info


class NaNObservationPendulum(PendulumEnv):
    steps = 0

    def step(self, action):
        NaNObservationPendulum.steps += 1
        obs, reward, terminated, truncated, info = super().step(action)
        if NaNObservationPendulum.steps == NAN_AT_STEP:
            obs = np.full_like(obs, np.nan)
        return obs, reward, terminated, truncated, info


class BrokenResetPendulum(PendulumEnv):
    resets = 0

    def reset(self, *, seed=None, options=None):
        BrokenResetPendulum.resets += 1
        if BrokenResetPendulum.resets > RESETS_OK:
            raise OSError("simulator connection lost")
        return super().reset(seed=seed, options=options)


class BrokenConstructor(PendulumEnv):
    def __init__(self, **kwargs):
        raise ValueError("licence file not found")


for name, entry_point in [
    ("CrashingPendulum-v0", CrashingPendulum),
    ("NaNRewardPendulum-v0", NaNRewardPendulum),
    ("NaNObservationPendulum-v0", NaNObservationPendulum),
    ("BrokenResetPendulum-v0", BrokenResetPendulum),
    ("BrokenConstructor-v0", BrokenConstructor),
]:
    gym.register(name, entry_point=entry_point, max_episode_steps=200)
