"""Supernet training: sandwich rule with in-place distillation, seeded, resumable, CPU or GPU, torchrun-ready.

Each step trains, on the same batch of images, the largest subnet (cross-entropy with label smoothing),
the smallest subnet and ``num_random`` random subnets (distilled from the largest subnet's soft
predictions, computed in the same step), each at its own resolution; the gradients add up and one SGD
step follows. The first ``warmup_epochs`` train the largest subnet alone; then the expanded channels are
sorted by importance once (OFA), and the sandwich phase begins.

Everything random is derived from ``(seed, epoch, step)``, so a run resumed from a checkpoint follows the
same path as an uninterrupted one. Under ``torchrun`` each process takes a shard of every batch and the
gradients are averaged with ``all_reduce`` (data-parallel; the elastic net makes DDP's hooks awkward).
Training uses the 55k ``train`` split only; minival and test are never seen.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from nas_lab import data
from nas_lab.progress import bar as progress_bar
from nas_lab.space import Arch, SearchSpace
from nas_lab.supernet import OFASupernet, load_weights, recalibrate_bn


@dataclass
class TrainConfig:
    epochs: int = 10
    warmup_epochs: int = 1          # largest subnet alone, then sort channels, then sandwich
    batch_size: int = 128
    lr: float = 0.08
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    num_random: int = 2             # random subnets per step besides largest and smallest
    num_focus: int = 0              # of those, how many are drawn from the focus sub-space only
    focus_resolutions: str = ""     # e.g. "24,28": where inherited accuracy trails training alone most
    focus_widths: str = ""          # e.g. "0.5": the focus subnets' widths (empty: any)
    focus_depths: str = ""          # e.g. "2,3": the focus subnets' stage depths (empty: any)
    smallest_weight: float = 1.0    # weight of the smallest subnet's distillation loss (0: not trained)
    seed: int = 0
    threads: int = 0                # 0 = leave torch's default
    checkpoint_minutes: float = 5.0
    limit_steps: int = 0            # >0: stop after this many steps in total (smoke tests)
    train_limit: int = 0            # >0: use only the first N training images (smoke tests)
    arch: str = ""                  # non-empty: train this one subnet alone, from scratch (the baseline)
    init_from: str = ""             # non-empty: start from these supernet weights (.safetensors), e.g. to
                                    # continue a finished run with a second schedule (warm restart)


def _step_seed(seed: int, epoch: int, step: int) -> int:
    return (seed * 1_000_003 + epoch) * 1_000_003 + step


def augment(images: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random shift by up to ``pad`` pixels (zero padding) and random horizontal flip; uint8 in, uint8 out."""
    n, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]           # (n, 1, h, 1)
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]           # (n, 1, 1, w)
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def _param_groups(net: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        (decay if p.ndim == 4 or (p.ndim == 2 and "transform" not in name) else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(net: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(_param_groups(net, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum, nesterov=True)


def lr_at(cfg: TrainConfig, progress: float) -> float:
    """Cosine decay over the whole run (progress in [0, 1]) after a short linear warm-up."""
    if progress < 0.02:
        return cfg.lr * progress / 0.02
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * progress))


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def save_checkpoint(path: Path, net: OFASupernet, opt: torch.optim.Optimizer, cfg: TrainConfig,
                    epoch: int, step: int, log: list[dict]) -> None:
    """Small resumable checkpoint (tensors only, loadable with weights_only=True)."""
    tmp = path.with_suffix(".tmp")
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "step": step,
                "config": json.dumps(asdict(cfg)), "space": json.dumps(net.config()),
                "log": json.dumps(log)}, tmp)
    os.replace(tmp, path)


def monitor_accuracy(net: OFASupernet, arch: Arch, calib_images: torch.Tensor) -> float:
    """Minival accuracy (percent) of ``arch`` for the training log, BN recalibrated on training images."""
    from nas_lab.evaluate import top1_accuracy

    net.set_active_subnet(arch)
    sub = net.get_active_subnet().to(memory_format=torch.channels_last)
    recalibrate_bn(sub, data.normalise(calib_images, arch.resolution).contiguous(
        memory_format=torch.channels_last))
    return top1_accuracy(sub, "minival", arch.resolution)


