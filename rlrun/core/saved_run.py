"""A run folder read back: which checkpoint to use, and the agent it holds, rebuilt with the
run's own composed config (normalisation statistics, Atari preprocessing and action bounds
included). Shared by `rlrun evaluate=` and `rlrun export=`."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rlrun.config import ConfigError
from rlrun.core.checkpoint import BEST, Checkpoint, load
from rlrun.core.finetune import FineTuned
from rlrun.core.folders import WriteFailed, describe_write_error, write_files
from rlrun.core.plan import Plan, validate
from rlrun.envs.make import check_stored_wrappers
from rlrun.protocols import Algorithm


@dataclass(frozen=True)
class SavedAgent:
    plan: Plan  # the run's config, with the command's overrides applied
    agent: Algorithm
    checkpoint: Path
    state: Checkpoint


def parse_options(command: str, args: list[str], allowed: dict[str, str]) -> dict[str, Any]:
    """`key=value` arguments of `rlrun <command>=...` as values (YAML-parsed); `allowed` maps
    each accepted key to what it means, for the error that names them."""
    options: dict[str, Any] = {}
    for arg in args:
        key, separator, text = arg.partition("=")
        if not separator or key not in allowed:
            accepted = "; ".join(f"{name}= ({meaning})" for name, meaning in allowed.items())
            raise ConfigError(f"{command}= does not take {arg!r}; it takes: {accepted}")
        try:
            options[key] = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            options[key] = text
    return options


def is_run_folder(folder: Path) -> bool:
    return (folder / "checkpoints").is_dir() or (folder / ".hydra" / "config.yaml").is_file()


def job_folders(folder: Path) -> list[Path]:
    """The run folders of a multirun (sweep) folder, in job order."""
    jobs = [path.parent.parent for path in folder.glob("*/.hydra/overrides.yaml")]

    def job_number(path: Path) -> tuple[int, str]:
        match = re.match(r"(\d+)", path.name)
        return (int(match.group(1)) if match else 1 << 62, path.name)

    return sorted(jobs, key=job_number)


def choose_checkpoint(command: str, folder: Path, which: Any) -> Path:
    """The checkpoint `which` names in the run folder: last (the newest step_*.pt), best
    (best.pt), a step number, or a path to a .pt file."""
    directory = folder / "checkpoints"
    steps = sorted(directory.glob("step_*.pt"), key=lambda path: int(path.stem.split("_")[1]))
    if which in (None, "last"):
        if not steps:
            raise ConfigError(
                f"{command}={folder} has no checkpoint (checkpoints/step_*.pt is written every checkpoint.every steps "
                "and at the end); train or resume it first"
            )
        return steps[-1]
    if which == "best":
        best = directory / BEST
        if not best.is_file():
            raise ConfigError(
                f"{command}={folder} has no best checkpoint yet (checkpoints/{BEST} is written at each evaluation that "
                "beats the earlier ones); use which=last"
            )
        return best
    if isinstance(which, int) and not isinstance(which, bool):
        for path in steps:
            if int(path.stem.split("_")[1]) == which:
                return path
        kept = ", ".join(path.stem.split("_")[1].lstrip("0") or "0" for path in steps) or "none"
        raise ConfigError(f"{command}={folder} has no checkpoint at step {which}; steps kept: {kept}")
    path = Path(str(which))
    if path.suffix == ".pt":
        if not path.is_file():
            raise ConfigError(f"which={which}: no such checkpoint file")
        return path
    raise ConfigError(f"which={which!r} is not valid; choose last, best, a step number or a path to a .pt file")


def load_agent(path: Path, overrides: dict[str, Any], device: str) -> SavedAgent:
    """The agent saved in checkpoint `path`, on `device`, with the plan of the run that wrote it
    (`overrides` set dotted keys of its config, e.g. {"eval.episodes": 5})."""
    state = load(path)  # weights_only=True: no code from the file runs
    config = copy.deepcopy(state["config"])
    env = config.get("env") if isinstance(config, dict) else None
    if not isinstance(env, dict):
        raise ConfigError(f"checkpoint {path} is damaged: its config has no env settings")
    check_stored_wrappers(env.get("wrappers", []), f"checkpoint {path}")
    config["device"] = device
    config.setdefault("video", {})["every"] = None  # the run's own video schedule is not this command's
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    plan = validate(OmegaConf.create(config))
    agent = plan.algo_class(plan.algo_config, plan.obs_space, plan.action_space, plan.device, plan.run_config.seed)
    if plan.run_config.init is not None:  # started from an offline run: its statistics are in the checkpoint
        agent = FineTuned(agent, plan.algo_name, plan.obs_space, plan.run_config.finetune, None)
    try:
        agent.load_state_dict(state["agent"])
    except (KeyError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0]
        raise ConfigError(f"checkpoint {path} does not fit algo={plan.algo_name} as configured ({reason})") from None
    return SavedAgent(plan, agent, path, state)


def write_new_file(folder: Path, stem: str, suffix: str, data: bytes, what: str) -> Path:
    """Write `data` to `folder/<stem><suffix>`, or `<stem>-2<suffix>`, ...: a name that nothing
    has yet, and return it. The name is claimed first (also against a command running beside
    this one), then written whole through a temporary file (write_files); a write that fails
    gives the name back, so no empty file stays behind."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WriteFailed(f"cannot write {what} in {folder}: {describe_write_error(error)}") from error
    for n in range(1, 1_000_000):
        path = folder / (f"{stem}{suffix}" if n == 1 else f"{stem}-{n}{suffix}")
        try:
            path.touch(exist_ok=False)
        except FileExistsError:
            continue
        except OSError as error:
            raise WriteFailed(f"cannot write {what} {path}: {describe_write_error(error)}") from error
        try:
            write_files({path: data}, what)
        except WriteFailed:
            path.unlink(missing_ok=True)
            raise
        return path
    raise ConfigError(f"{folder} holds too many files named {stem}-*{suffix}")


