"""rlrun's Ray launcher for Hydra: `rlrun -m hydra/launcher=ray ...` runs each job of a sweep
as a task on a running Ray cluster (`ray start --head` first).

A thin launcher, not a scheduler: ray.init(address=...), one ray.remote task per job with
Hydra's own run_job inside, results gathered with ray.get. Written because hydra-ray-launcher
1.2 requires cloudpickle<3 while joblib (hydra-joblib-launcher, in rlrun's base install) needs
cloudpickle>=3, and it brings boto3 and ray[default] for its AWS launcher. Only config.py and
ray_launcher.py are imported when Hydra scans for plugins; ray is imported when jobs launch.
"""