def train(cfg: TrainConfig, out_dir: Path, resume: bool = True, progress: bool = True) -> OFASupernet:
    """Train (or resume) a supernet into ``out_dir`` (checkpoint.pt, train_log.jsonl); returns the net."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, world = _dist_info()
    device = _device()
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = out_dir / "checkpoint.pt", out_dir / "train_log.jsonl"
    torch.manual_seed(cfg.seed)
    space = SearchSpace()
    focus = _focus_space(space, cfg)  # bad focus options fail before any work
    net = OFASupernet(space).to(device).to(memory_format=torch.channels_last)
    opt = make_optimizer(net, cfg)
    start_epoch, start_step, log = 0, 0, []
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, start_step, log = state["epoch"], state["step"], json.loads(state["log"])
        if rank == 0:
            print(f"resumed from {ckpt_path} at epoch {start_epoch} step {start_step}", flush=True)
    elif cfg.init_from:
        if not Path(cfg.init_from).exists():
            raise FileNotFoundError(f"--init-from: {cfg.init_from} does not exist")
        load_weights(net, cfg.init_from)
        if rank == 0:
            print(f"initialised from {cfg.init_from}", flush=True)
    if world > 1:  # every rank starts from rank 0's weights
        for t in net.state_dict().values():
            dist.broadcast(t, 0)

    images, labels = data.load_split("train")
    if cfg.train_limit:
        images, labels = images[:cfg.train_limit], labels[:cfg.train_limit]
    steps_per_epoch = len(labels) // cfg.batch_size  # drop the last partial batch
    total_steps = cfg.epochs * steps_per_epoch
    largest, smallest = space.largest(), space.smallest()
    if cfg.arch:  # from-scratch baseline: the same recipe on one fixed subnet, no sandwich, no sorting
        largest = space.parse(cfg.arch)
    last_save, done_steps = time.time(), start_epoch * steps_per_epoch + start_step

    for epoch in range(start_epoch, cfg.epochs):
        if epoch == cfg.warmup_epochs and start_step == 0 and epoch > 0 and not cfg.arch:
            net.sort_expanded_channels()
            opt = make_optimizer(net, cfg)  # momentum buffers refer to the old channel order
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(_step_seed(cfg.seed, epoch, -1)))
        net.train()
        bar = progress_bar(range(start_step, steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}",
                           enabled=progress and rank == 0, mininterval=10, unit="step")
        t0, run_loss, run_n = time.time(), 0.0, 0
        for step in bar:
            seed = _step_seed(cfg.seed, epoch, step)
            gen = torch.Generator().manual_seed(seed)
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size][rank::world]
            x8 = augment(images[idx], gen)
            y = labels[idx].to(device)
            lr = lr_at(cfg, done_steps / total_steps)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)

            def run(arch: Arch, x8: torch.Tensor = x8) -> torch.Tensor:
                net.set_active_subnet(arch)
                x = data.normalise(x8, arch.resolution).to(device).contiguous(memory_format=torch.channels_last)
                return net(x)

            logits = run(largest)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            loss.backward()
            run_loss += loss.item()
            if epoch >= cfg.warmup_epochs and not cfg.arch:
                soft = F.softmax(logits.detach(), dim=1)
                rng = random.Random(seed)
                for arch, weight in [(smallest, cfg.smallest_weight)] + [
                        (a, 1.0) for a in _random_subnets(space, focus, cfg, rng)]:
                    if weight:  # x * 1.0 is exact: weight 1 trains bit for bit as before the option existed
                        kd = torch.sum(-soft * F.log_softmax(run(arch), dim=1), dim=1).mean()
                        (weight * kd).backward()
            if world > 1:
                for p in net.parameters():
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    dist.all_reduce(p.grad)
                    p.grad /= world
            opt.step()
            run_n += 1
            done_steps += 1
            if rank == 0 and time.time() - last_save > cfg.checkpoint_minutes * 60:
                save_checkpoint(ckpt_path, net, opt, cfg, epoch, step + 1, log)
                last_save = time.time()
            if cfg.limit_steps and done_steps >= cfg.limit_steps:
                break
        if start_step + run_n < steps_per_epoch:  # stopped early (limit_steps): keep the exact position
            if rank == 0:
                save_checkpoint(ckpt_path, net, opt, cfg, epoch, start_step + run_n, log)
            break
        start_step = 0
        entry = {"epoch": epoch + 1, "train_loss_largest": round(run_loss / max(run_n, 1), 4),
                 "lr": round(lr, 5), "seconds": round(time.time() - t0, 1), "steps": run_n}
        if rank == 0:
            calib = data.load_split("train")[0][:2000]  # monitoring only: calibrate on training images
            monitored = [("arch", largest)] if cfg.arch else [("largest", largest), ("smallest", smallest)]
            for name, arch in monitored:
                entry[f"minival_{name}"] = round(monitor_accuracy(net.cpu(), arch, calib), 2)
            net.to(device)
        log.append(entry)
        if rank == 0:
            with open(log_path, "a") as f:
                f.write(json.dumps(entry) + "\n")
            print(json.dumps(entry), flush=True)
            save_checkpoint(ckpt_path, net, opt, cfg, epoch + 1, 0, log)
            last_save = time.time()
    if world > 1:
        _check_in_sync(net)
    return net


def _focus_space(space: SearchSpace, cfg: TrainConfig) -> SearchSpace | None:
    """The sub-space the ``num_focus`` random subnets come from (None when there are none)."""
    if not 0 <= cfg.num_focus <= cfg.num_random:
        raise ValueError(f"num_focus {cfg.num_focus} must be between 0 and num_random {cfg.num_random}")
    if not cfg.num_focus:
        return None
    fields = {"resolutions": (cfg.focus_resolutions, int), "widths": (cfg.focus_widths, float),
              "depths": (cfg.focus_depths, int)}
    choices = {}
    for name, (text, kind) in fields.items():
        if not text.strip():
            continue
        try:
            choices[name] = tuple(kind(v) for v in text.split(","))
        except ValueError:
            raise ValueError(f"focus_{name} {text!r}: comma-separated numbers, e.g. "
                             f"{'24,28' if kind is int else '0.5,0.75'}") from None
    if not choices:
        raise ValueError("num_focus > 0 needs focus_resolutions, focus_widths or focus_depths, e.g. '24,28'")
    return space.restrict(**choices)


def _random_subnets(space: SearchSpace, focus: SearchSpace | None, cfg: TrainConfig,
                    rng: random.Random) -> list[Arch]:
    """This step's random subnets: ``num_random - num_focus`` from the whole space, then the focus ones."""
    out = [space.sample(rng) for _ in range(cfg.num_random - cfg.num_focus)]
    return out + [focus.sample(rng) for _ in range(cfg.num_focus)] if focus else out


