"""A batched group of seeds (docs/batched-seeds.md): the stacked update equals separate
updates, and a group writes a separate run's folder for each seed."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import checkpoint_file, run_rlrun, start_rlrun, wait_for

from rlrun.algos.ddpg import DDPG, DDPGConfig
from rlrun.algos.sac import SAC, SACConfig
from rlrun.algos.td3 import TD3, TD3Config
from rlrun.blocks.buffers import Batch
from rlrun.blocks.stacking import SeedGroup, SeedStack

OBS_SPACE = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
ACTION_SPACE = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)
CPU = torch.device("cpu")


def plain_agents(algo: type, config: object, seeds: list[int]) -> list:
    """Each seed's agent as its separate run builds it: initialised under its own seed."""
    agents = []
    for seed in seeds:
        torch.manual_seed(seed)
        agents.append(algo(config, OBS_SPACE, ACTION_SPACE, CPU, seed))
    return agents


def stacked_group(algo: type, config: object, agents: list) -> tuple[object, SeedGroup, SeedStack]:
    seeds = [agent.seed for agent in agents]
    template = algo(config, OBS_SPACE, ACTION_SPACE, CPU, seeds[0])
    group = SeedGroup(
        lambda stack: algo(config, OBS_SPACE, ACTION_SPACE, CPU, seeds[0], stack=stack), SeedStack(seeds, CPU), template
    )
    group.stacked.load_state_dict(group.layout.stack([agent.state_dict() for agent in agents]))
    return group.stacked, group, group.stack


def random_batch(generator: torch.Generator, size: int) -> Batch:
    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=generator) * 2 - 1

    terminated = (torch.rand(size, generator=generator) < 0.2).float()
    return Batch(uniform(size, 3), uniform(size, 2), uniform(size), uniform(size, 3), terminated)


def assert_states_close(mine: dict, theirs: dict, where: str = "") -> None:
    assert mine.keys() == theirs.keys(), where
    for key in mine:
        a, b = mine[key], theirs[key]
        if isinstance(a, dict):
            assert_states_close(a, b, f"{where}{key}.")
        elif isinstance(a, list):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=f"{where}{key}.{i}")
        elif isinstance(a, torch.Tensor):
            assert a.shape == b.shape, f"{where}{key}: {a.shape} vs {b.shape}"
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"{where}{key}")
        else:
            assert a == b, f"{where}{key}"


@pytest.mark.parametrize(
    ("algo", "config"),
    [
        (SAC, SACConfig(hidden_sizes=(32, 32), batch_size=16, num_critics=2)),
        (TD3, TD3Config(hidden_sizes=(32, 32), batch_size=16, num_critics=2, policy_delay=2)),
        (DDPG, DDPGConfig(hidden_sizes=(32, 32), batch_size=16)),
    ],
    ids=["sac", "td3", "ddpg"],
)
def test_stacked_update_equals_separate_updates(algo, config) -> None:
    """S seeds' agents stacked and updated together end where S separate agents end after
    the same updates on the same batches with the same noise: parameters, Adam's moments,
    SAC's temperature, TD3's delayed actor and every metric, to float tolerance."""
    seeds = [3, 7, 11]
    separate = plain_agents(algo, config, seeds)
    stacked, group, stack = stacked_group(algo, config, plain_agents(algo, config, seeds))
    for index, agent in enumerate(separate):  # the stack starts where the separate agents start
        assert_states_close(group.layout.member_state(stacked.state_dict(), index), agent.state_dict())

    data = torch.Generator().manual_seed(0)
    for _ in range(4):
        batches = [random_batch(data, 16) for _ in seeds]
        # Each separate agent draws its noise from the generator state its seed has in the stack.
        noise_states = [g.get_state() for g in stack.generators]
        stacked_metrics = stacked.update(Batch(*(torch.stack(parts) for parts in zip(*batches))))
        for index, (agent, batch) in enumerate(zip(separate, batches)):
            torch.set_rng_state(noise_states[index])
            metrics = agent.update(batch)
            for name, value in metrics.items():
                torch.testing.assert_close(stacked_metrics[name][index], value, rtol=1e-5, atol=1e-6, msg=name)
    for index, agent in enumerate(separate):
        assert_states_close(group.layout.member_state(stacked.state_dict(), index), agent.state_dict())
    # The seeds really differ: a stack of copies of one agent would pass the checks above too.
    first, second = (dict(agent.actor.named_parameters()) for agent in separate[:2])
    assert not any(torch.equal(first[name], second[name]) for name in first)


def test_a_seed_evaluates_as_its_separate_agent() -> None:
    """A group member's evaluation action is its plain agent's, whichever seed the shared
    template held before."""
    config = SACConfig(hidden_sizes=(32, 32))
    seeds = [0, 1]
    separate = plain_agents(SAC, config, seeds)
    _, group, _ = stacked_group(SAC, config, plain_agents(SAC, config, seeds))
    obs = np.array([0.1, -0.2, 0.3], np.float32)
    for index in (0, 1, 0):
        np.testing.assert_allclose(group.members[index].act(obs), separate[index].act(obs), rtol=1e-6)


