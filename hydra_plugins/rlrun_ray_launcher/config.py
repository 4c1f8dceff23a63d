"""Settings of rlrun's Ray launcher (configs/hydra/launcher/ray.yaml sets rlrun's defaults)."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class RlrunRayLauncherConf:
    _target_: str = "hydra_plugins.rlrun_ray_launcher.ray_launcher.RlrunRayLauncher"
    # The cluster to join: "auto" (RAY_ADDRESS, or the cluster `ray start` runs on this machine),
    # or host:port of its head (GCS port, 6379 by default); null starts a private Ray for this sweep.
    address: str | None = "auto"
    # CPUs each job takes; torch uses that many threads (unless the job sets threads=).
    num_cpus: float = 1
    # GPUs each job takes (fractions share a GPU).
    num_gpus: float = 0
    # Reruns of a job whose worker or node died; a rerun continues from the job's latest checkpoint.
    max_retries: int = 3
    # Further ray.remote options for each job, e.g. {memory: 4000000000, resources: {...}}.
    remote: dict[str, Any] = field(default_factory=dict)
    # Further ray.init keyword arguments, e.g. {runtime_env: {...}}.
    init: dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/launcher", name="rlrun_ray", node=RlrunRayLauncherConf, provider="rlrun")
