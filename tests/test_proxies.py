"""Zero-cost proxies against hand-worked cases, plus the no-mutation, determinism and registry contracts."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nas_lab import proxies as P
from nas_lab.efficiency import costs
from nas_lab.space import SearchSpace

SPACE = SearchSpace()
SMALL = SPACE.smallest()
MIDDLE = SPACE.parse("r20_w0.75_k5e4_k3e6-k7e3_k5e3_k3e4")


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_convnet(seed: int = 0) -> nn.Module:
    """Conv -> BN -> ReLU6 -> pool -> linear: every kind of layer the proxies treat specially."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU6(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def batch(n: int = 6, size: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, size, size, generator=g), torch.randint(0, 3, (n,), generator=g)


def linear(weight: list[list[float]]) -> nn.Linear:
    layer = nn.Linear(len(weight[0]), len(weight), bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
    return layer


# ---- GradSign ----------------------------------------------------------------------------------------------
def test_gradsign_from_grads_by_hand() -> None:
    g = torch.tensor([[1.0, -2.0, 0.0], [3.0, -1.0, 2.0], [-1.0, -5.0, 1.0]])  # (3 samples, 3 params)
    assert P.gradsign_from_grads(g) == 1 + 3 + 2  # |1+1-1| + |-1-1-1| + |0+1+1|


def test_gradsign_agreeing_samples_score_n_per_weight() -> None:
    # linear softmax classifier: dl/dW[c, j] = (p_c - [c == y]) x_j. With x > 0 and one label for every sample
    # the sign of every entry is the same for all samples, so each of the 3 x 4 weights scores n = 5.
    model = linear([[0.1, -0.2, 0.3, 0.0], [0.5, 0.1, -0.4, 0.2], [-0.3, 0.2, 0.1, 0.6]])
    x = torch.rand(5, 4, generator=torch.Generator().manual_seed(1)) + 0.1
    y = torch.zeros(5, dtype=torch.long)
    assert P.gradsign(model, x, y) == 5 * 12


def test_gradsign_cancelling_samples_score_zero() -> None:
    # x and -x with the same label: the factor (p_c - [c == y]) keeps its sign, x_j flips it -> every weight's
    # two signs cancel exactly.
    model = linear([[0.1, -0.2, 0.3, 0.0], [0.5, 0.1, -0.4, 0.2], [-0.3, 0.2, 0.1, 0.6]])
    x = torch.tensor([[0.5, -1.0, 2.0, 0.3]])
    assert P.gradsign(model, torch.cat([x, -x]), torch.tensor([1, 1])) == 0


# ---- SynFlow -----------------------------------------------------------------------------------------------
def test_synflow_two_layer_linear_by_hand() -> None:
    # R = 1^T |W2| |W1| 1 = [1 2] . [3 3.5] = 10; R is linear in each layer, so sum_w |w dR/dw| = R per layer.
    model = nn.Sequential(linear([[1.0, -2.0], [3.0, 0.5]]), linear([[-1.0, 2.0]]))
    assert P.synflow(model, torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)) == pytest.approx(20.0, rel=1e-12)


def test_synflow_removes_batchnorm_and_linearises_relu6() -> None:
    # Hidden activations 30 and 35 would be capped at 6 by ReLU6 and rescaled by train-mode BN; synflow
    # scores the linear |W| network: R = 1 * 30 + 2 * 35 = 100 -> 200.
    model = nn.Sequential(linear([[10.0, -20.0], [30.0, 5.0]]), nn.BatchNorm1d(2), nn.ReLU6(), linear([[-1.0, 2.0]]))
    assert P.synflow(model, torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)) == pytest.approx(200.0, rel=1e-12)


# ---- NASWOT ------------------------------------------------------------------------------------------------
def test_naswot_from_codes_by_hand() -> None:
    codes = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 1]])
    # K = 3 - Hamming distance: [[3, 2, 0], [2, 3, 1], [0, 1, 3]], det = 3 * 8 - 2 * 6 = 12
    assert P.naswot_kernel(codes).tolist() == [[3, 2, 0], [2, 3, 1], [0, 1, 3]]
    assert P.naswot_score(codes) == pytest.approx(math.log(12))
    assert P.naswot_score(torch.tensor([[1, 0], [1, 0]])) == -math.inf  # identical codes: singular kernel


