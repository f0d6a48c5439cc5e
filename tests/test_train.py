"""The training recipe: a few real steps, exact resumption, augmentation, and a two-process gloo run."""

import os
import subprocess
import sys

import pytest
import torch

from nas_lab.train import TrainConfig, augment, lr_at, train

TINY = dict(batch_size=32, train_limit=512, warmup_epochs=0, num_random=1, threads=1, checkpoint_minutes=0.0)


def _state(path):
    return torch.load(path / "checkpoint.pt", weights_only=True)


def test_resumed_run_equals_an_uninterrupted_one(tmp_path):
    train(TrainConfig(limit_steps=4, **TINY), tmp_path / "straight", progress=False)
    train(TrainConfig(limit_steps=2, **TINY), tmp_path / "resumed", progress=False)
    assert _state(tmp_path / "resumed")["step"] == 2
    train(TrainConfig(limit_steps=4, **TINY), tmp_path / "resumed", progress=False)
    a, b = _state(tmp_path / "straight"), _state(tmp_path / "resumed")
    assert a["step"] == b["step"] == 4 and a["epoch"] == b["epoch"] == 0
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)
    # and training did change the weights
    fresh = TrainConfig(limit_steps=1, **{**TINY, "seed": 0})
    train(fresh, tmp_path / "one", progress=False)
    assert not torch.equal(_state(tmp_path / "one")["model"]["stem.conv.weight"], a["model"]["stem.conv.weight"])


def test_init_from_starts_at_the_given_weights(tmp_path):
    """--init-from (continuing a finished run): with lr 0 one step leaves the loaded conv weights unchanged."""
    from safetensors.torch import save_file

    train(TrainConfig(limit_steps=2, **TINY), tmp_path / "first", progress=False)
    first = _state(tmp_path / "first")["model"]
    save_file({k: v.contiguous() for k, v in first.items()}, str(tmp_path / "w.safetensors"))
    cfg = TrainConfig(limit_steps=1, lr=0.0, init_from=str(tmp_path / "w.safetensors"), **{**TINY, "seed": 3})
    train(cfg, tmp_path / "second", progress=False)
    second = _state(tmp_path / "second")["model"]
    conv = [k for k in first if k.endswith("conv.weight")]
    assert conv and all(torch.equal(first[k], second[k]) for k in conv)
    fresh = TrainConfig(limit_steps=1, lr=0.0, **{**TINY, "seed": 3})  # without it: a new random init
    train(fresh, tmp_path / "third", progress=False)
    assert not torch.equal(_state(tmp_path / "third")["model"][conv[0]], first[conv[0]])


def test_export_keeps_the_history_of_a_continued_run(tmp_path):
    """Exporting a --init-from run records the first run's config and log; exporting twice does not nest."""
    import json

    from nas_lab.train import export_supernet

    train(TrainConfig(limit_steps=1, **TINY), tmp_path / "first", progress=False)
    first_dir = tmp_path / "shipped"
    first_dir.mkdir()
    weights, config = export_supernet(tmp_path / "first" / "checkpoint.pt", first_dir)
    assert json.loads(config.read_text())["earlier_phases"] == []
    cfg = TrainConfig(limit_steps=1, init_from=str(weights), **{**TINY, "seed": 5})
    train(cfg, tmp_path / "second", progress=False)
    for _ in range(2):
        export_supernet(tmp_path / "second" / "checkpoint.pt", first_dir)
        meta = json.loads(config.read_text())
        assert meta["train_config"]["seed"] == 5 and meta["train_config"]["init_from"] == str(weights)
        assert [p["train_config"]["seed"] for p in meta["earlier_phases"]] == [0]


