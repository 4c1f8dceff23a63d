"""Settings of rlrun's batched launcher (configs/hydra/launcher/batched.yaml)."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class RlrunBatchedLauncherConf:
    _target_: str = "hydra_plugins.rlrun_batched_launcher.batched_launcher.RlrunBatchedLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="rlrun_batched", node=RlrunBatchedLauncherConf, provider="rlrun")