def read_stored_yaml(path: Path) -> Any:
    """A YAML file of a run folder (.hydra/config.yaml, overrides.yaml, hydra.yaml) as plain
    values. It is read with OmegaConf's loader, which is yaml's SafeLoader: a tag that would
    build a Python object (`!!python/object/apply:os.system`) is refused before anything is
    built. ConfigError naming the file, for that and for a damaged file."""
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except yaml.constructor.ConstructorError as error:
        tag = re.search(r"for the tag '([^']*)'", str(error))
        if tag is None:  # a duplicate key, say
            raise ConfigError(f"{path} is damaged ({_first_line(str(error.problem or error))})") from None
        named = tag.group(1).replace("tag:yaml.org,2002:", "!!")
        raise ConfigError(
            f"{path} holds the YAML tag {named}; rlrun reads only plain values from a run folder (a tag can build a "
            "Python object and run code): refused"
        ) from None
    except yaml.MarkedYAMLError as error:
        where = f" at line {error.problem_mark.line + 1}" if error.problem_mark else ""
        raise ConfigError(f"{path} is damaged (not YAML: {error.problem or error.context}{where})") from None
    except (OSError, ValueError, yaml.YAMLError, OmegaConfBaseException) as error:  # ValueError: not UTF-8
        reason = "not UTF-8 text" if isinstance(error, UnicodeDecodeError) else _first_line(str(error))
        raise ConfigError(f"{path} is damaged ({reason or type(error).__name__})") from None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def unused_path(parent: Path, name: str) -> Path:
    """`parent/<name>`, or `<name>-2`, ...: the first of these that does not exist yet."""
    for n in range(1, 1_000_000):
        path = parent / (name if n == 1 else f"{name}-{n}")
        if not path.exists():
            return path
    raise ConfigError(f"{parent} holds too many entries named {name}-*")
