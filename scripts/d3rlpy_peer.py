"""d3rlpy's TD3+BC, IQL or CQL trained on a Minari dataset with rlrun's settings: the peer side
of `scripts/benchmark.py --dataset` (its offline mode).

It runs in an environment of its own, since d3rlpy 2.8.1 pins gymnasium 1.0:

    python3.11 -m venv /work/d3venv
    /work/d3venv/bin/python -m pip install -c constraints.txt d3rlpy==2.8.1 'minari[hdf5]==0.5.4' pillow

and so imports only d3rlpy, minari, gymnasium, numpy, torch and the standard library, never
rlrun. The benchmark passes one JSON spec on the command line:

    /work/d3venv/bin/python scripts/d3rlpy_peer.py '{"algo": "iql", "dataset": "./datasets/x-v0",
        "config": {...rlrun's composed algo section...}, "steps": 2000, "eval_every": 500,
        "eval_episodes": 5, "seed": 0, "threads": 1}'

and reads one JSON line back: evaluation returns and normalised scores by gradient step,
gradient steps/s with evaluation time left out (and the share of it spent sampling batches),
and the process's peak RSS.

The dataset is read with Minari (a folder on disk or an id under the Minari root, as rlrun
reads it) into d3rlpy episodes that keep every transition exactly: an episode that ended by
termination has its T observations and ends terminal; one cut short keeps its (T + 1)th
observation as the last transition's next observation (a padding action and reward after it
are never sampled). Actions are clipped to the environment's bounds and mapped to [-1, 1]
with those bounds (rlrun's BoxActions), not with the dataset's own minimum and maximum.

Each gradient step is d3rlpy's own `fit` step: `dataset.sample_transition_batch` then
`algo.update`. Evaluation, as rlrun's: `eval_episodes` deterministic episodes
(`algo.predict`), the environment reset with seed + 10000 at the first episode of every
evaluation, on the dataset's evaluation environment; normalised score
100 · (R − ref_min_score) / (ref_max_score − ref_min_score).

Settings mapped from rlrun's config (configs/algo/<algo>.yaml), per algorithm:
  all      lr (actor and critic), batch_size, gamma, tau, hidden_sizes (VectorEncoderFactory),
           num_critics (n_critics), normalize_obs (StandardObservationScaler, whose ε 1e-3 is
           rlrun's too), the seed (d3rlpy.seed)
  td3_bc   alpha, policy_noise, noise_clip, policy_delay
  iql      expectile, beta (weight_temp), max_weight, actor_schedule=cosine
           (CosineAnnealingLRFactory(T_max=steps) on the actor's Adam), normalize_rewards
           (MultiplyRewardScaler by 1000 / (best − worst episode return), rlrun's factor)
  cql      actor_lr (actor and SAC temperature), lr (critics and the Lagrange multiplier),
           cql_alpha (conservative_weight), n_actions (n_action_samples), lagrange (a learnt
           α' starting at e, rlrun's log α' = 1, towards target_action_gap; without it α' is
           fixed at 1, alpha_learning_rate 0)

What d3rlpy cannot match (the benchmark's numbers carry these differences):
  all      d3rlpy samples each batch in Python, one transition at a time; rlrun's dataset sits
           in one tensor and is indexed at once. Observation statistics use ddof 0 (rlrun 1).
  iql      one Adam for V and the critics, stepped on the summed loss with Q's target from V
           before its update (rlrun: V first, then Q regresses on the updated V); log σ clipped
           to [−5, 2] (rlrun [−20, 2]); actor_schedule=constant is lr throughout on both.
  cql      temperature (T of T·logsumexp) is 1 in d3rlpy; importance_sample=false has no
           d3rlpy counterpart (d3rlpy always importance-samples); the penalty's uniform actions
           use d3rlpy's density log(0.5^|A|), the same as rlrun's.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
import warnings
from pathlib import Path

EVAL_SEED_OFFSET = 10_000  # rlrun's (rlrun/envs/episodes.py): evaluation resets with seed + this


def load_minari(source: str):
    """The MinariDataset at a folder on disk (or its data/ folder), else by id under the
    Minari root, as rlrun's `dataset=` reads it."""
    import minari

    for folder in (Path(source).expanduser() / "data", Path(source).expanduser()):
        if (folder / "metadata.json").is_file():
            return minari.MinariDataset(folder)
    return minari.load_dataset(source)


