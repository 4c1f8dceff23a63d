"""rlrun's batched launcher for Hydra: `rlrun -m ... seed=0,1,2,3 hydra/launcher=batched` trains
the jobs of a sweep that differ only in their seed as one batched group in this process
(docs/batched-seeds.md); other jobs run one after another, as with Hydra's basic launcher.
Only config.py and batched_launcher.py are imported when Hydra scans for plugins; rlrun is
imported when jobs launch.
"""
