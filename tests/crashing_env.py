"""A Gymnasium environment that raises mid-run, registered for sweep fault-isolation tests
(`env.id=tests.crashing_env:CrashingPendulum-v0`). RLRUN_TEST_CRASH_AT=0 turns the crash off
(the fault is gone when the sweep is rerun)."""

import os

import gymnasium as gym
from gymnasium.envs.classic_control.pendulum import PendulumEnv

CRASH_AT_STEP = int(os.environ.get("RLRUN_TEST_CRASH_AT", 150))


class CrashingPendulum(PendulumEnv):
    steps = 0

    def step(self, action):
        CrashingPendulum.steps += 1
        if CrashingPendulum.steps == CRASH_AT_STEP:
            raise RuntimeError(f"simulated crash at step {CRASH_AT_STEP}")
        return super().step(action)


gym.register("CrashingPendulum-v0", entry_point=CrashingPendulum, max_episode_steps=200)
