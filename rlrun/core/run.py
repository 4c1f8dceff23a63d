"""A running run: what an algorithm's training loop talks to (rlrun.protocols.RunContext).

The Run owns the environments it hands out, the clock, logging, evaluation, checkpoints,
the divergence guard, the stop requested by a signal and the Optuna trial's reports; the
algorithm owns its loop (see rlrun/protocols.py for the handshake).
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlrun.blocks.buffers import ReplayBufferBase
from rlrun.config import RunError
from rlrun.core.checkpoint import BEST, Checkpoint, Checkpointer, RunState, load, restore_rng_state, rng_state
from rlrun.core.folders import WriteFailed, describe_write_error
from rlrun.core.logger import RunLogger, log
from rlrun.core.plan import Plan
from rlrun.envs.datasets import Transitions, load_transitions
from rlrun.envs.episodes import EVAL_SEED_OFFSET, evaluate
from rlrun.envs.make import env_state, make_env, make_vector_env, restore_env
from rlrun.envs.video import IncompleteVideo, read_frames, record_episodes, video_fps
from rlrun.protocols import Algorithm, Stateful


class StopRun(Exception):
    """Raised inside a training loop to end the run early but cleanly: the run's summary gets
    `status` (e.g. "pruned" for an Optuna trial the study stopped) and the job does not fail."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


class DivergenceError(RunError):
    """A NaN or infinity in a metric, parameter or optimiser state; the message names it."""


class Every:
    """A schedule: due when a step crosses a multiple of `every`. Steps may jump (a vector
    step adds num_envs), so it compares the multiples before and after, not `step % every`."""

    def __init__(self, every: int) -> None:
        self.every = every

    def __call__(self, previous: int, step: int) -> bool:
        return step // self.every > previous // self.every


