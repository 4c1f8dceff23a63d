"""Config validation in-process: from_mapping's conversions, every dataclass's range checks,
and rlrun.core.plan.validate on configs that Hydra composed. test_errors.py runs the same kind of
mistakes through the real command line (exit code, one line, nothing written)."""

import ast
import dataclasses
import importlib.util
import inspect
import sys
import textwrap
import typing

import gymnasium as gym
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.errors import HydraException

from rlrun.algos.dqn import DQN, DQNConfig
from rlrun.algos.ppo import PPO, PPOConfig
from rlrun.algos.sac import SAC, SACConfig
from rlrun.algos.td3 import TD3Config
from rlrun.commands.train import CONFIG_MODULE, describe_error, preflight
from rlrun.config import ConfigError, EnvConfig, EvalConfig, RunConfig, from_mapping
from rlrun.core.plan import validate
from rlrun.core.registry import ALGORITHMS, get_algorithm
from rlrun.loops.replay import OffPolicyConfig

# The values a dataclass needs before any check can run: its required fields.
REQUIRED = {
    "EnvConfig": {"id": "Pendulum-v1", "total_steps": 1000},
    "RunConfig": {"env": {"id": "Pendulum-v1", "total_steps": 1000}},
    "TrialConfig": {"storage": "sqlite:///study.db", "study_name": "rlrun", "number": 0},
}


# ----- every range check fires, naming its key --------------------------------------------------------


def config_classes() -> list[tuple[type, str]]:
    """Every config dataclass with the prefix its keys have on the command line: RunConfig and
    the groups inside it, and each registered algorithm's Config."""
    found, pending = [], [(RunConfig, "")]
    while pending:
        cls, prefix = pending.pop()
        found.append((cls, prefix))
        for name, hint in typing.get_type_hints(cls).items():
            for option in (hint, *typing.get_args(hint)):
                if dataclasses.is_dataclass(option):
                    pending.append((option, f"{prefix}{name}."))
    return found + [(get_algorithm(name).Config, "algo.") for name in ALGORITHMS]


def range_checks(cls: type) -> list[tuple[str, str, str, tuple]]:
    """(check, key, field, extra arguments) for each call of positive, non_negative, in_range
    and layer_sizes in the __post_init__ of `cls` and its bases, read from their source."""
    checks = []
    for base in cls.__mro__:
        if "__post_init__" not in vars(base):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(vars(base)["__post_init__"])))
        for call in ast.walk(tree):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
                continue
            if call.func.id not in ("positive", "non_negative", "in_range", "layer_sizes"):
                continue
            key, value, *extra = call.args
            assert isinstance(value, ast.Attribute) and value.value.id == "self", ast.dump(call)
            namespace = vars(sys.modules[base.__module__])  # bounds may be named constants (MAX_SEED)
            bounds = tuple(eval(compile(ast.Expression(e), "<bound>", "eval"), namespace) for e in extra)
            checks.append((call.func.id, ast.literal_eval(key), value.attr, bounds))
    return checks


def bad_values(check: str, extra: tuple, hint: type) -> list:
    """Values `check` refuses, of the field's own type (so that the message shows them as given)."""
    number = float if float in (hint, *typing.get_args(hint)) else int
    if check == "positive":
        return [number(0), number(-1)]
    if check == "non_negative":
        return [number(-1)]
    if check == "in_range":
        low, high = extra
        step = 1 if number is int else 0.5
        return [low - step, high + step]
    return [[], [64, 0]]  # layer_sizes


RANGE_CASES = [
    pytest.param(cls, prefix, check, key, field, value, id=f"{cls.__name__}-{key}={value}")
    for cls, prefix in config_classes()
    for check, key, field, extra in range_checks(cls)
    for value in bad_values(check, extra, typing.get_type_hints(cls)[field])
]


def test_the_range_checks_were_found():
    keys = {case.values[3] for case in RANGE_CASES}
    assert {
        "total_steps",
        "seed",
        "threads",
        "eval.every",
        "checkpoint.keep",
        "env.atari.frame_skip",
        "trial.number",
        "algo.lr",
        "algo.gamma",
        "algo.hidden_sizes",
        "algo.num_minibatches",
        "algo.policy_delay",
    } <= keys


