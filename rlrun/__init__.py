"""rlrun: a Hydra-configured command-line runner for deep reinforcement learning."""

__version__ = "0.1.0"