def _check_in_sync(net: torch.nn.Module) -> None:
    """Fail loudly if data-parallel replicas drifted apart (they must hold identical weights)."""
    rank, world = _dist_info()
    local = torch.stack([p.detach().double().sum() for p in net.parameters()]).cpu()
    gathered = [torch.zeros_like(local) for _ in range(world)]
    dist.all_gather(gathered, local)
    if any(not torch.allclose(g, gathered[0], rtol=1e-6, atol=1e-6) for g in gathered):
        raise RuntimeError("data-parallel replicas hold different weights")


def _earlier_phases(train_config: dict) -> list[dict]:
    """The configs and logs of the runs a ``--init-from`` run continued (read from the weights' .json)."""
    init = train_config.get("init_from")
    previous = Path(init).with_suffix(".json") if init else None
    if previous is None or not previous.exists():
        return []
    meta = json.loads(previous.read_text())
    if meta.get("train_config") == train_config:  # exported twice: that file already describes this run
        return meta.get("earlier_phases", [])
    return meta.get("earlier_phases", []) + [{k: meta.get(k) for k in ("train_config", "epochs_done", "train_log")}]


def export_supernet(checkpoint: Path, out_dir: Path, extra: dict | None = None) -> tuple[Path, Path]:
    """Write the shipped artifacts from a training checkpoint: weights (safetensors) and config (json, plus
    the ``extra`` fields, e.g. reference accuracies)."""
    from safetensors.torch import save_file

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    weights = out_dir / "supernet.safetensors"
    config = out_dir / "supernet.json"
    save_file({k: v.contiguous() for k, v in state["model"].items()}, str(weights))
    meta = json.loads(state["space"])
    train_config = json.loads(state["config"])
    meta.update(train_config=train_config, epochs_done=state["epoch"], train_log=json.loads(state["log"]),
                earlier_phases=_earlier_phases(train_config), **(extra or {}))
    config.write_text(json.dumps(meta, indent=2) + "\n")
    return weights, config


if __name__ == "__main__":  # ``python -m nas_lab.train ...`` = ``nas-lab train-supernet ...`` (torchrun too)
    import sys

    from nas_lab.cli import main

    sys.exit(main(["train-supernet", *sys.argv[1:]]))