def test_naswot_reads_relu_codes_of_every_layer() -> None:
    x = torch.tensor([[1.0, -2.0, 3.0], [0.5, 1.0, -1.0], [-1.0, -1.0, 2.0]])
    model = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.ReLU6())  # the same codes twice: K doubles
    codes = (x > 0).int()
    expected = torch.linalg.slogdet(2 * P.naswot_kernel(codes)).logabsdet.item()
    assert P.naswot(model, x, torch.zeros(3, dtype=torch.long)) == pytest.approx(expected)
    assert expected == pytest.approx(P.naswot_score(codes) + 3 * math.log(2))
    with pytest.raises(ValueError, match="ReLU"):
        P.naswot(nn.Linear(3, 2), x, torch.zeros(3, dtype=torch.long))


# ---- grad_norm and snip --------------------------------------------------------------------------------------
def reference_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    m = copy.deepcopy(model).train()
    F.cross_entropy(m(x), y).backward()
    return [(layer.weight.detach(), layer.weight.grad) for layer in (m[0], m[5])]


def test_grad_norm_and_snip_equal_direct_computation() -> None:
    model, (x, y) = tiny_convnet(), batch()
    pairs = reference_grads(model, x, y)
    assert P.grad_norm(model, x, y) == pytest.approx(sum(g.norm().item() for _, g in pairs), rel=1e-6)
    assert P.snip(model, x, y) == pytest.approx(sum((w * g).abs().sum().item() for w, g in pairs), rel=1e-6)


# ---- Zen ---------------------------------------------------------------------------------------------------
def test_zen_of_identity_features_is_the_expected_perturbation() -> None:
    # f = x itself (the pooling layer's input): Delta = mean_n sum |gamma x'| ~ gamma * CHW * sqrt(2 / pi)
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.zeros(8, 1, 32, 32)
    expected = math.log(1e-2 * 1024 * math.sqrt(2 / math.pi))
    assert P.zen(model, x, torch.zeros(8, dtype=torch.long)) == pytest.approx(expected, abs=0.03)


def test_zen_bn_term_restores_the_scale_bn_divides_out() -> None:
    # the same Gaussian draws (conv weight w, then x, x'): without BN the features are w x; with BN they are
    # x / std(x) (times sign w) and the BN term adds log(|w| std(x)): the two scores agree.
    x, y = torch.zeros(16, 1, 8, 8), torch.zeros(16, dtype=torch.long)
    plain = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.AdaptiveAvgPool2d(1))
    with_bn = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.BatchNorm2d(1), nn.AdaptiveAvgPool2d(1))
    assert P.zen(with_bn, x, y, seed=3) == pytest.approx(P.zen(plain, x, y, seed=3), abs=1e-3)


# ---- baselines, contracts ----------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", [SMALL, MIDDLE])
def test_params_and_macs_equal_the_analytic_costs(arch) -> None:
    model = P.build_model(arch, seed=0)
    x, y = torch.zeros(2, 1, arch.resolution, arch.resolution), torch.zeros(2, dtype=torch.long)
    c = costs(arch, SPACE)
    assert P.params(model, x, y) == c.params
    assert P.macs(model, x, y) == pytest.approx(c.macs, rel=1e-9)


def test_proxies_do_not_change_model_or_input() -> None:
    model, (x, y) = P.build_model(MIDDLE, seed=1), P.train_batch(MIDDLE.resolution, 8)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x_before = x.clone()
    for name in P.PROXIES:
        P.compute(name, model, x, y)
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), name  # weights and BN statistics
        assert all(p.grad is None for p in model.parameters()), name
        assert not model.training and torch.equal(x, x_before), name