def d3rlpy_dataset(dataset, low, high):
    """A d3rlpy ReplayBuffer of the Minari dataset's episodes (see the module's docstring), and
    each episode's return."""
    import numpy as np
    from d3rlpy.constants import ActionSpace
    from d3rlpy.dataset import Episode, InfiniteBuffer, ReplayBuffer

    episodes, returns = [], []
    for episode in dataset.iterate_episodes():
        obs = np.asarray(episode.observations, dtype=np.float32)
        actions = np.clip(np.asarray(episode.actions, dtype=np.float32).reshape(len(episode.rewards), -1), low, high)
        rewards = np.asarray(episode.rewards, dtype=np.float32).reshape(-1, 1)
        returns.append(float(rewards.sum(dtype=np.float64)))
        if bool(np.asarray(episode.terminations)[-1]):
            episodes.append(Episode(obs[:-1], actions, rewards, terminated=True))
        else:
            # The last observation stays as the next observation of the last transition; the
            # padding action and reward after it belong to no sampled transition.
            episodes.append(
                Episode(obs, np.concatenate([actions, actions[-1:]]), np.concatenate([rewards, rewards[-1:]]), terminated=False)
            )
    buffer = ReplayBuffer(
        InfiniteBuffer(), episodes=episodes, action_space=ActionSpace.CONTINUOUS, action_size=episodes[0].actions.shape[1]
    )
    return buffer, np.asarray(returns)


def d3rlpy_algo(algo: str, a: dict, steps: int, low, high, returns):
    """The d3rlpy algorithm with the settings of rlrun's algo config `a`."""
    import d3rlpy
    from d3rlpy.models.encoders import VectorEncoderFactory
    from d3rlpy.optimizers import AdamFactory
    from d3rlpy.optimizers.lr_schedulers import CosineAnnealingLRFactory

    encoder = VectorEncoderFactory(hidden_units=list(a["hidden_sizes"]))
    common = dict(
        batch_size=a["batch_size"],
        gamma=a["gamma"],
        tau=a["tau"],
        n_critics=a["num_critics"],
        actor_encoder_factory=encoder,
        critic_encoder_factory=encoder,
        observation_scaler=d3rlpy.preprocessing.StandardObservationScaler() if a["normalize_obs"] else None,
        action_scaler=d3rlpy.preprocessing.MinMaxActionScaler(minimum=low, maximum=high),
    )
    if algo == "td3_bc":
        return d3rlpy.algos.TD3PlusBCConfig(
            actor_learning_rate=a["lr"],
            critic_learning_rate=a["lr"],
            alpha=a["alpha"],
            target_smoothing_sigma=a["policy_noise"],
            target_smoothing_clip=a["noise_clip"],
            update_actor_interval=a["policy_delay"],
            **common,
        ).create(device="cpu:0")
    if algo == "iql":
        spread = float(returns.max() - returns.min())
        scale = 1000.0 / spread if a["normalize_rewards"] and spread > 0 else 1.0
        schedule = CosineAnnealingLRFactory(T_max=steps) if a["actor_schedule"] == "cosine" else None
        return d3rlpy.algos.IQLConfig(
            actor_learning_rate=a["lr"],
            critic_learning_rate=a["lr"],
            actor_optim_factory=AdamFactory(lr_scheduler_factory=schedule),
            value_encoder_factory=encoder,
            expectile=a["expectile"],
            weight_temp=a["beta"],
            max_weight=a["max_weight"],
            reward_scaler=d3rlpy.preprocessing.MultiplyRewardScaler(scale) if scale != 1.0 else None,
            **common,
        ).create(device="cpu:0")
    if algo == "cql":
        return d3rlpy.algos.CQLConfig(
            actor_learning_rate=a["actor_lr"],
            temp_learning_rate=a["actor_lr"],
            critic_learning_rate=a["lr"],
            alpha_learning_rate=a["lr"] if a["lagrange"] else 0.0,
            initial_alpha=math.e if a["lagrange"] else 1.0,
            alpha_threshold=a["target_action_gap"] if a["lagrange"] else 0.0,
            conservative_weight=a["cql_alpha"],
            n_action_samples=a["n_actions"],
            **common,
        ).create(device="cpu:0")
    raise SystemExit(f"d3rlpy_peer.py: no d3rlpy mapping for algo {algo}; choose td3_bc, iql or cql")


