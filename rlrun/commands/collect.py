"""`rlrun collect=<run folder> episodes=N [options]`: a Minari dataset of a saved run's policy,
for offline algorithms to learn from (dataset=).

Each episode is the policy's action (the mode; with noise=σ, plus Gaussian noise of σ
action half-widths, clipped to the bounds) on the run's environment, seeded seed + i. The
dataset's reference scores, for eval/normalized_score, are a uniformly random policy's mean
return (ref_min_score) and the collected episodes' mean return (ref_max_score).
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

from rlrun.blocks.spaces import BoxActions
from rlrun.config import MAX_EPISODES, ConfigError, EnvConfig, at_most
from rlrun.core.saved_run import choose_checkpoint, is_run_folder, load_agent, parse_options
from rlrun.envs.datasets import Episode, write_dataset
from rlrun.envs.ids import registered_id
from rlrun.protocols import EpisodeAware

COLLECT_OPTIONS = {
    "episodes": "how many episodes to collect (required)",
    "which": "last, best, a step number or a .pt path; default last",
    "noise": "σ of Gaussian noise on each action, in action half-widths (Box actions only); default 0",
    "out": "a folder (starting with /, ./ or ~) or a Minari id such as rlrun/pendulum-expert-v0; default <run>/datasets/<env>-<algo>-v0",
    "seed": "episode i is reset with seed + i, the noise drawn from seed; default the run's seed",
    "reference_episodes": "episodes of a random policy for ref_min_score; default 10",
    "device": "auto, cpu or cuda; default auto",
}


def main(folder_text: str, args: list[str]) -> None:
    options = parse_options("collect", args, COLLECT_OPTIONS)
    folder = Path(folder_text)
    if not folder.is_dir() or not is_run_folder(folder):
        raise ConfigError(f"collect={folder_text}: not a run folder; give one such as outputs/<date>/<time>")
    episodes = _count("episodes", options.get("episodes"), required=True)
    reference_episodes = _count("reference_episodes", options.get("reference_episodes", 10))
    noise = options.get("noise") or 0.0
    if not isinstance(noise, (int, float)) or isinstance(noise, bool) or noise < 0:
        raise ConfigError(f"noise={noise!r} must be a number, zero or positive (action half-widths)")

    checkpoint = choose_checkpoint("collect", folder, options.get("which"))
    saved = load_agent(checkpoint, {}, str(options.get("device") or "auto"))
    settings = saved.plan.run_config
    seed = options.get("seed", settings.seed)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed={seed!r} must be a whole number, zero or positive")
    env = _plain_env(settings.env)
    if noise and not isinstance(env.action_space, gym.spaces.Box):
        raise ConfigError(f"noise={noise} needs a Box action space; {settings.env.id} has {env.action_space}")
    out = str(options.get("out") or "") or _default_out(folder, settings.env.id, saved.plan.algo_name)

    rng = np.random.default_rng(seed)
    actions = BoxActions(env.action_space) if isinstance(env.action_space, gym.spaces.Box) else None

    def policy(obs: np.ndarray):
        action = saved.agent.act(obs, deterministic=True)
        if noise and actions is not None:
            unit = actions.to_unit(np.asarray(action)) + noise * rng.standard_normal(env.action_space.shape)
            action = actions.to_env(np.clip(unit, -1.0, 1.0)).astype(env.action_space.dtype)
        return action

    collected = [_episode(env, policy, seed + i, saved.agent) for i in range(episodes)]
    env.action_space.seed(seed)
    random = [_episode(env, lambda obs: env.action_space.sample(), seed + episodes + i) for i in range(reference_episodes)]
    returns = np.array([episode.rewards.sum() for episode in collected])
    ref_min, ref_max = float(np.mean([episode.rewards.sum() for episode in random])), float(returns.mean())
    written = write_dataset(
        out,
        collected,
        env.spec,
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        algorithm_name=f"rlrun {saved.plan.algo_name}",
        description=f"{episodes} episodes of {checkpoint} (step {saved.state['step']}), action noise σ={noise}",
    )
    env.close()
    steps = sum(len(episode.rewards) for episode in collected)
    print(
        f"{saved.plan.algo_name} on {settings.env.id}, {checkpoint}: {episodes} episodes, {steps} steps, return "
        f"{returns.mean():.1f} ± {returns.std():.1f} (ref_max_score); random policy {ref_min:.1f} (ref_min_score) "
        f"→ {written} (train on it with dataset={out})"
    )


def _count(name: str, value, required: bool = False) -> int:
    if value is None and required:
        raise ConfigError(f"collect= needs {name}=<how many>, e.g. {name}=100")
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name}={value!r} must be a whole number, at least 1")
    at_most(name, value, MAX_EPISODES, "episodes one collect= runs")
    return value


def _plain_env(env: EnvConfig) -> gym.Env:
    """The run's environment as gym.make builds it from its id, so that the dataset's env spec
    recreates it; runs whose environment rlrun preprocesses are refused."""
    preprocessed = [
        what
        for what, used in (
            ("env.wrappers", bool(env.wrappers)),
            ("env.action_repeat", env.action_repeat > 1),
            ("env.pixels", env.pixels),
            ("an Atari or DMC id", env.id.startswith(("ALE/", "dm_control/"))),
        )
        if used
    ]
    if preprocessed:
        raise ConfigError(
            f"collect= writes datasets of plain Gymnasium environments, which Minari can recreate from their spec; "
            f"this run's environment has {', '.join(preprocessed)}"
        )
    kwargs = dict(env.kwargs)
    if env.max_episode_steps is not None:
        kwargs["max_episode_steps"] = env.max_episode_steps
    return gym.make(registered_id(env.id), **kwargs)


def _episode(env: gym.Env, policy, seed: int, agent: object = None) -> Episode:
    """One episode of `policy`; an EpisodeAware `agent` is told where it starts and its rewards."""
    aware = agent if isinstance(agent, EpisodeAware) else None
    obs, _ = env.reset(seed=seed)
    if aware is not None:
        aware.begin_episode()
    observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
    done = False
    while not done:
        action = policy(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        if aware is not None:
            aware.observe_reward(float(reward))
        observations.append(obs), actions.append(action), rewards.append(reward)
        terminations.append(terminated), truncations.append(truncated)
        done = terminated or truncated
    return Episode(*map(np.array, (observations, actions, rewards, terminations, truncations)), seed=seed)


def _default_out(folder: Path, env_id: str, algo: str) -> str:
    """<run>/datasets/<env>-<algo>-v<n>, the first version not taken."""
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in env_id.lower())
    for version in range(1_000_000):
        path = (folder / "datasets" / f"{name}-{algo}-v{version}").absolute()
        if not path.exists():
            return str(path)
    raise ConfigError(f"{folder / 'datasets'} holds too many datasets named {name}-{algo}-v*")
