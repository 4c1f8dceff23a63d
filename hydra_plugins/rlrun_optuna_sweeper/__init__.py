"""rlrun's Optuna sweeper for Hydra: `rlrun -m hydra/sweeper=rlrun_optuna algo=sac env=Pendulum`.

Hyperparameter search with pruning on Optuna's ask-and-tell API; see config.py for its
settings and docs/sweeps.md ("Optuna search"). Hydra finds it through the `hydra_plugins`
namespace package. Only config.py and optuna_sweeper.py are imported when Hydra scans for
plugins (they need nothing beyond Hydra); optuna is imported when a sweep starts.
"""