def test_every_proxy_is_deterministic_per_seed() -> None:
    for name in P.PROXIES:
        first = P.score_arch(name, SMALL, seed=4, batch_size=8)
        assert P.score_arch(name, SMALL, seed=4, batch_size=8) == first, name
        assert math.isfinite(first), name
    for name in ("grad_norm", "synflow", "zen"):  # a new initialisation gives a new score
        assert P.score_arch(name, SMALL, seed=5, batch_size=8) != P.score_arch(name, SMALL, seed=4, batch_size=8)


def test_build_model_is_seeded_and_leaves_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a, b = P.build_model(MIDDLE, 7), P.build_model(MIDDLE, 7)
    s = P.build_model(MIDDLE, 7, init="supernet")
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(u, v) for u, v in zip(a.state_dict().values(), b.state_dict().values()))
    # own init: each conv's std follows its own fan-out; the supernet slice is narrower (the largest net's fan-out)
    dw_own, dw_super = a.blocks[0].depthwise[0].weight, s.blocks[0].depthwise[0].weight  # (C, 1, 5, 5)
    assert dw_own.std().item() == pytest.approx(math.sqrt(2 / (dw_own.shape[0] * 25)), rel=0.2)
    assert dw_super.std().item() < 0.75 * dw_own.std().item()
    with pytest.raises(ValueError, match="unknown init"):
        P.build_model(MIDDLE, 0, init="xavier")


def test_unknown_proxy_name_is_a_clear_error() -> None:
    model, (x, y) = tiny_convnet(), batch()
    for call in (lambda: P.compute("synflw", model, x, y), lambda: P.score_arch("synflw", SMALL),
                 lambda: P.score_archs("synflw", [SMALL])):
        with pytest.raises(ValueError, match="unknown proxy 'synflw'; choose one of: params, macs"):
            call()


def test_registry_entries() -> None:
    assert {"params", "macs", "grad_norm", "snip", "synflow", "naswot", "zen", "gradsign"} <= set(P.PROXIES)
    assert P.PROXIES["snip"].needs_labels and P.PROXIES["naswot"].needs_data
    assert not P.PROXIES["naswot"].needs_labels and not P.PROXIES["synflow"].needs_data
    assert P.PROXIES["synflow"].fn is P.synflow  # the function itself: own_work can block it


def test_score_archs_mean_spread_and_correlations() -> None:
    archs = [SMALL, MIDDLE, SPACE.parse("r24_w1.0_k3e3_k3e3_k3e3_k3e3")]
    res = P.score_archs("params", archs, seeds=(0, 1))
    assert res.scores.shape == res.seconds.shape == (3, 2)
    assert res.mean.tolist() == [costs(a).params for a in archs] and res.std.tolist() == [0, 0, 0]
    c = res.correlations([costs(a).params for a in archs])
    assert c["kendall_tau"] == pytest.approx(1.0) and c["spearman_of_mean"] == pytest.approx(1.0)
    assert math.isnan(P.score_archs("naswot", [SMALL], seeds=(0,), batch_size=4).correlations([1.0])["spearman"])
    odd = P.ProxyScores("x", archs, (0,), np.array([[3.0], [-np.inf], [np.nan]]), np.zeros((3, 1)))
    # nan ranks lowest, tied with -inf: 2 concordant pairs, 1 tied in the score -> tau-b = 2 / sqrt(2 * 3)
    assert odd.correlations([3.0, 2.0, 1.0])["kendall_tau"] == pytest.approx(2 / math.sqrt(6))


# ---- ground truth and CLI ----------------------------------------------------------------------------------
BENCH_HEADER = ("arch,resolution,width,test_accuracy,minival_accuracy,macs,params,peak_memory_kb,train_seconds,"
                "recipe,seed\n")


def fake_data_dir(tmp_path, monkeypatch, rows: list[str]):
    from nas_lab import artifacts

    real = artifacts.data_dir()
    for name in ("manifest.json", "fashion-mnist", "accuracy_dataset.csv"):
        (tmp_path / name).symlink_to(real / name)
    (tmp_path / "scratch_bench.csv.shard0of2").write_text(BENCH_HEADER)
    (tmp_path / "scratch_bench.csv.shard1of2").write_text(BENCH_HEADER + "".join(rows))
    monkeypatch.setenv("NAS_LAB_DATA", str(tmp_path))


