"""An algorithm's checkpoint state, declared once: the attributes it saves, by name, and the
shared code that saves and restores them.

    class SAC(Checkpointed):
        checkpointed = ("actor", "critic", "target_critic", "log_alpha", "actor_optimizer", ...)

Each attribute is saved by its kind: networks, optimisers and anything else with a
`state_dict` through it; tensors as copies; NumPy arrays and random generators as tensors
and plain values (a checkpoint holds no pickled objects, so it loads with
`torch.load(weights_only=True)`); numbers as they are. A key may name a nested attribute
(`{"return_rms": "reward_scaler.rms"}`), so that files keep their layout when code moves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from rlrun.config import ConfigError


class Checkpointed:
    """state_dict and load_state_dict for an algorithm from its `checkpointed` declaration:
    attribute names, or a mapping of checkpoint keys to (dotted) attribute paths."""

    checkpointed: ClassVar[tuple[str, ...] | Mapping[str, str]] = ()
    device: torch.device

    def _checkpointed_items(self) -> list[tuple[str, str]]:
        declared = self.checkpointed
        return list(declared.items()) if isinstance(declared, Mapping) else [(name, name) for name in declared]

    def state_dict(self) -> dict[str, Any]:
        return {key: _saved(attribute_at(self, path)) for key, path in self._checkpointed_items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = [key for key, _ in self._checkpointed_items() if key not in state]
        if missing:
            raise ConfigError(
                f"the checkpoint's {type(self).__name__} state lacks {', '.join(missing)}: it was written by another "
                "version or algorithm; continue from a checkpoint of this algorithm, or start a new run folder"
            )
        for key, path in self._checkpointed_items():
            parent_path, _, name = path.rpartition(".")
            parent = attribute_at(self, parent_path) if parent_path else self
            setattr(parent, name, _restored(getattr(parent, name), state[key], self.device))


def attribute_at(owner: object, path: str) -> Any:
    """`owner.a.b` for the dotted path "a.b"."""
    for name in path.split("."):
        owner = getattr(owner, name)
    return owner


def _saved(value: Any) -> Any:
    if hasattr(value, "state_dict"):
        return value.state_dict()
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.random.Generator):
        return value.bit_generator.state
    if isinstance(value, Mapping):
        return {key: _saved(item) for key, item in value.items()}
    return value


def _restored(current: Any, saved: Any, device: torch.device) -> Any:
    """The attribute's new value: `current` restored in place where others hold it (networks,
    optimisers, parameters an optimiser steps), else a new value on `device`."""
    if hasattr(current, "load_state_dict"):
        current.load_state_dict(saved)
        return current
    if isinstance(current, torch.nn.Parameter) or (isinstance(current, torch.Tensor) and current.requires_grad):
        with torch.no_grad():  # a learnt tensor (SAC's log α): its optimiser holds this very tensor
            current.copy_(saved)
        return current
    if isinstance(current, torch.Tensor) or (isinstance(saved, torch.Tensor) and not isinstance(current, np.ndarray)):
        return saved.to(device)
    if isinstance(current, np.ndarray):
        return saved.cpu().numpy().astype(current.dtype)
    if isinstance(current, np.random.Generator):
        current.bit_generator.state = saved
        return current
    if isinstance(saved, Mapping):
        return {key: item.to(device) if isinstance(item, torch.Tensor) else item for key, item in saved.items()}
    return saved