@pytest.mark.slow
def test_batched_group_writes_a_run_folder_per_seed(rlrun, tmp_path):
    """hydra/launcher=batched trains SAC's three seeds as one group, each seed in a run folder
    of its own that `rlrun evaluate=` reads as any run's; PPO, which does not batch yet, runs
    its seeds one after another, with one line saying so."""
    sweep_dir = tmp_path / "sweep"
    result = rlrun(
        "-m",
        "experiment=smoke",
        "algo=sac,ppo",
        "env=Pendulum",
        "seed=0,1,2",
        "total_steps=300",
        "eval.every=300",
        "checkpoint.every=150",
        "threads=1",
        "hydra/launcher=batched",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "seeds 0, 1, 2 of experiment=smoke algo=sac env=Pendulum total_steps=300 eval.every=300" in output
    assert "the 3 seeds of experiment=smoke algo=ppo env=Pendulum total_steps=300 eval.every=300" in output
    assert "run one after another: algo=ppo does not batch seeds yet (algorithms that do: sac, td3, ddpg)" in output

    folders = {json.loads((f / "summary.json").read_text())["seed"]: f for f in sweep_dir.glob("*algo=sac*")}
    assert sorted(folders) == [0, 1, 2]
    returns = []
    for seed, folder in folders.items():
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["total_steps"] == 300 and summary["seed_group"] == [0, 1, 2]
        assert (folder / ".hydra" / "config.yaml").exists() and list(folder.glob("events.out.tfevents.*"))
        assert f"seed={seed}" in (folder / ".hydra" / "overrides.yaml").read_text()
        logged = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert any("train/alpha" in row for row in logged) and any("eval/return_mean" in row for row in logged)
        for name in ("step_000000150.pt", "step_000000300.pt", "best.pt"):
            assert (folder / "checkpoints" / name).exists(), name
        evaluated = rlrun(f"evaluate={folder}", "eval.episodes=1")
        assert evaluated.returncode == 0, evaluated.stderr
        saved = json.loads(next((folder / "evaluations").glob("*.json")).read_text())
        assert saved["return_mean"] == pytest.approx(summary["eval_return_mean"], rel=1e-4)
        returns.append(summary["eval_return_mean"])
    assert len(set(returns)) == 3  # three seeds, not three copies of one
    # A seed's checkpoint is a separate run's: resume= continues that seed alone, in its own folder.
    seed_run = folders[0]
    resumed = rlrun(f"resume={seed_run}", "total_steps=450")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from step 300" in resumed.stdout + resumed.stderr
    assert json.loads((seed_run / "summary.json").read_text())["total_steps"] == 450
    ppo = [json.loads(f.read_text()) for f in sweep_dir.glob("*algo=ppo*/summary.json")]
    assert len(ppo) == 3 and all(s["status"] == "completed" and "seed_group" not in s for s in ppo)


@pytest.mark.slow
def test_a_signal_stops_every_seed_of_a_group_with_a_checkpoint(tmp_path):
    """SIGTERM stops a batched group after the current step: every seed writes its checkpoint
    of that step and an interrupted summary, and the command exits with 128 + the signal."""
    sweep_dir = tmp_path / "sweep"
    process = start_rlrun(
        "-m",
        "experiment=smoke",
        "algo=td3",
        "env=Pendulum",
        "seed=0,1",
        "total_steps=100000",
        "checkpoint.every=300",
        "hydra/launcher=batched",
        f"hydra.sweep.dir={sweep_dir}",
    )
    first = sweep_dir / "0-algo=td3,checkpoint.every=300,env=Pendulum,experiment=smoke,seed=0,total_steps=100000"
    wait_for(checkpoint_file(first, 300), process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "rerun the sweep with hydra.sweep.dir=<its folder> to continue each seed" in stderr.strip().splitlines()[-1]
    summaries = [json.loads(path.read_text()) for path in sorted(sweep_dir.glob("*/summary.json"))]
    assert [s["seed"] for s in summaries] == [0, 1]
    step = summaries[0]["total_steps"]
    assert 300 <= step < 100000
    for summary, folder in zip(summaries, sorted(sweep_dir.glob("*seed=*"))):
        assert summary["status"] == "interrupted" and summary["signal"] == "SIGTERM" and summary["total_steps"] == step
        assert torch.load(checkpoint_file(folder, step), weights_only=True)["step"] == step


# Seed index 1's rewards turn NaN in the stacked update from update 350 on (step 550 with
# learning_starts=200): only that seed's losses and weights go non-finite.
SEED_1_NAN_AFTER_350_UPDATES = """
from rlrun.algos.sac import SAC
original, calls = SAC.update, [0]
def update(self, batch):
    calls[0] += 1
    if calls[0] > 350 and batch.rewards.dim() == 2 and batch.rewards.shape[0] == 2:  # while seed 1 is in the stack
        rewards = batch.rewards.clone()
        rewards[1] = float("nan")
        batch = batch._replace(rewards=rewards)
    return original(self, batch)
SAC.update = update
"""
GROUP = ("-m", "experiment=smoke", "algo=sac", "env=Pendulum", "seed=0,1", "total_steps=900", "threads=1")
# The process's CrashingPendulum steps, training and evaluation envs together: 1,000 by the end
# of step 300 (2 × 300 training steps and one 200-step evaluation episode per seed), so step 1,100
# is seed 1's, at step 350.
CRASH_AT = "1100"


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["environment", "divergence"])
def test_a_seed_that_fails_stops_alone_and_the_others_go_on(tmp_path, monkeypatch, fault):
    """Seed 1's environment fails, or seed 1 diverges: it stops with its own one-line reason,
    status and its good checkpoints, while seed 0 trains on to the end exactly as in a group
    where nothing failed, its last 300 steps alone; the sweep then exits 1 naming the failed job."""
    healthy, sweep_dir = tmp_path / "healthy", tmp_path / "sweep"
    args = [*GROUP, "hydra/launcher=batched"]
    if fault == "environment":
        args.append("env.id=tests.crashing_env:CrashingPendulum-v0")
    monkeypatch.setenv("RLRUN_TEST_CRASH_AT", "0")
    assert run_rlrun(*args, f"hydra.sweep.dir={healthy}").returncode == 0
    if fault == "environment":
        monkeypatch.setenv("RLRUN_TEST_CRASH_AT", CRASH_AT)
        result = run_rlrun(*args, f"hydra.sweep.dir={sweep_dir}")
        reason = "CrashingPendulum-v0 raised RuntimeError in step(): simulated crash at step 1100"
        status, last_good = "failed", 300
    else:
        result = run_rlrun(*args, f"hydra.sweep.dir={sweep_dir}", patch=SEED_1_NAN_AFTER_350_UPDATES)
        reason = "training diverged by step 600: losses/critic is NaN or infinite (a training metric)"
        status, last_good = "diverged", 300

    assert result.returncode == 1, result.stderr
    assert f"seed 1 stopped: {reason}" in result.stdout + result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("rlrun: job 1-") and f"seed=1,threads=1,total_steps=900 {status}: {reason}" in last_line
    (seed0,), (seed1,) = sweep_dir.glob("*,seed=0,*"), sweep_dir.glob("*,seed=1,*")
    failed = json.loads((seed1 / "summary.json").read_text())
    assert failed["status"] == status and reason in failed["error"] and failed["seed_group"] == [0, 1]
    assert sorted(p.name for p in (seed1 / "checkpoints").glob("step_*.pt")) == [f"step_{last_good:09d}.pt"]
    went_on = json.loads((seed0 / "summary.json").read_text())
    assert went_on["status"] == "completed" and went_on["total_steps"] == 900
    (reference,) = healthy.glob("*,seed=0,*")
    alone = torch.load(checkpoint_file(seed0, 900), weights_only=True)["agent"]
    together = torch.load(checkpoint_file(reference, 900), weights_only=True)["agent"]
    assert_states_close(alone, together)
    assert went_on["eval_return_mean"] == pytest.approx(json.loads((reference / "summary.json").read_text())["eval_return_mean"])


@pytest.mark.slow
def test_a_group_whose_buffers_do_not_fit_in_memory_is_refused_before_allocating(rlrun, tmp_path):
    """Two Pendulum seeds whose replay buffers would each take three times the machine's
    memory: refused in one line with the estimate, before any agent or buffer is made. (Each
    buffer's observations alone exceed the memory, so were the check missing, their allocation
    would fail at once rather than fill the machine.)"""
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        pytest.skip("no /proc/meminfo here")
    total = int(re.search(r"MemTotal:\s+(\d+) kB", meminfo.read_text())[1]) * 1024
    capacity = total // 12 + 1  # 3 float32 numbers an observation
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "experiment=smoke", "algo=sac", "env=Pendulum", "seed=0,1", "threads=1", "hydra/launcher=batched"]
    result = rlrun(*args, f"total_steps={capacity}", f"algo.buffer_size={capacity}", f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 1, result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert re.search(
        rf"failed: a batched group of 2 seeds needs about [\d.]+ GiB for its replay buffers \([\d.]+ GiB a seed: {capacity} "
        r"transitions\), more than the [\d.]+ GiB free on cpu; give the group fewer seeds or a smaller algo.buffer_size$",
        last_line,
    ), last_line
    for folder in sweep_dir.glob("*seed=*"):
        assert json.loads((folder / "summary.json").read_text())["status"] == "failed"
        assert not (folder / "checkpoints").exists()