def evaluate(algo, env, episodes: int, seed: int) -> float:
    """The mean return of `episodes` deterministic episodes, reset with `seed` at the first."""
    import numpy as np

    total = 0.0
    obs, _ = env.reset(seed=seed)
    for _ in range(episodes):
        done = False
        while not done:
            action = algo.predict(np.asarray(obs, dtype=np.float32)[None])[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        obs, _ = env.reset()
    return total / episodes


def main() -> None:
    spec = json.loads(sys.argv[1])
    warnings.simplefilter("ignore")
    import d3rlpy
    import gymnasium as gym
    import numpy as np
    import torch

    torch.set_num_threads(spec["threads"])
    d3rlpy.seed(spec["seed"])
    dataset = load_minari(spec["dataset"])
    env_spec = getattr(dataset, "_eval_env_spec", None) or dataset.env_spec
    kwargs = {key: value for key, value in (env_spec.kwargs or {}).items() if key != "render_mode"}
    env = gym.make(env_spec.id, max_episode_steps=env_spec.max_episode_steps, **kwargs)
    low, high = env.action_space.low.astype(np.float32), env.action_space.high.astype(np.float32)
    metadata = dataset.storage.metadata
    ref_min, ref_max = metadata.get("ref_min_score"), metadata.get("ref_max_score")

    buffer, returns = d3rlpy_dataset(dataset, low, high)
    algo = d3rlpy_algo(spec["algo"], spec["config"], spec["steps"], low, high, returns)
    # What d3rlpy's fit does before its loop: fit the scalers, then build the networks.
    from d3rlpy.algos.utility import build_scalers_with_transition_picker

    build_scalers_with_transition_picker(algo, buffer)
    algo.build_with_dataset(buffer)

    evals, scores, eval_train_seconds = {}, {}, {}
    train_seconds = sample_seconds = 0.0
    start = time.perf_counter()
    for step in range(1, spec["steps"] + 1):
        sampling = time.perf_counter()
        batch = buffer.sample_transition_batch(algo.config.batch_size)
        sample_seconds += time.perf_counter() - sampling
        algo.update(batch)
        if step % spec["eval_every"] == 0 or step == spec["steps"]:
            train_seconds += time.perf_counter() - start
            eval_train_seconds[step] = round(train_seconds, 3)
            mean = evaluate(algo, env, spec["eval_episodes"], spec["seed"] + EVAL_SEED_OFFSET)
            evals[step] = mean
            if ref_min is not None and ref_max is not None and ref_max != ref_min:
                scores[step] = 100.0 * (mean - ref_min) / (ref_max - ref_min)
            start = time.perf_counter()
    print(
        json.dumps(
            {
                "train_sps": round(spec["steps"] / train_seconds, 2),
                "steps_run": spec["steps"],
                # The share of training time spent drawing batches (d3rlpy picks each transition in Python).
                "sample_share": round(sample_seconds / train_seconds, 3),
                "eval_returns": evals,
                "eval_normalized_scores": scores,
                "eval_train_seconds": eval_train_seconds,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