@pytest.mark.parametrize("cls,prefix,check,key,field,value", RANGE_CASES)
def test_every_range_check_fires_with_a_message_naming_the_key(cls, prefix, check, key, field, value):
    assert key == prefix + field  # the message names the key the user typed
    data = {**REQUIRED.get(cls.__name__, {}), field: value}
    with pytest.raises(ConfigError) as error:
        from_mapping(cls, data, prefix=prefix)
    message = str(error.value)
    assert "\n" not in message
    if check == "layer_sizes":
        assert message.startswith(f"{key}=[] needs at least one layer" if value == [] else f"{key}[1]=0 must be positive")
    else:
        assert message.startswith(f"{key}={value!r} must")  # the key and the bad value, as given
    wording = {"positive": "must be positive", "non_negative": "must be zero or positive", "in_range": "must lie in ["}
    if check in wording and wording[check] not in message:
        # only where another check on the same key comes first (DQN's tau: positive, then in [0, 1])
        assert any(c[1] == key and c[0] != check for c in range_checks(cls)), message


@pytest.mark.parametrize(
    "cls,key,low,high",
    [
        (OffPolicyConfig, "gamma", 0.0, 1.0),
        (OffPolicyConfig, "tau", 0.0, 1.0),
        (PPOConfig, "gae_lambda", 0.0, 1.0),
        (DQNConfig, "end_epsilon", 0.0, 1.0),
        (DQNConfig, "exploration_fraction", 0.0, 1.0),
    ],
)
def test_range_bounds_are_inclusive(cls, key, low, high):
    assert getattr(cls(**{key: low}), key) == low
    assert getattr(cls(**{key: high}), key) == high


def test_off_policy_batches_must_fit_in_the_buffer():
    for cls in (SACConfig, TD3Config, DQNConfig):
        with pytest.raises(ConfigError, match=r"^algo.batch_size=512 is larger than algo.buffer_size=256$"):
            cls(batch_size=512, buffer_size=256)
        assert cls(batch_size=256, buffer_size=256).batch_size == 256


def test_ppo_minibatches_need_two_transitions_each():
    with pytest.raises(ConfigError, match=r"^algo.num_minibatches=9 is too many for a rollout of .* = 16 transitions"):
        PPOConfig(num_envs=2, num_steps=8, num_minibatches=9)
    assert PPOConfig(num_envs=2, num_steps=8, num_minibatches=8).batch_size == 16


# ----- from_mapping: keys and types ------------------------------------------------------------------


@pytest.mark.parametrize(
    "data,prefix,message",
    [
        ({"evry": 5}, "eval.", "unknown config key 'eval.evry'; did you mean 'eval.every'?"),
        ({"lrr": 0.1}, "algo.", "unknown config key 'algo.lrr'; did you mean 'algo.lr'?"),
        ({"zzz": 1}, "eval.", "unknown config key 'eval.zzz'; valid keys: {}"),  # nothing close: all of them
    ],
)
def test_unknown_keys_are_named_with_a_suggestion(data, prefix, message):
    cls = SACConfig if prefix == "algo." else EvalConfig
    with pytest.raises(ConfigError) as error:
        from_mapping(cls, data, prefix=prefix)
    assert str(error.value) == message.format(", ".join(sorted(f.name for f in dataclasses.fields(cls))))


def test_unknown_and_missing_keys_inside_groups_are_named_with_their_path():
    with pytest.raises(ConfigError, match=r"^unknown config key 'env.atari.frameskip'; did you mean 'env.atari.frame_skip'\?$"):
        from_mapping(RunConfig, {"env": {"id": "Pong", "total_steps": 1, "atari": {"frameskip": 4}}})
    with pytest.raises(ConfigError, match=r"^missing config key 'env.total_steps'$"):
        from_mapping(RunConfig, {"env": {"id": "Pendulum-v1"}})
    with pytest.raises(ConfigError, match=r"^eval must be a group of keys, got 5$"):
        from_mapping(RunConfig, {**REQUIRED["RunConfig"], "eval": 5})


@pytest.mark.parametrize(
    "cls,key,value,expected",
    [
        (RunConfig, "total_steps", 1e6, 1_000_000),  # YAML and Hydra read 1e6 as a float
        (RunConfig, "total_steps", 7, 7),
        (RunConfig, "progress", False, False),
        (RunConfig, "threads", None, None),
        (RunConfig, "threads", 2, 2),
        (RunConfig, "device", "cpu", "cpu"),
        (SACConfig, "lr", 1, 1.0),  # an integer where a number is expected
        (SACConfig, "target_entropy", "auto", "auto"),
        (SACConfig, "target_entropy", -3, -3.0),
        (SACConfig, "hidden_sizes", [64, 32.0], (64, 32)),
        (DQNConfig, "max_grad_norm", None, None),
        (EnvConfig, "id", "Pendulum-v1", "Pendulum-v1"),
    ],
)
def test_values_are_converted_to_the_field_types(cls, key, value, expected):
    prefix = "algo." if cls in (SACConfig, DQNConfig) else ""
    config = from_mapping(cls, {**REQUIRED.get(cls.__name__, {}), key: value}, prefix=prefix)
    converted = getattr(config, key)
    assert converted == expected and type(converted) is type(expected)


