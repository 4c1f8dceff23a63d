"""Jobs as Ray tasks: each job's config is composed here (so composition errors show at once),
shipped with Hydra's global state to a task, and run there by Hydra's own run_job."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

INSTALL_COMMAND = "python -m pip install -c constraints.txt -e '.[ray]'"


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    try:
        import ray
    except ImportError:
        print(
            f"rlrun: error: hydra/launcher=ray needs ray, which is not installed; install it with: {INSTALL_COMMAND}",
            file=sys.stderr,
        )
        sys.exit(2)
    setup_globals()
    config, context = launcher.config, launcher.hydra_context
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    settings = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in launcher.settings.items()}
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if not ray.is_initialized():
        address = settings["address"]
        try:
            ray.init(address=address, **settings["init"])
        except ConnectionError as error:
            print(
                f"rlrun: error: no Ray cluster at hydra.launcher.address={address} ({error}); start one with "
                "`ray start --head`, or set hydra.launcher.address=null for a private Ray on this machine",
                file=sys.stderr,
            )
            sys.exit(1)
    options = {"num_cpus": settings["num_cpus"], "num_gpus": settings["num_gpus"], "max_retries": settings["max_retries"]}
    task = ray.remote(_run_job).options(**options, **settings["remote"])
    log.info(
        "Ray launcher: %d jobs on %s, sweep output dir: %s", len(job_overrides), ray.get_runtime_context().gcs_address, sweep_dir
    )
    refs = []
    for i, overrides in enumerate(job_overrides):
        idx = initial_job_idx + i
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        sweep_config = context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.num = idx
        refs.append(
            task.remote(context, sweep_config, launcher.task_function, Singleton.get_state(), os.getcwd(), settings["num_cpus"])
        )
    return ray.get(refs)


def _run_job(
    context: HydraContext,
    sweep_config: DictConfig,
    task_function: TaskFunction,
    singleton_state: dict,
    cwd: str,
    num_cpus: float,
) -> JobReturn:
    """One job inside a Ray worker. It works in the driver's directory when this node has it (one
    machine, or a shared file system), so that relative paths such as hydra.sweep.dir mean the same.
    torch gets one thread per CPU the job holds (a job's `threads=` still decides)."""
    import ray
    import torch

    import rlrun.commands.sweep  # noqa: F401  the resolver that names the job's folder (hydra.sweep.subdir)

    torch.set_num_threads(max(1, int(num_cpus)))  # a reused worker may have run a job of another size
    setup_globals()
    Singleton.set_state(singleton_state)
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = ray.get_runtime_context().get_task_id()
    HydraConfig.instance().set_config(sweep_config)
    previous = os.getcwd()
    if os.path.isdir(cwd):
        os.chdir(cwd)
    try:
        return run_job(
            hydra_context=context,
            task_function=task_function,
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    finally:
        os.chdir(previous)
