"""`rlrun collect=<run folder> episodes=N [options]`: a Minari dataset of a saved run's policy,
for offline algorithms to learn from (dataset=); with from=replay, of its replay buffer.

from=policy (the default): each episode is the policy's action (the mode; with noise=σ, plus
Gaussian noise of σ action half-widths, clipped to the bounds) on the run's environment, seeded
seed + i. Reference scores, for eval/normalized_score: a uniformly random policy's mean return
(ref_min_score) and the collected episodes' mean return (ref_max_score).

from=replay: every transition the checkpoint's replay buffer holds, cut into the episodes they
came from (D4RL's "replay" datasets: the data an agent learnt from, early episodes and all).
ref_max_score is then the saved policy's mean return over reference_episodes episodes.
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
    "from": "policy (episodes of the saved policy) or replay (the checkpoint's replay buffer); default policy",
    "episodes": "how many episodes to collect (required with from=policy)",
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
    source = options.get("from", "policy")
    if source not in ("policy", "replay"):
        raise ConfigError(
            f"from={source!r} is not valid; choose policy (episodes of the saved policy) or replay (its replay buffer)"
        )
    if source == "replay":
        given = [f"{name}=" for name in ("episodes", "noise") if name in options]
        if given:
            raise ConfigError(
                f"{' and '.join(given)} choose episodes of the policy; from=replay writes the replay buffer as it is"
            )
    else:
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
    out = str(options.get("out") or "") or _default_out(
        folder, settings.env.id, saved.plan.algo_name + ("-replay" if source == "replay" else "")
    )

    rng = np.random.default_rng(seed)
    actions = BoxActions(env.action_space) if isinstance(env.action_space, gym.spaces.Box) else None

    def policy(obs: np.ndarray):
        action = saved.agent.act(obs, deterministic=True)
        if noise and actions is not None:
            unit = actions.to_unit(np.asarray(action)) + noise * rng.standard_normal(env.action_space.shape)
            action = actions.to_env(np.clip(unit, -1.0, 1.0)).astype(env.action_space.dtype)
        return action

    if source == "replay":
        num_envs = getattr(saved.plan.algo_config, "num_envs", 1)
        collected = replay_episodes(saved.state.get("loop", {}).get("buffer"), num_envs, env, checkpoint)
        played = [_episode(env, policy, seed + i, saved.agent) for i in range(reference_episodes)]
        ref_max = float(np.mean([episode.rewards.sum() for episode in played]))
        what = f"the replay buffer of {checkpoint} (step {saved.state['step']})"
    else:
        collected = [_episode(env, policy, seed + i, saved.agent) for i in range(episodes)]
        ref_max = float(np.mean([episode.rewards.sum() for episode in collected]))
        what = f"{episodes} episodes of {checkpoint} (step {saved.state['step']}), action noise σ={noise}"
    env.action_space.seed(seed)
    offset = seed + reference_episodes + (0 if source == "replay" else episodes)
    random = [_episode(env, lambda obs: env.action_space.sample(), offset + i) for i in range(reference_episodes)]
    ref_min = float(np.mean([episode.rewards.sum() for episode in random]))
    written = write_dataset(
        out,
        collected,
        env.spec,
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        algorithm_name=f"rlrun {saved.plan.algo_name}",
        description=what,
    )
    env.close()
    returns = np.array([episode.rewards.sum() for episode in collected])
    steps = sum(len(episode.rewards) for episode in collected)
    print(
        f"{saved.plan.algo_name} on {settings.env.id}, {what}: {len(collected)} episodes, {steps} steps, "
        f"return {returns.mean():.1f} ± {returns.std():.1f}; ref_min_score {ref_min:.1f} (a random policy), "
        f"ref_max_score {ref_max:.1f} ({'the saved policy' if source == 'replay' else 'the collected episodes'}) "
        f"→ {written} (train on it with dataset={out})"
    )


def replay_episodes(buffer: dict | None, num_envs: int, env: gym.Env, checkpoint: Path) -> list[Episode]:
    """The transitions of a saved ReplayBuffer state as episodes, each sub-environment's oldest first.

    The ring holds num_envs rows per vector step, one per sub-environment in order, so in
    chronological order (from the write position once full) row c came from sub-environment
    (c - size) mod num_envs. Within a sub-environment, a transition continues the previous one
    unless that one terminated or its next observation is not this one's observation (a
    truncation and reset). Episodes cut short, by the run's end or by the ring overwriting their
    start, end truncated. Box actions are stored in [-1, 1] (BoxActions) and written back in
    the environment's units."""
    plain = {"obs", "actions", "rewards", "next_obs", "terminated", "position", "size"}
    if buffer is None:
        raise ConfigError(
            f"from=replay: {checkpoint} holds no replay buffer (an algorithm without one, or checkpoint.replay_buffer=false); "
            "use from=policy episodes=N"
        )
    if not plain <= buffer.keys() or "discounts" in buffer:
        raise ConfigError(
            f"from=replay reads one-step transitions of vector observations; {checkpoint}'s buffer stores "
            f"{'n-step returns' if 'discounts' in buffer else 'frames or sequences'}: use from=policy episodes=N"
        )
    size = int(buffer["size"])
    # The oldest row is the write position once the ring is full (before, the position is size).
    order = np.roll(np.arange(size), -int(buffer["position"]))
    obs, next_obs = buffer["obs"].cpu().numpy(), buffer["next_obs"].cpu().numpy()
    actions, rewards = buffer["actions"].cpu().numpy(), buffer["rewards"].cpu().numpy()
    terminated = buffer["terminated"].cpu().numpy() > 0
    if isinstance(env.action_space, gym.spaces.Box):
        actions = BoxActions(env.action_space).to_env(actions).astype(env.action_space.dtype)
    obs_dtype = env.observation_space.dtype
    episodes = []
    for stream in range(num_envs):
        rows = order[(np.arange(size) - size) % num_envs == stream]
        begin = 0
        for k, row in enumerate(rows):
            last = k + 1 == len(rows)
            if not (last or terminated[row] or not np.array_equal(next_obs[row], obs[rows[k + 1]])):
                continue
            part = rows[begin : k + 1]
            terminations, truncations = np.zeros(len(part), dtype=bool), np.zeros(len(part), dtype=bool)
            terminations[-1], truncations[-1] = terminated[row], not terminated[row]
            observations = np.concatenate([obs[part[:1]], next_obs[part]]).astype(obs_dtype)
            episodes.append(Episode(observations, actions[part], rewards[part], terminations, truncations))
            begin = k + 1
    return episodes


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