@pytest.mark.parametrize(
    "cls,key,value,message",
    [
        (RunConfig, "total_steps", "abc", "total_steps must be an integer, got 'abc'"),
        (RunConfig, "total_steps", 2.5, "total_steps must be an integer, got 2.5"),
        (RunConfig, "total_steps", True, "total_steps must be an integer, got True"),
        (RunConfig, "progress", "maybe", "progress must be true or false, got 'maybe'"),
        (RunConfig, "progress", 1, "progress must be true or false, got 1"),
        (RunConfig, "device", "tpu", "device='tpu' is not valid; choose one of: auto, cpu, cuda"),
        (RunConfig, "precision", "fp16", "precision='fp16' is not valid; choose one of: float32, bfloat16"),
        (RunConfig, "threads", "two", "threads must be an integer, got 'two'"),
        (SACConfig, "lr", "fast", "algo.lr must be a number, got 'fast'"),
        (SACConfig, "lr", True, "algo.lr must be a number, got True"),
        (SACConfig, "hidden_sizes", 64, "algo.hidden_sizes must be a list like [256, 256], got 64"),
        (SACConfig, "hidden_sizes", [64, "wide"], "algo.hidden_sizes[1] must be an integer, got 'wide'"),
        (SACConfig, "target_entropy", "high", "algo.target_entropy='high' is not valid"),
        (EnvConfig, "id", 5, "env.id must be a string, got 5"),
    ],
)
def test_values_of_the_wrong_type_are_named(cls, key, value, message):
    prefix = {SACConfig: "algo.", EnvConfig: "env."}.get(cls, "")
    with pytest.raises(ConfigError) as error:
        from_mapping(cls, {**REQUIRED.get(cls.__name__, {}), key: value}, prefix=prefix)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_every_field_type_is_one_from_mapping_converts():
    """A new field of a type _convert does not know would fail only when set from the command
    line; building every config from its own defaults converts every field once."""
    for cls, prefix in config_classes():
        defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
        literal_or_plain = {k: v for k, v in defaults.items() if not dataclasses.is_dataclass(v)}
        config = from_mapping(cls, {**REQUIRED.get(cls.__name__, {}), **literal_or_plain}, prefix=prefix)
        for key, value in literal_or_plain.items():
            assert getattr(config, key) == value, (cls.__name__, key)


# ----- plan.validate on composed configs -------------------------------------------------------------


@pytest.fixture
def composer():
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        yield lambda *overrides: compose("config", overrides=list(overrides))


@pytest.mark.parametrize(
    "algo,env,algo_class,spaces",
    [
        ("sac", "Pendulum", SAC, (gym.spaces.Box, gym.spaces.Box)),
        ("ppo", "CartPole", PPO, (gym.spaces.Box, gym.spaces.Discrete)),
        ("dqn", "CartPole", DQN, (gym.spaces.Box, gym.spaces.Discrete)),
    ],
)
def test_a_composed_config_becomes_a_typed_plan(composer, algo, env, algo_class, spaces):
    plan = validate(composer(f"algo={algo}", f"env={env}", "seed=3", "eval.episodes=2"))
    assert plan.algo_name == algo and plan.algo_class is algo_class
    assert isinstance(plan.algo_config, algo_class.Config)
    assert plan.run_config.seed == 3 and plan.run_config.eval.episodes == 2
    assert (type(plan.obs_space), type(plan.action_space)) == spaces
    assert plan.config["algo"]["name"] == algo and plan.config["seed"] == 3  # resolved, for checkpoints


def test_tuned_values_and_overrides_reach_the_plan(composer):
    tuned = validate(composer("algo=sac", "env=Pendulum"))
    assert tuned.algo_config.lr == 1e-3 and tuned.algo_config.learning_starts == 100  # configs/tuned/sac-Pendulum.yaml
    overridden = validate(composer("algo=sac", "env=Pendulum", "algo.lr=5e-4", "algo.hidden_sizes=[32,32]"))
    assert overridden.algo_config.lr == 5e-4 and overridden.algo_config.hidden_sizes == (32, 32)


