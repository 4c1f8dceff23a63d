"""Agents of several seeds stacked along a leading seed dimension (a batched group,
docs/batched-seeds.md), and the way between a stacked agent's state and each seed's own.

An algorithm that batches builds its stacked form when given a `SeedStack`: each nn.Linear
becomes an EnsembleLinear with one member per seed, each critic ensemble of n critics one
EnsembleLinear of seeds × n members (seed-major), each learnt tensor gains a leading seed
dimension. `StackLayout` pairs the stacked agent with a plain one of the same algorithm (the
template) and converts states both ways, so that a seed's checkpoint is a separate run's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from rlrun.blocks.nets import EnsembleLinear
from rlrun.blocks.optim import Adam
from rlrun.blocks.state import Checkpointed, attribute_at
from rlrun.config import RunError


class SeedStack:
    """The seeds of a batched group, and one torch generator each for the noise its agent
    draws (exploration, reparameterised actions), so that no seed's stream depends on the others."""

    def __init__(self, seeds: Sequence[int], device: torch.device) -> None:
        self.seeds = tuple(seeds)
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in self.seeds]

    def __len__(self) -> int:
        return len(self.seeds)

    def normal_like(self, like: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like `like` (S, ...), seed s's slice from seed s's generator."""
        shape = like.shape[1:]
        return torch.stack([torch.randn(shape, generator=g, device=like.device, dtype=like.dtype) for g in self.generators])

    def state_dict(self) -> dict[str, Any]:
        return {"generators": [g.get_state() for g in self.generators]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for generator, saved in zip(self.generators, state["generators"], strict=True):
            generator.set_state(saved)


# How one parameter of a plain agent sits in the stacked one: stack(S plain tensors) → stacked
# tensor, and member(stacked tensor, s) → seed s's plain tensor.
class _Layout:
    def __init__(self, stack: Callable[[list[torch.Tensor]], torch.Tensor], member: Callable[[torch.Tensor, int], torch.Tensor]):
        self.stack, self.member = stack, member


# nn.Linear: weight (out, in) ↔ EnsembleLinear weight (S, in, out); bias (out,) ↔ (S, 1, out).
_LINEAR_WEIGHT = _Layout(lambda ts: torch.stack([t.t() for t in ts]), lambda t, s: t[s].t())
_LINEAR_BIAS = _Layout(lambda ts: torch.stack(ts).unsqueeze(1), lambda t, s: t[s, 0])
# Anything else with a seed dimension in front: log α, running statistics.
_STACKED = _Layout(torch.stack, lambda t, s: t[s])


def _ensemble(n: int) -> _Layout:
    """An ensemble of n members (n, ...) ↔ S ensembles seed-major (S·n, ...)."""
    return _Layout(torch.cat, lambda t, s: t[s * n : (s + 1) * n])


def _module_layouts(plain: nn.Module, stacked: nn.Module) -> dict[str, _Layout]:
    """The layout of each of `plain`'s parameters and buffers, by name; the two modules must
    have the same tree, with stacked layers where `plain` has nn.Linear or EnsembleLinear."""
    layouts = {}
    pairs = list(zip(plain.named_modules(), stacked.named_modules(), strict=True))
    for (name, mine), (stacked_name, theirs) in pairs:
        linear = isinstance(mine, (nn.Linear, EnsembleLinear))
        if name != stacked_name or linear != isinstance(theirs, EnsembleLinear):
            raise ValueError(f"the stacked network differs from the plain one at {name!r} / {stacked_name!r}")
        prefix = f"{name}." if name else ""
        if isinstance(mine, nn.Linear):
            layouts[prefix + "weight"], layouts[prefix + "bias"] = _LINEAR_WEIGHT, _LINEAR_BIAS
        elif isinstance(mine, EnsembleLinear):
            layouts[prefix + "weight"] = layouts[prefix + "bias"] = _ensemble(mine.weight.shape[0])
        else:
            tensors = [*mine.named_parameters(recurse=False), *mine.named_buffers(recurse=False)]
            layouts.update({prefix + key: _STACKED for key, _ in tensors})
    return layouts


class StackLayout:
    """Converts between a stacked agent's state_dict and its seeds' states, each in a plain
    agent's layout (`template`: the same algorithm built without a SeedStack)."""

    def __init__(self, template: Checkpointed, stacked: Checkpointed) -> None:
        self.items = template._checkpointed_items()
        self.kinds: dict[str, Any] = {}
        by_parameter: dict[int, _Layout] = {}  # the layout of each of the template's tensors
        for key, path in self.items:
            mine, theirs = attribute_at(template, path), attribute_at(stacked, path)
            if isinstance(mine, nn.Module):
                self.kinds[key] = _module_layouts(mine, theirs)
                named = dict(mine.named_parameters())
                by_parameter.update({id(named[name]): layout for name, layout in self.kinds[key].items() if name in named})
            elif isinstance(mine, torch.Tensor):
                self.kinds[key] = _STACKED
                by_parameter[id(mine)] = _STACKED
        for key, path in self.items:
            mine = attribute_at(template, path)
            if isinstance(mine, Adam):  # its moments follow the order of its parameters
                self.kinds[key] = [by_parameter[id(p)] for p in mine.params]
            elif key not in self.kinds:
                self.kinds[key] = None  # the same for every seed (step counters): stored once

    def stack(self, states: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The stacked agent's state from its seeds' states (in seed order)."""
        stacked = {}
        for key, _ in self.items:
            kind, values = self.kinds[key], [state[key] for state in states]
            if isinstance(kind, dict):
                stacked[key] = {name: kind[name].stack([v[name] for v in values]) for name in values[0]}
            elif isinstance(kind, list):
                stacked[key] = {
                    "lr": values[0]["lr"],
                    "steps": values[0]["steps"],
                    **{
                        moments: [layout.stack([v[moments][i] for v in values]) for i, layout in enumerate(kind)]
                        for moments in ("exp_avgs", "exp_avg_sqs")
                    },
                }
            elif isinstance(kind, _Layout):
                stacked[key] = kind.stack(values)
            else:
                stacked[key] = values[0]
        return stacked

    def member_state(self, state: Mapping[str, Any], seed_index: int) -> dict[str, Any]:
        """Seed `seed_index`'s state, as a plain agent of the same algorithm saves it."""
        member: dict[str, Any] = {}
        for key, _ in self.items:
            kind, value = self.kinds[key], state[key]
            if isinstance(kind, dict):
                member[key] = {name: kind[name].member(t, seed_index).clone() for name, t in value.items()}
            elif isinstance(kind, list):
                member[key] = {
                    "lr": value["lr"],
                    "steps": [t.clone() for t in value["steps"]],
                    **{
                        moments: [layout.member(t, seed_index).clone() for layout, t in zip(kind, value[moments])]
                        for moments in ("exp_avgs", "exp_avg_sqs")
                    },
                }
            elif isinstance(kind, _Layout):
                member[key] = kind.member(value, seed_index).clone()
            else:
                member[key] = value
        return member


class SeedMember:
    """Seed `index` of a stacked agent as a run sees one agent: its state in a plain agent's
    layout (checkpoints, best.pt, the divergence check) and its evaluation actions, taken by
    the plain template agent loaded with this seed's weights. The template is shared by the
    seeds of a group and reloaded only when the weights or the seed it holds change
    (`group.version` counts the stacked agent's updates)."""

    def __init__(self, group: SeedGroup, index: int) -> None:
        self.group, self.index = group, index
        self.device = group.stacked.device

    def state_dict(self) -> dict[str, Any]:
        return self.group.layout.member_state(self.group.stacked_state(), self.index)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        raise RuntimeError("a batched group does not resume yet (docs/batched-seeds.md)")

    def _loaded(self) -> Checkpointed:
        group = self.group
        if group.template_holds != (self.index, group.version):
            group.template.load_state_dict(self.state_dict())
            group.template_holds = (self.index, group.version)
        return group.template

    def act(self, obs: np.ndarray, deterministic: bool = True) -> Any:
        return self._loaded().act(obs, deterministic=deterministic)

    def policy_module(self) -> nn.Module:
        return self._loaded().policy_module()


class SeedGroup:
    """A stacked agent, a plain template agent of the same algorithm and configuration, and
    the conversion between them; `members` are the seeds as the runs see them. `build` makes
    the algorithm's stacked agent for a SeedStack (to go on without a seed that stopped)."""

    def __init__(self, build: Callable[[SeedStack], Checkpointed], stack: SeedStack, template: Checkpointed) -> None:
        self.build, self.stack, self.template = build, stack, template
        self.stacked = build(stack)
        self.layout = StackLayout(template, self.stacked)
        self.version = 0  # bumped after each update of the stacked agent
        self.template_holds: tuple[int, int] | None = None  # (seed index, version) loaded in the template
        self._state: tuple[int, dict[str, Any]] | None = None
        self.members = [SeedMember(self, index) for index in range(len(stack))]
        self.stopped: dict[int, RunError] = {}  # seed -> why it stopped while the others went on

    def keep(self, indices: Sequence[int]) -> None:
        """Go on with the seeds at `indices` only: a stacked agent of those seeds, each with its
        weights, optimiser state and noise generator as they are now; the members kept are
        renumbered in place, so their runs keep them."""
        state = self.stacked_state()
        kept = [self.layout.member_state(state, index) for index in indices]
        stack = SeedStack([self.stack.seeds[index] for index in indices], self.stacked.device)
        stack.load_state_dict({"generators": [self.stack.generators[index].get_state() for index in indices]})
        with torch.random.fork_rng(devices=[]):  # its initial weights are replaced: leave the global stream as it was
            self.stack, self.stacked = stack, self.build(stack)
        self.layout = StackLayout(self.template, self.stacked)
        self.stacked.load_state_dict(self.layout.stack(kept))
        self.members = [self.members[index] for index in indices]
        for index, member in enumerate(self.members):
            member.index = index
        self.updated()

    def stacked_state(self) -> dict[str, Any]:
        """The stacked agent's state_dict, taken once per version for all seeds."""
        if self._state is None or self._state[0] != self.version:
            self._state = (self.version, self.stacked.state_dict())
        return self._state[1]

    def updated(self) -> None:
        self.version += 1