def test_init_from_a_missing_file_is_a_clear_error(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        train(TrainConfig(limit_steps=1, init_from=str(tmp_path / "nothing.safetensors"), **TINY),
              tmp_path / "x", progress=False)


def test_augment_shifts_and_flips_but_keeps_content():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(64, 1, 28, 28, dtype=torch.uint8)
    x[:, :, 10:18, 10:18] = 200
    y = augment(x, g, pad=2)
    assert y.shape == x.shape and y.dtype == torch.uint8
    assert torch.all(y.float().sum(dim=(1, 2, 3)) == x.float().sum(dim=(1, 2, 3)))  # square fully inside
    assert not torch.equal(y, x)


def test_learning_rate_schedule():
    cfg = TrainConfig(lr=0.1)
    assert lr_at(cfg, 0.0) == 0.0
    assert abs(lr_at(cfg, 0.02) - 0.1) < 1e-3
    assert lr_at(cfg, 0.5) < lr_at(cfg, 0.3) and lr_at(cfg, 1.0) < 1e-9


@pytest.mark.slow
def test_two_process_data_parallel_run_with_gloo(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "nas_lab.train", "--out", str(tmp_path), "--batch-size", "32", "--train-limit", "512",
           "--warmup-epochs", "0", "--num-random", "1", "--limit-steps", "3", "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = _state(tmp_path)
    assert state["step"] == 3  # rank 0 saved after three synchronised steps (replicas checked in sync)


def test_focus_subnets_come_from_the_focus_resolutions_and_leave_the_default_path_alone():
    import random

    from nas_lab.space import SearchSpace
    from nas_lab.train import _focus_space, _random_subnets

    space = SearchSpace()
    plain = TrainConfig(num_random=4)
    assert _focus_space(space, plain) is None
    # num_focus 0 draws exactly what the sandwich always drew (old runs resume on the same path)
    assert _random_subnets(space, None, plain, random.Random(7)) == [space.sample(r) for r in [random.Random(7)]
                                                                    for _ in range(4)]
    cfg = TrainConfig(num_random=4, num_focus=3, focus_resolutions="24,28")
    focus = _focus_space(space, cfg)
    seen = set()
    for seed in range(200):
        archs = _random_subnets(space, focus, cfg, random.Random(seed))
        assert len(archs) == 4 and all(a.resolution in (24, 28) for a in archs[1:])
        assert all(space.validate(a) == a for a in archs)
        seen |= {a.resolution for a in archs[1:]}
    assert seen == {24, 28}


def test_focus_on_widths_and_depths_draws_only_those():
    import random

    from nas_lab.space import SearchSpace
    from nas_lab.train import _focus_space, _random_subnets

    space = SearchSpace()
    cfg = TrainConfig(num_random=3, num_focus=2, focus_widths="0.5", focus_depths="2,3")
    focus = _focus_space(space, cfg)
    depths = set()
    for seed in range(100):
        first, *focused = _random_subnets(space, focus, cfg, random.Random(seed))
        assert space.validate(first) == first
        for a in focused:
            assert a.width == 0.5 and set(a.depths) <= {2, 3} and space.validate(a) == a
            depths |= set(a.depths)
    assert depths == {2, 3}


@pytest.mark.parametrize("bad, message", [(dict(num_focus=3, num_random=2), "between 0 and num_random"),
                                          (dict(num_focus=1), "needs focus_resolutions"),
                                          (dict(num_focus=1, focus_resolutions="24,32"), "not in the space"),
                                          (dict(num_focus=1, focus_resolutions="24;28"), "comma-separated"),
                                          (dict(num_focus=1, focus_widths="0.6"), "not in the space"),
                                          (dict(num_focus=1, focus_depths="two"), "comma-separated")])
def test_bad_focus_options_are_clear_errors(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        train(TrainConfig(**{**TINY, **bad}), tmp_path, progress=False)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_a_focused_run_trains(tmp_path):
    train(TrainConfig(limit_steps=1, num_focus=1, focus_resolutions="28", **TINY), tmp_path, progress=False)
    assert _state(tmp_path)["step"] == 1


def test_smallest_weight_zero_trains_the_largest_subnet_alone(tmp_path):
    """Weight 0 skips the smallest subnet: with no random subnets, the step is exactly training the largest
    subnet alone (the --arch baseline path); weight 1 is not."""
    def weights(out: str, **cfg) -> dict:
        net = train(TrainConfig(**{**TINY, "limit_steps": 2, "num_random": 0, **cfg}), tmp_path / out, progress=False)
        return {k: v.cpu() for k, v in net.state_dict().items()}

    alone = weights("alone", arch="largest")
    skipped, default = weights("skipped", smallest_weight=0.0), weights("default")
    assert all(torch.equal(alone[k], skipped[k]) for k in alone)
    assert not all(torch.equal(alone[k], default[k]) for k in alone)