@pytest.mark.parametrize(
    "overrides,domain,task",
    [
        (["env=dmc-walker-walk"], "walker", "walk"),  # a short name
        (["env=dmc", "env.domain=finger", "env.task=turn_easy"], "finger", "turn_easy"),  # any task of the suite
    ],
)
def test_a_dmc_task_gets_its_id_from_domain_and_task_and_the_suites_sac_settings(composer, overrides, domain, task):
    if importlib.util.find_spec("shimmy") is None:
        pytest.skip("needs the dmc extra")
    plan = validate(composer("algo=sac", *overrides))
    assert plan.run_config.env.id == f"dm_control/{domain}-{task}-v0"
    assert (plan.run_config.env.domain, plan.run_config.env.task) == (domain, task)
    assert plan.algo_config.lr == 1e-4 and plan.algo_config.hidden_sizes == (1024, 1024)  # configs/tuned/sac-dmc.yaml
    assert plan.run_config.total_steps == 1_000_000 and plan.run_config.env.action_repeat == 1
    assert len(plan.obs_space.shape) == 1  # the suite's observation dict, flattened


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["algo=sac", "env=CartPole"],
            "algo=sac needs a Box action space, but CartPole-v1 has a discrete (Discrete(2)) one; algorithms that fit: ppo, dqn, rainbow",
        ),
        (["algo=td3", "env=CartPole"], "algo=td3 needs a Box action space, but CartPole-v1 has a discrete"),
        (["algo=dqn", "env=HalfCheetah"], "algo=dqn needs a Discrete action space, but HalfCheetah-v5 has a continuous"),
        (["algo=dqn", "env=Pendulum"], "algos that fit"),
    ],
)
def test_an_algorithm_that_does_not_fit_the_action_space_is_refused(composer, overrides, message):
    with pytest.raises(ConfigError) as error:
        validate(composer(*overrides))
    if message == "algos that fit":  # Pendulum's Box: every continuous algorithm, in registry order
        assert str(error.value).endswith("; algorithms that fit: sac, ppo, td3, ddpg, dsac_t, crossq, mrq")
    else:
        assert str(error.value).startswith(message)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["total_steps=0"], "total_steps=0 must be positive"),
        (["algo.gamma=1.5"], "algo.gamma=1.5 must lie in [0.0, 1.0]"),
        (["algo.batch_size=512", "algo.buffer_size=256"], "algo.batch_size=512 is larger than algo.buffer_size=256"),
        (["eval.every=0"], "eval.every=0 must be positive"),
        (["progress=maybe"], "progress must be true or false, got 'maybe'"),
        (["env.id=HalfCheetah-v9"], "env.id='HalfCheetah-v9' is not a registered Gymnasium environment; did you mean"),
        (
            ["algo.name=sacc"],
            "algo.name='sacc' is not a registered algorithm; choose one of: sac, ppo, dqn, rainbow, td3, ddpg, dsac_t, crossq, mrq, td3_bc, iql, cql, dt",
        ),
    ],
)
def test_validate_names_the_bad_value(composer, overrides, message):
    with pytest.raises(ConfigError) as error:
        validate(composer("algo=sac", "env=Pendulum", *overrides))
    assert str(error.value).startswith(message)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_a_gpu_is_refused(composer):
    with pytest.raises(ConfigError, match=r"^device='cuda' but CUDA is not available here; use device=cpu or device=auto$"):
        validate(composer("algo=sac", "env=Pendulum", "device=cuda"))


# ----- composition errors, as the command line words them -------------------------------------------


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["algo.lrr=0.1"], "unknown config key 'algo.lrr'; did you mean 'algo.lr'?"),
        (["eval.evry=5"], "unknown config key 'eval.evry'; did you mean 'eval.every'?"),
        (
            ["algo=sacc"],
            "unknown algo 'sacc'; choose one of: cql, crossq, ddpg, dqn, dsac_t, dt, iql, mrq, ppo, rainbow, sac, td3, td3_bc",
        ),
        (["env=HalfCheeta"], "unknown env 'HalfCheeta'; choose one of: Acrobot, "),
    ],
)
def test_composition_errors_become_one_line_with_a_suggestion(composer, overrides, message):
    with pytest.raises(HydraException) as error:
        composer("algo=sac", "env=Pendulum", *overrides)
    assert describe_error(error.value, overrides).startswith(message)


def test_the_preflight_reports_every_bad_job_of_a_grid():
    errors = preflight(["-m", "algo=sac", "env=Pendulum", "total_steps=100,0,-1", "algo.gamma=0.5,2"])
    job = "job algo=sac env=Pendulum total_steps={} algo.gamma={}: "
    gamma = "algo.gamma=2.0 must lie in [0.0, 1.0]"  # the algorithm's settings are checked first
    assert errors == [
        job.format(100, 2) + gamma,
        job.format(0, 0.5) + "total_steps=0 must be positive",
        job.format(0, 2) + gamma,
        job.format(-1, 0.5) + "total_steps=-1 must be positive",
        job.format(-1, 2) + gamma,
    ]
    assert preflight(["-m", "algo=sac", "env=Pendulum", "seed=0,1"]) == []