class Clock:
    """A run's wall time, counted across resumes, and the part of it spent paused
    (evaluating, checkpointing), which training steps/s leave out."""

    def __init__(self, step: int, elapsed: float = 0.0, paused: float = 0.0) -> None:
        self._start = time.perf_counter() - elapsed
        self.paused = paused
        self._mark_time, self._mark_step, self._paused_since_mark = time.perf_counter(), step, 0.0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    @contextmanager
    def pause(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.paused += elapsed
            self._paused_since_mark += elapsed

    def steps_per_second_since_mark(self, step: int) -> float:
        """Training steps/s since the previous call (or the start), pauses left out."""
        now = time.perf_counter()
        sps = (step - self._mark_step) / max(now - self._mark_time - self._paused_since_mark, 1e-9)
        self._mark_time, self._mark_step, self._paused_since_mark = now, step, 0.0
        return sps

    def steps_per_second(self, step: int) -> float:
        """Training steps/s over the whole run, pauses left out."""
        return step / max(self.elapsed - self.paused, 1e-9)


class Run:
    """One run in its folder: see the module docstring and rlrun.protocols.RunContext."""

    def __init__(self, plan: Plan, run_dir: Path, resumed: Checkpoint | None = None) -> None:
        settings = plan.run_config
        self.settings = settings
        self.run_dir = run_dir
        self.seed = settings.seed
        self.total_steps = settings.total_steps
        self.device = plan.device
        self.resumed = resumed
        self.step = resumed["step"] if resumed else 0
        self.eval_env = make_env(settings.env, self.seed + EVAL_SEED_OFFSET, training=False)
        hyperparameters = flatten_config(plan.config)
        mirror = None
        if settings.log.wandb.project is not None:
            from rlrun.core.tracking import WandbMirror  # imports wandb, an optional extra

            mirror = WandbMirror(settings.log.wandb, run_dir, hyperparameters)
        self.logger = RunLogger(run_dir, settings.total_steps, settings.progress, start_step=self.step, mirror=mirror)
        if not self.logger.reused_folder:
            self.logger.hyperparameters(hyperparameters, ["eval/return_mean"])
        self.checkpointer = Checkpointer(run_dir, plan.algo_name, settings.env.id, plan.config, settings.checkpoint.keep)
        self.log_due, self.eval_due = Every(settings.log.every), Every(settings.eval.every)
        self.checkpoint_due = Every(settings.checkpoint.every)
        self.video_due = Every(settings.video.every) if settings.video.every is not None else None
        clock = resumed["run"]["clock"] if resumed else {"elapsed": 0.0, "paused": 0.0}
        self.clock = Clock(self.step, clock["elapsed"], clock["paused"])
        last_eval = resumed["run"]["last_eval"] if resumed else None
        self.last_eval: np.ndarray | None = None if last_eval is None else last_eval.numpy()
        self.last_checkpoint: Path | None = plan.resume.checkpoint if plan.resume else None
        self.best_eval: tuple[float, int] | None = self._best_so_far()  # (mean return, step) of best.pt
        self._checkpointed_step = self.step if resumed else None
        self.metrics: dict[str, Any] = {}  # the latest training metrics (run.record)
        self.stop_signal: str | None = None  # a signal asked to stop after this step (stopping_on_signals)
        self.checkpoint_signal: str | None = None  # a signal asked for a checkpoint after this step
        self.requeue: Callable[[int, Any], None] | None = None  # submitit's SIGUSR2 handler, if any
        self.training_env: gym.Env | gym.vector.VectorEnv | None = None
        self._agent: Algorithm | None = None
        self._loop: dict[str, Stateful] = {}
        self.dataset_info = plan.dataset  # dataset=: an offline run, with no training environment
        # init=: the pre-trained policy is evaluated at step 0, before any online step.
        self.evaluate_at_start = plan.run_config.init is not None
        self.trial = None
        if settings.trial is not None:
            from rlrun.core.tuning import TrialReporter  # imports optuna, an optional extra

            self.trial = TrialReporter(settings.trial)

    # ----- the handshake (rlrun.protocols.RunContext) ---------------------------------------
    def make_env(self) -> gym.Env:
        """The training environment, for algorithms that step one at a time."""
        if self.settings.env.backend != "gymnasium":  # plan.validate lets only vector algorithms through
            raise RunError(f"env.backend={self.settings.env.backend} makes vector environments only; use env.backend=gymnasium")
        self.training_env = make_env(self.settings.env, self.seed, training=True)
        return self.training_env

    def make_vector_env(
        self,
        num_envs: int,
        asynchronous: bool,
        autoreset_mode: gym.vector.AutoresetMode = gym.vector.AutoresetMode.NEXT_STEP,
    ) -> gym.vector.VectorEnv:
        """`num_envs` training environments stepped together, seeded seed, seed+1, ..."""
        self.training_env = make_vector_env(
            self.settings.env, self.seed, num_envs, asynchronous, training=True, autoreset_mode=autoreset_mode
        )
        return self.training_env

    def dataset(self) -> Transitions:
        """The transitions of the run's dataset (dataset=), as host arrays, for an offline loop."""
        if self.dataset_info is None:
            raise RuntimeError("this run has no dataset: an offline algorithm's run needs dataset=")
        info = self.dataset_info
        log.info("dataset %s: %d episodes, %d transitions (%s)", info.dataset_id, info.episodes, info.steps, info.data_path)
        return load_transitions(info)

    def start(self, agent: Algorithm, loop: Mapping[str, Stateful]) -> tuple[np.ndarray | None, int]:
        """Begin training, or continue it from the checkpoint this run resumes.

        `loop` holds the training loop's own stateful parts (a replay buffer, a rollout), by
        name; checkpoints save them with the agent. Returns (observation, step): for a new run
        the training env's first, seeded observation and step 0; for a resumed one the
        observation and step at the checkpoint, with agent, loop parts, env, every RNG and
        the latest metrics restored. An offline run (dataset=) has no training env: its
        observation is None.
        """
        if self.training_env is None and self.dataset_info is None:
            raise RuntimeError("make the training env with run.make_env() or run.make_vector_env() before run.start()")
        self._agent = agent
        # checkpoint.replay_buffer=false leaves replay buffers out (then a resumed run refills its own).
        keep_buffers = self.settings.checkpoint.replay_buffer
        self._loop = {name: part for name, part in loop.items() if keep_buffers or not isinstance(part, ReplayBufferBase)}
        if self.resumed is None:
            obs = None if self.training_env is None else self.training_env.reset(seed=self.seed)[0]
            if self.evaluate_at_start:
                self.evaluate(0)
            return obs, 0
        state = self.resumed
        agent.load_state_dict(state["agent"])
        for name, part in self._loop.items():
            if name in state["loop"]:
                part.load_state_dict(state["loop"][name])
        obs = None if self.training_env is None else restore_env(self.training_env, state["run"]["env"])
        restore_rng_state(state["run"]["rng"])
        self.metrics = dict(state["run"]["metrics"] or {})
        self.resumed = None  # free the checkpoint's memory (a replay buffer can be large)
        log.info("resumed from step %d (%s)", self.step, self.last_checkpoint)
        return obs, self.step

    def record(self, metrics: Mapping[str, Any]) -> None:
        """Keep the latest training metrics; they are logged and checked every log.every steps."""
        self.metrics.update(metrics)

    def episode_end(self, step: int, episode_return: float, episode_length: int) -> None:
        """Record a finished training episode."""
        self.logger.episode(step, float(episode_return), int(episode_length))

    def after_step(self, step: int) -> None:
        """Called after each environment step (or vector step: `step` may jump by num_envs);
        logs, evaluates and checkpoints when `step` crosses each schedule's next multiple.

        Also where a run stops: on a non-finite metric or parameter (RunError), and after a
        stop signal, with a checkpoint (StopRun "interrupted")."""
        previous, self.step = self.step, step
        last = step >= self.total_steps
        if self.log_due(previous, step):
            self._check_finite(step)
            sps = self.clock.steps_per_second_since_mark(step)
            self.logger.scalars(step, {**self.metrics, "perf/sps": sps})
            self.logger.progress(step, sps)
        if self.eval_due(previous, step) or last:
            self.evaluate(step)
        if self.video_due is not None and self.video_due(previous, step):
            self.record_video(step)
        if self.checkpoint_due(previous, step) or last:
            self.checkpoint(step)
        if self.checkpoint_signal is not None:
            received, self.checkpoint_signal = self.checkpoint_signal, None
            if self._checkpointed_step != step:
                self.checkpoint(step)
            log.warning("%s: wrote %s; training goes on", received, self.last_checkpoint)
        if self.stop_signal is not None:
            if self._checkpointed_step != step:
                self.checkpoint(step)
            raise StopRun("interrupted", f"stopped by {self.stop_signal} at step {step}")

    @contextmanager
    def stopping_on_signals(self, group: Sequence[Run] = ()) -> Iterator[None]:
        """SIGINT, SIGTERM and SIGHUP (a closed terminal or a dropped SSH session) ask the run to
        stop after the current step with a checkpoint (see Run.after_step); a second one stops it
        at once. SIGUSR1, and SIGUSR2 outside a scheduler, write a checkpoint after the current
        step and training goes on. Under submitit (hydra/launcher=slurm), whose handler for SIGUSR2
        (Slurm's time-limit and preemption warning) requeues the job, SIGUSR2 stops the run like
        SIGTERM, and requeue_if_asked calls that handler once the checkpoint and summary are
        written. The other runs of a batched group (`group`) stop and checkpoint with this one."""
        runs = [self, *group]

        def request_stop(signum: int, frame: Any) -> None:
            if self.stop_signal is not None:
                raise KeyboardInterrupt
            for run in runs:
                run.stop_signal = signal.Signals(signum).name
            log.warning("%s: stopping after this step with a checkpoint (Ctrl-C again stops at once)", self.stop_signal)

        def request_checkpoint(signum: int, frame: Any) -> None:
            for run in runs:
                run.checkpoint_signal = signal.Signals(signum).name

        # A signal ignored by whoever started us (nohup, a shell's background job) stays ignored.
        stopping = [sig for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if signal.getsignal(sig) is not signal.SIG_IGN]
        checkpointing = [sig for sig in (signal.SIGUSR1, signal.SIGUSR2) if signal.getsignal(sig) is signal.SIG_DFL]
        if callable(requeue := signal.getsignal(signal.SIGUSR2)):
            stopping.append(signal.SIGUSR2)
            self.requeue = requeue
        try:
            previous = {sig: signal.signal(sig, request_stop) for sig in stopping}
            previous.update({sig: signal.signal(sig, request_checkpoint) for sig in checkpointing})
        except ValueError:  # not the main thread (some launchers): keep the default handlers
            previous = {}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def requeue_if_asked(self) -> None:
        """Under submitit, after a SIGUSR2 stop: have submitit requeue the job, which resumes
        from the checkpoint just written."""
        if self.stop_signal == "SIGUSR2" and self.requeue is not None:
            self.requeue(signal.SIGUSR2, None)

    # ----- the run's own work ---------------------------------------------------------------
    def evaluate(self, step: int) -> None:
        """eval.episodes deterministic episodes on the evaluation env, logged; an Optuna
        trial's pruner may stop the run here (StopRun "pruned")."""
        deterministic = self.settings.eval.deterministic
        training_seconds = self.clock.elapsed - self.clock.paused
        with self.clock.pause():
            returns = evaluate(
                lambda obs: self._agent.act(obs, deterministic=deterministic),
                self.eval_env,
                self.settings.eval.episodes,
                self.seed + EVAL_SEED_OFFSET,
                agent=self._agent,
            ).returns
            self.last_eval = returns
            mean = float(returns.mean())
            if math.isfinite(mean) and (self.best_eval is None or mean > self.best_eval[0]):
                self.checkpointer.save_best(step, self._agent.state_dict(), self._run_state())
                self.best_eval = (mean, step)
        # perf/train_seconds: training time so far, evaluation and checkpoints left out (time to a return).
        scalars = {"eval/return_mean": returns.mean(), "eval/return_std": returns.std(), "perf/train_seconds": training_seconds}
        if self.dataset_info is not None and (score := self.dataset_info.normalized_score(float(returns.mean()))) is not None:
            scalars["eval/normalized_score"] = score
        self.logger.scalars(step, scalars)
        log.info("step %d: eval return %.1f ± %.1f", step, returns.mean(), returns.std())
        if self.trial is not None and (pruned := self.trial.report(step, float(returns.mean()))) is not None:
            raise StopRun("pruned", pruned)

    def record_video(self, step: int) -> None:
        """One deterministic evaluation episode on an environment of its own, written to
        videos/step-<step>/episode-0.mp4 and to TensorBoard. Deterministic acting draws no
        random numbers, so training goes on exactly as without the video."""
        with self.clock.pause():
            folder = self.run_dir / "videos" / f"step-{step}"
            try:
                files, result = record_episodes(
                    self.settings.env,
                    lambda obs: self._agent.act(obs, deterministic=True),
                    folder,
                    1,
                    self.seed + EVAL_SEED_OFFSET,
                    agent=self._agent,
                )
            except IncompleteVideo as error:
                reason = describe_write_error(error, error.path)
                error.path.unlink(missing_ok=True)
                raise WriteFailed(f"cannot write the video {error.final}: {reason}") from error
            self.logger.video(step, "eval/video", read_frames(files[0]), video_fps(self.settings.env, self.eval_env))
        log.info("step %d: video %s (return %.1f)", step, files[0], result.returns[0])

    def checkpoint(self, step: int) -> None:
        """Save everything needed to continue from `step`, unless training has diverged."""
        self._check_finite(step)
        with self.clock.pause():
            self.logger.flush()  # what is logged up to here survives a crash right after
            run_state = self._run_state()
            agent_state = self._agent.state_dict()
            loop_state = {name: part.state_dict() for name, part in self._loop.items()}
            self.last_checkpoint = self.checkpointer.save(step, agent_state, loop_state, run_state)
            self._checkpointed_step = step

    def _run_state(self) -> RunState:
        return RunState(
            env=None if self.training_env is None else env_state(self.training_env),
            rng=rng_state(),
            metrics=dict(self.metrics) or None,
            last_eval=None if self.last_eval is None else torch.from_numpy(self.last_eval),
            clock={"elapsed": self.clock.elapsed, "paused": self.clock.paused},
        )

    def _best_so_far(self) -> tuple[float, int] | None:
        """(mean return, step) recorded in an existing best.pt (a resumed run), else None."""
        path = self.run_dir / "checkpoints" / BEST
        if not path.exists():
            return None
        best = load(path, mmap=True)
        returns = best["run"]["last_eval"]
        return (float(returns.mean()), best["step"]) if returns is not None else None

    def _check_finite(self, step: int) -> None:
        """Raise RunError naming the first NaN/inf among the latest metrics, the networks and the
        optimiser state (which turns non-finite once a gradient was). One host sync."""
        bad = first_nonfinite({"metrics": self.metrics, "agent": self._agent.state_dict()})
        if bad is None:
            return
        what = (
            "a training metric"
            if bad.startswith("metrics.")
            else ("optimiser state: a gradient was not finite" if "optimizer" in bad else "a network parameter")
        )
        kept = (
            f"the last good checkpoint {self.last_checkpoint} is intact"
            if self.last_checkpoint
            else "no checkpoint had been written"
        )
        raise DivergenceError(f"training diverged by step {step}: {bad.split('.', 1)[1]} is NaN or infinite ({what}); {kept}")

    def summary(self, status: str) -> dict[str, Any]:
        evaluated = self.last_eval is not None
        offline = {}
        if self.dataset_info is not None:
            score = self.dataset_info.normalized_score(float(self.last_eval.mean())) if evaluated else None
            offline = {"dataset": self.dataset_info.source, "eval_normalized_score": score}
        return {
            "status": status,
            "total_steps": self.step,
            "eval_return_mean": float(self.last_eval.mean()) if evaluated else None,
            "eval_return_std": float(self.last_eval.std()) if evaluated else None,
            "wall_time_s": round(self.clock.elapsed, 3),
            "sps": round(self.clock.steps_per_second(self.step), 2),
            "device": str(self.device),
            "torch_threads": torch.get_num_threads(),
            "checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
            "best_eval_return_mean": self.best_eval[0] if self.best_eval else None,
            "best_step": self.best_eval[1] if self.best_eval else None,
            **offline,
        }

    def close(self) -> None:
        envs = [self.eval_env] + ([self.training_env] if self.training_env is not None else [])
        for env in envs:
            env.close()
        self.logger.close()


def flatten_config(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys (algo.lr), as hyperparameter tables show them."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def first_nonfinite(tree: Any, name: str = "") -> str | None:
    """The dotted name of the first float tensor or float in `tree` (nested dicts, lists)
    holding a NaN or an infinity; None if all are finite."""
    leaves: list[tuple[str, Any]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f"{path}.{i}")
        elif (isinstance(node, torch.Tensor) and node.is_floating_point()) or isinstance(node, float):
            leaves.append((path, node))

    walk(tree, name)
    if not leaves:
        return None
    finite = torch.stack(
        [torch.isfinite(v).all().cpu() if isinstance(v, torch.Tensor) else torch.tensor(math.isfinite(v)) for _, v in leaves]
    ).tolist()
    return next((path for (path, _), ok in zip(leaves, finite) if not ok), None)
