"""`rlrun export=<run folder> [which=...] format=onnx|torchscript`: the deterministic policy as
one self-contained file (raw observation in, environment action out; normalisation and action
rescaling inside), with a JSON file that describes its input and output."""

from __future__ import annotations

import copy
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlrun.config import ConfigError
from rlrun.core.folders import Content, check_writable, write_files
from rlrun.core.saved_run import SavedAgent, choose_checkpoint, is_run_folder, load_agent, parse_options

EXPORT_INSTALL = "python -m pip install -c constraints.txt -e '.[export]'"
FORMATS = {"onnx": ".onnx", "torchscript": ".ts.pt"}
EXPORT_OPTIONS = {
    "which": "last, best, a step number or a .pt path; default last",
    "format": "onnx or torchscript; default onnx",
    "out": "a folder that takes the run folder's place for what this writes (<out>/export/ instead of <run>/export/)",
}


def main(folder_text: str, args: list[str]) -> None:
    options = parse_options("export", args, EXPORT_OPTIONS)
    fmt = options.get("format") or "onnx"
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r} is not valid; choose one of: {', '.join(FORMATS)}")
    folder = Path(folder_text)
    if not folder.is_dir() or not is_run_folder(folder):
        raise ConfigError(
            f"export={folder_text} is not a run folder (no checkpoints/); give a run folder such as outputs/<date>/<time>"
        )
    if "out" in options and options["out"] is None:
        raise ConfigError("out= needs a folder, e.g. out=./exports")
    into = Path(str(options["out"])) if options.get("out") is not None else folder
    check_writable("out", into / "export", given=False)
    if fmt == "onnx":
        _import_onnx()
    checkpoint = choose_checkpoint("export", folder, options.get("which"))
    saved = load_agent(checkpoint, {}, "cpu")
    path, description = export_policy(saved, into / "export", fmt)
    print(f"exported {saved.plan.algo_name} on {saved.plan.run_config.env.id} ({checkpoint}) → {path} and {description}")


def export_policy(saved: SavedAgent, folder: Path, fmt: str) -> tuple[Path, Path]:
    """Write the policy of `saved` as `folder/policy-<checkpoint><suffix>` and its description
    `policy-<checkpoint>.<format>.json`; both through temporary files, moved into place together."""
    module = copy.deepcopy(saved.agent.policy_module()).cpu().eval().requires_grad_(False)
    obs_space, action_space = saved.plan.obs_space, saved.plan.action_space
    example = torch.as_tensor(np.stack([obs_space.sample() for _ in range(2)]))
    if example.dtype == torch.float64:
        example = example.float()
    # A policy that reads more than the observation (Decision Transformer's context) names its inputs.
    inputs = saved.agent.export_example(2) if hasattr(saved.agent, "export_example") else {"obs": example}
    stem = f"policy-{saved.checkpoint.stem}"
    path = folder / f"{stem}{FORMATS[fmt]}"
    policy: Content
    if fmt == "onnx":
        # The exporter reports every operator library it skips and its own deprecations.
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batch = torch.export.Dim("batch")
            onnx_program = torch.onnx.export(
                module,
                tuple(inputs.values()),
                input_names=list(inputs),
                output_names=["action"],
                dynamic_shapes=tuple({0: batch} for _ in inputs),
                dynamo=True,
                verbose=False,
            )
        policy = lambda temporary: onnx_program.save(str(temporary))
    else:
        # Into memory first: TorchScript's C++ file writer aborts the process when a write fails.
        buffer = io.BytesIO()
        torch.jit.save(torch.jit.trace(module, tuple(inputs.values())), buffer)
        policy = buffer.getvalue()
    description = folder / f"{stem}.{fmt}.json"  # one per format: exporting the other one keeps this
    info = {
        "format": fmt,
        "file": path.name,
        "algo": saved.plan.algo_name,
        "env_id": saved.plan.run_config.env.id,
        "checkpoint": str(saved.checkpoint),
        "step": saved.state["step"],
        **_describe_inputs(inputs),
        "output": {"name": "action", **_describe_actions(action_space)},
        "note": "deterministic policy: observation normalisation and action rescaling are inside the file",
    }
    write_files({path: policy, description: (json.dumps(info, indent=2) + "\n").encode()}, "the exported policy")
    return path, description


def _describe_inputs(inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
    """ "input": the observation batch; a policy with several inputs lists them under "inputs"."""
    described = [
        {"name": name, "shape": ["batch", *value.shape[1:]], "dtype": str(value.dtype).removeprefix("torch.")}
        for name, value in inputs.items()
    ]
    return {"input": described[0]} if len(described) == 1 else {"inputs": described}


def _describe_actions(space: gym.Space) -> dict[str, Any]:
    if isinstance(space, gym.spaces.Discrete):
        return {"shape": ["batch"], "dtype": "int64", "n": int(space.n)}
    return {"shape": ["batch", *space.shape], "dtype": "float32", "low": space.low.tolist(), "high": space.high.tolist()}


def _import_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ConfigError(f"format=onnx needs the export extra ({error.name} is missing): {EXPORT_INSTALL}") from None
