"""Gymnasium environments for tests: one without rendering, for the video tests
(`env.id=tests.plain_env:NoRender-v0`): a 1-D point that the action pushes."""

import gymnasium as gym
import numpy as np


class NoRender(gym.Env):
    observation_space = gym.spaces.Box(-10.0, 10.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, render_mode=None):
        self.render_mode = render_mode  # accepted, as gym.make passes it; render() is not implemented

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = self.np_random.uniform(-1, 1, size=1).astype(np.float32)
        return self.position.copy(), {}

    def step(self, action):
        self.position = np.clip(self.position + action, -10, 10).astype(np.float32)
        return self.position.copy(), -float(abs(self.position[0])), False, False, {}


gym.register("NoRender-v0", entry_point=NoRender, max_episode_steps=50)


class RandomImages(gym.Env):
    """Random RGB images (3, 36, 36), not frame stacks, with two actions
    (`env.id=tests.plain_env:RandomImages-v0`): what algo.frame_buffer=true refuses."""

    observation_space = gym.spaces.Box(0, 255, (3, 36, 36), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._image(), {}

    def step(self, action):
        return self._image(), 0.0, False, False, {}

    def _image(self):
        return self.np_random.integers(0, 256, (3, 36, 36), dtype=np.uint8)


gym.register("RandomImages-v0", entry_point=RandomImages, max_episode_steps=50)
