"""A custom Gymnasium environment, ready for rlrun: `rlrun algo=sac env=Pendulum
env.id=examples.point_env:PointMass-v0` (from the folder that holds `examples/`).

A point on a line starts at a random position in [-1, 1] and is pushed by the action, a force
in [-1, 1]; the reward is minus its distance from the origin. Registering it in this module,
as Gymnasium's `module:EnvId` form expects, is all rlrun needs: rlrun imports the module
before it makes the environment.
"""

import gymnasium as gym
import numpy as np


class PointMass(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, render_mode=None, friction: float = 0.1):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)  # position, velocity
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.friction = friction
        self.render_mode = render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)  # seeds self.np_random: the same seed, the same start
        self.state = np.array([self.np_random.uniform(-1, 1), 0.0])
        return self.state.astype(np.float32), {}

    def step(self, action):
        position, velocity = self.state
        velocity = (1 - self.friction) * velocity + 0.05 * float(np.clip(action[0], -1, 1))
        position = float(np.clip(position + velocity, -5, 5))
        self.state = np.array([position, velocity])
        return self.state.astype(np.float32), -abs(position), False, False, {}


# Episodes end after 200 steps (truncation); rlrun's env.max_episode_steps can change that.
gym.register("PointMass-v0", entry_point=PointMass, max_episode_steps=200)