def bench_row(arch, acc: float) -> str:
    c = costs(arch)
    return f'{arch},{arch.resolution},{arch.width},{acc},{acc},{c.macs},{c.params},{c.peak_memory_kb},1.0,"b:1ep",0\n'


def test_bench_ground_truth_reads_finished_shard_rows_and_checks_the_final_csv(tmp_path, monkeypatch) -> None:
    from nas_lab import artifacts
    from nas_lab.scratch_bench import ground_truth

    fake_data_dir(tmp_path, monkeypatch, [bench_row(SMALL, 85.0), bench_row(MIDDLE, 88.0)])
    bench, source = ground_truth()
    assert bench.archs == [SMALL, MIDDLE] and bench.test_accuracy.tolist() == [85.0, 88.0]
    assert "2 shard files (2 rows" in source
    (tmp_path / "scratch_bench.csv").write_text(BENCH_HEADER + bench_row(SMALL, 99.0))  # not what the manifest says
    with pytest.raises(artifacts.ArtifactError, match="scratch_bench.csv"):
        ground_truth()
    (tmp_path / "scratch_bench.csv").unlink()
    for shard in tmp_path.glob("*.shard*"):
        shard.write_text(BENCH_HEADER)
    with pytest.raises(FileNotFoundError, match="build-scratch-bench"):
        ground_truth()
    with pytest.raises(FileNotFoundError, match="scratch_bench_full.csv does not exist.*--recipe full"):
        ground_truth("full")                     # the fidelity subset has its own file and shards
    (tmp_path / "scratch_bench_full.csv.shard0of6").write_text(BENCH_HEADER + bench_row(SMALL, 86.0))
    assert ground_truth("full")[0].test_accuracy.tolist() == [86.0]
    with pytest.raises(ValueError, match="unknown recipe 'ful'"):
        ground_truth("ful")


def test_cli_proxy(tmp_path, monkeypatch, capsys) -> None:
    from nas_lab.cli import main

    assert main(["proxy", "--name", "params", "--arch", str(SMALL), "--seeds", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["archs"][0]["mean"] == costs(SMALL).params and "correlations" not in out
    fake_data_dir(tmp_path, monkeypatch, [bench_row(SMALL, 85.0), bench_row(MIDDLE, 88.0)])
    assert main(["proxy", "--name", "macs", "--bench", "--seeds", "1"]) == 0
    assert "Kendall tau +1.000" in capsys.readouterr().out
    assert main(["proxy", "--name", "params", "--dataset", "--limit", "5", "--seeds", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["correlations"]["n"] == 5
    assert main(["proxy", "--name", "nope", "--arch", "smallest"]) == 2
    assert "unknown proxy 'nope'" in capsys.readouterr().err
    assert main(["proxy", "--name", "params"]) == 2
    assert "--arch ARCH, --bench or --dataset" in capsys.readouterr().err
    for shard in tmp_path.glob("*.shard*"):
        shard.write_text(BENCH_HEADER)
    assert main(["proxy", "--name", "params", "--bench"]) == 1
    assert "no shard holds a finished row" in capsys.readouterr().err


def test_score_archs_takes_a_proxy_function() -> None:
    """Lab 6 scores the students' own proxies with the same machinery: a function works like its name."""
    def my_synflow(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> float:
        return P.synflow(model, x, y, seed)

    archs = [SMALL, MIDDLE]
    by_name = P.score_archs("synflow", archs, seeds=(0, 1), batch_size=8)
    by_fn = P.score_archs(my_synflow, archs, seeds=(0, 1), batch_size=8)
    assert by_fn.name == "my_synflow" and np.array_equal(by_fn.scores, by_name.scores)
    assert P.score_arch(my_synflow, SMALL, seed=3, batch_size=8) == P.score_arch("synflow", SMALL, seed=3, batch_size=8)
    with pytest.raises(ValueError, match="registered name or a function"):
        P.score_archs(42, archs)
