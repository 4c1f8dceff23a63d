"""HL-Gauss classification critics (rlrun/blocks/hl_gauss.py) and the algorithms that use them."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from rlrun.algos.dqn import DQN, DQNConfig
from rlrun.algos.sac import SAC, SACConfig
from rlrun.algos.td3 import TD3, TD3Config
from rlrun.blocks.buffers import Batch
from rlrun.blocks.hl_gauss import HLGauss, SupportCheck
from rlrun.blocks.nets import QEnsemble
from rlrun.config import ConfigError, RunError, from_mapping

V_MIN, V_MAX, BINS = -10.0, 30.0, 51
BIN_WIDTH = (V_MAX - V_MIN) / BINS


@pytest.fixture
def hl_gauss():
    return HLGauss(V_MIN, V_MAX, BINS, sigma_ratio=0.75)


# ----- the transform ----------------------------------------------------------------------------
def test_projection_of_a_scalar_inside_the_support_has_that_scalar_as_its_mean(hl_gauss):
    # Up to 5σ from either end, where the Gaussian's truncation is negligible (at 3σ it moves
    # the mean by 0.004 bin widths); the bins' own discretisation error is far below 1e-4 bin
    # widths for σ = 0.75 bin widths.
    margin = 5 * 0.75 * BIN_WIDTH
    y = torch.cat([torch.linspace(V_MIN + margin, V_MAX - margin, 997), torch.tensor([0.0, 1.234, 17.5])])
    probs = hl_gauss.probs(y)
    assert probs.shape == (len(y), BINS)
    assert (probs >= 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(y)))
    mean = (probs * hl_gauss.centres).sum(-1)
    assert (mean - y).abs().max() < 1e-4 * BIN_WIDTH
    # value(log p) reads the same mean back through the softmax.
    torch.testing.assert_close(hl_gauss.value(probs.clamp_min(1e-30).log()), y, rtol=0, atol=1e-4 * BIN_WIDTH)


def test_projection_matches_the_normal_cdf_formula(hl_gauss):
    y = torch.tensor([3.3], dtype=torch.float64)
    normal = torch.distributions.Normal(y, 0.75 * BIN_WIDTH)
    edges = torch.linspace(V_MIN, V_MAX, BINS + 1, dtype=torch.float64)
    cdf = normal.cdf(edges)
    expected = (cdf[1:] - cdf[:-1]) / (cdf[-1] - cdf[0])
    torch.testing.assert_close(hl_gauss.probs(y.float())[0], expected.float(), rtol=1e-4, atol=1e-6)
    # σ is sigma_ratio bin widths: the histogram's variance is about σ² (plus a bin's ς²/12).
    probs = hl_gauss.probs(torch.tensor([5.0]))[0]
    variance = (probs * (hl_gauss.centres - 5.0) ** 2).sum()
    assert variance.item() == pytest.approx((0.75 * BIN_WIDTH) ** 2 + BIN_WIDTH**2 / 12, rel=0.02)


def test_targets_outside_the_support_are_clipped_to_its_ends(hl_gauss):
    probs = hl_gauss.probs(torch.tensor([V_MAX + 5.0, 1e9, V_MIN - 5.0, -1e9]))
    assert torch.isfinite(probs).all()
    torch.testing.assert_close(probs[0], hl_gauss.probs(torch.tensor(V_MAX)))
    torch.testing.assert_close(probs[1], hl_gauss.probs(torch.tensor(V_MAX)))
    torch.testing.assert_close(probs[2], hl_gauss.probs(torch.tensor(V_MIN)))
    torch.testing.assert_close(probs[3], hl_gauss.probs(torch.tensor(V_MIN)))
    assert probs[0, -1] > 0.5 and probs[2, 0] > 0.5  # the mass sits on the end bins


def test_loss_is_the_cross_entropy_with_the_target_histogram(hl_gauss):
    torch.manual_seed(0)
    logits, target = torch.randn(7, BINS), torch.rand(7) * 30 - 5
    expected = F.cross_entropy(logits, hl_gauss.probs(target), reduction="none")
    torch.testing.assert_close(hl_gauss.loss(logits, target), expected)


def test_loss_over_predicted_values_is_minimised_at_the_target(hl_gauss):
    # A critic predicting the histogram of y' pays the least when y' = y (Gibbs' inequality).
    for y in (-4.2, 0.0, 12.7):
        candidates = torch.linspace(-8.0, 28.0, 721)
        predicted_logits = hl_gauss.probs(candidates).clamp_min(1e-30).log()  # bins far off underflow to 0
        losses = hl_gauss.loss(predicted_logits, torch.tensor(y))
        assert candidates[losses.argmin()].item() == pytest.approx(y, abs=0.05)


def test_descending_the_loss_brings_the_value_to_the_target(hl_gauss):
    torch.manual_seed(0)
    logits = torch.randn(3, BINS, requires_grad=True)
    targets = torch.tensor([-6.0, 4.4, 25.0])
    optimizer = torch.optim.Adam([logits], lr=0.3)
    for _ in range(300):
        optimizer.zero_grad()
        hl_gauss.loss(logits, targets).sum().backward()
        optimizer.step()
    torch.testing.assert_close(hl_gauss.value(logits.detach()), targets, rtol=0, atol=0.02)


def test_value_stays_float32_under_bfloat16_autocast(hl_gauss):
    logits = torch.randn(5, BINS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = hl_gauss.value(logits)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, hl_gauss.value(logits))


# ----- the support check ------------------------------------------------------------------------
def test_support_check_passes_targets_inside_and_stops_a_support_too_small(hl_gauss):
    check = SupportCheck(hl_gauss.v_min, hl_gauss.v_max, every=4, max_fraction=0.05)
    for _ in range(8):
        assert check(torch.linspace(V_MIN, V_MAX, 100)).item() == 0.0  # the ends are inside
    outside = torch.cat([torch.linspace(0.0, 1.0, 90), torch.full((10,), V_MAX + 1.0)])
    for _ in range(3):
        assert check(outside).item() == pytest.approx(0.1)
    with pytest.raises(RunError, match=r"\[-10, 30\] cannot hold the returns: 10% .* highest 31\); widen algo.v_min/algo.v_max"):
        check(outside)


# ----- config -----------------------------------------------------------------------------------
@pytest.mark.parametrize("config_class", [SACConfig, TD3Config, DQNConfig])
@pytest.mark.parametrize(
    "values,message",
    [
        ({"critic_loss": "hl_gauss"}, "needs the value support: set algo.v_min and algo.v_max"),
        ({"critic_loss": "hl_gauss", "v_min": 0.0}, "set algo.v_min and algo.v_max"),
        ({"critic_loss": "hl_gauss", "v_min": 5.0, "v_max": 5.0}, "algo.v_min=5.0 must be below algo.v_max=5.0"),
        ({"num_bins": 1}, "algo.num_bins=1 must be at least 2"),
        ({"sigma_ratio": 0.0}, "algo.sigma_ratio=0.0 must be positive"),
        ({"critic_loss": "cross_entropy"}, "algo.critic_loss"),
    ],
)
def test_bad_value_support_is_a_config_error(config_class, values, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        from_mapping(config_class, values, prefix="algo.")


def test_the_default_losses_need_no_support():
    assert SACConfig().critic_loss == TD3Config().critic_loss == "mse"
    assert DQNConfig().critic_loss == "huber"
    assert SACConfig(v_min=1.0, v_max=-1.0).v_min == 1.0  # unused without hl_gauss


# ----- networks and algorithms ------------------------------------------------------------------
def test_q_ensemble_with_several_outputs_keeps_them_and_its_members_agree():
    torch.manual_seed(0)
    critic = QEnsemble(3, 2, (8,), n=2, outputs=BINS)
    obs, action = torch.randn(5, 3), torch.randn(5, 2)
    out = critic(obs, action)
    assert out.shape == (2, 5, BINS)
    torch.testing.assert_close(critic.member(1, obs, action), out[1])


CONTINUOUS = (gym.spaces.Box(-1.0, 1.0, (3,), np.float32), gym.spaces.Box(-2.0, 2.0, (1,), np.float32))


def continuous_batch() -> Batch:
    torch.manual_seed(1)
    return Batch(torch.randn(8, 3), torch.rand(8, 1) * 2 - 1, torch.rand(8) * 4 - 2, torch.randn(8, 3), torch.zeros(8))


@pytest.mark.parametrize("algo,config_class", [(SAC, SACConfig), (TD3, TD3Config)])
def test_actor_critic_with_hl_gauss_values_critics_by_their_histograms_means(algo, config_class):
    torch.manual_seed(0)
    delay = {"policy_delay": 1} if config_class is TD3Config else {}  # TD3's actor at every update
    support = {"critic_loss": "hl_gauss", "v_min": V_MIN, "v_max": V_MAX, "num_bins": BINS}
    config = config_class(hidden_sizes=(16,), batch_size=8, **support, **delay)
    agent = algo(config, *CONTINUOUS, torch.device("cpu"), seed=0)
    data = continuous_batch()
    logits = agent.critic(data.obs, data.actions)
    assert logits.shape == (2, 8, BINS)
    q = agent.q_values(logits)
    torch.testing.assert_close(q, (F.softmax(logits, -1) * agent.hl_gauss.centres).sum(-1))
    assert ((q > V_MIN) & (q < V_MAX)).all()
    assert "hl_gauss" not in " ".join(agent.state_dict()["critic"])  # checkpoints hold no support
    before = agent.hl_gauss.loss(logits, agent.critic_target(data)).mean(1).sum()
    for _ in range(20):
        metrics = agent.update(data)
    assert metrics["train/target_outside_support"].item() == 0.0
    after = agent.hl_gauss.loss(agent.critic(data.obs, data.actions), agent.critic_target(data)).mean(1).sum()
    assert after < before


def discrete_batch() -> Batch:
    torch.manual_seed(1)
    return Batch(torch.randn(16, 4), torch.randint(0, 2, (16,)), torch.ones(16), torch.randn(16, 4), torch.zeros(16))


@pytest.mark.parametrize("dueling", [False, True])
def test_dqn_with_hl_gauss_acts_on_the_histograms_means_and_learns_the_target(dueling):
    torch.manual_seed(0)
    config = DQNConfig(hidden_sizes=(32,), critic_loss="hl_gauss", v_min=0.0, v_max=20.0, num_bins=41, dueling=dueling, lr=1e-2)
    agent = DQN(config, gym.spaces.Box(-1.0, 1.0, (4,), np.float32), gym.spaces.Discrete(2), torch.device("cpu"), seed=0)
    data = discrete_batch()
    logits = agent.q.logits(data.obs)
    assert logits.shape == (16, 2, 41)
    q = agent.q(data.obs)
    torch.testing.assert_close(q, agent.hl_gauss.value(logits))
    assert agent.policy_module()(data.obs).tolist() == q.argmax(1).tolist()  # export acts on the means
    # Terminal transitions with reward 1: the taken action's value must move to 1.
    terminal = Batch(data.obs, data.actions, data.rewards, data.next_obs, torch.ones(16))
    for _ in range(150):
        metrics = agent.update(terminal)
    taken = agent.q(data.obs).gather(1, data.actions.unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(taken, torch.ones(16), rtol=0, atol=0.1)
    assert metrics["train/target_outside_support"].item() == 0.0


def test_dueling_hl_gauss_head_centres_the_advantage_per_bin():
    from rlrun.algos.dqn import DuelingHead

    torch.manual_seed(0)
    head = DuelingHead(8, 3, outputs_per_action=5)
    features = torch.randn(4, 8)
    out = head(features)
    assert out.shape == (4, 3, 5)
    torch.testing.assert_close(out.mean(dim=1), head.value(features))


# ----- the command line -------------------------------------------------------------------------
SMOKE_SUPPORTS = {
    "sac-Pendulum": ("algo=sac", "env=Pendulum", "algo.v_min=-1700", "algo.v_max=100"),
    "td3-Pendulum": ("algo=td3", "env=Pendulum", "algo.v_min=-850", "algo.v_max=50"),
    "dqn-CartPole": ("algo=dqn", "env=CartPole", "algo.v_min=0", "algo.v_max=110", "algo.dueling=true"),
}


@pytest.mark.parametrize("name", SMOKE_SUPPORTS)
def test_smoke_run_with_hl_gauss(rlrun, tmp_path, name):
    run_dir = tmp_path / "run"
    result = rlrun(
        "experiment=smoke", *SMOKE_SUPPORTS[name], "algo.critic_loss=hl_gauss", "device=cpu", f"hydra.run.dir={run_dir}"
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    fractions = [row["train/target_outside_support"] for row in rows if "train/target_outside_support" in row]
    assert fractions and max(fractions) == 0.0
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


def test_a_support_that_cannot_hold_the_returns_stops_the_run_with_one_line(rlrun, tmp_path):
    # Pendulum's rewards reach −16 a step: its returns are far below −10.
    run_dir = tmp_path / "run"
    result = rlrun(
        "experiment=smoke", "algo=sac", "env=Pendulum", "algo.critic_loss=hl_gauss", "algo.v_min=-10", "algo.v_max=0",
        "device=cpu", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rlrun: error: the value support [algo.v_min, algo.v_max] = [-10, 0]")
    assert "widen algo.v_min/algo.v_max" in lines[0]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    assert (run_dir / "checkpoints").is_dir()


def test_hl_gauss_without_a_support_fails_before_the_run_with_one_line(rlrun, tmp_path):
    run_dir = tmp_path / "run"
    result = rlrun("algo=td3", "env=Walker2d", "algo.critic_loss=hl_gauss", f"hydra.run.dir={run_dir}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "rlrun: error: algo.critic_loss=hl_gauss needs the value support: set algo.v_min and algo.v_max "
        "(e.g. [r_min, r_max] / (1 − gamma) for rewards in [r_min, r_max])"
    ]
    assert not run_dir.exists()
