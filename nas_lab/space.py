"""The search space: its choices, the ``Arch`` config type (dict <-> string), sampling, mutation, crossover, size.

A subnet of the once-for-all supernet is fixed by an input resolution, a global width multiplier, a depth
per stage and, per block, a depthwise kernel size and an expand ratio. ``Arch`` stores kernels and expands
for every block slot (``num_stages * max_depth`` genes, as OFA does) so mutation and crossover act on
fixed-length genes; the slots beyond a stage's depth are inactive and ignored by equality, hashing and the
string form.

Arch string (compact, printable, parseable)::

    r28_w1.0_k7e6-k7e6-k7e6_k5e4_k3e3-k3e3_k7e6-k5e6-k3e6
    ^res ^width ^stage 1 (3 blocks)  ^stage 2 ...

Stages are separated by ``_``, blocks inside a stage by ``-``; a stage's depth is its number of blocks.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any


class ArchError(ValueError):
    """An architecture outside the search space, or a malformed arch string."""


@dataclass(frozen=True)
class SearchSpace:
    """The choices of the space and the fixed skeleton (stage widths, strides) they act on."""

    resolutions: tuple[int, ...] = (16, 20, 24, 28)
    widths: tuple[float, ...] = (0.5, 0.75, 1.0)
    depths: tuple[int, ...] = (1, 2, 3)
    kernels: tuple[int, ...] = (3, 5, 7)
    expands: tuple[int, ...] = (3, 4, 6)
    stem_channels: int = 16
    stage_channels: tuple[int, ...] = (16, 24, 40, 64)
    stage_strides: tuple[int, ...] = (1, 2, 2, 1)
    head_channels: int = 128
    in_channels: int = 1
    num_classes: int = 10
    block_slots: int = 0  # blocks per stage in the skeleton; 0 = max(depths). Sub-spaces keep their parent's.

    @property
    def num_stages(self) -> int:
        return len(self.stage_channels)

    @property
    def max_depth(self) -> int:
        """Block slots per stage (genes per stage); a stage of depth d uses the first d."""
        return self.block_slots or max(self.depths)

    @property
    def num_slots(self) -> int:
        return self.num_stages * self.max_depth

    def channels(self, width: float) -> dict[str, Any]:
        """Channel counts at a width multiplier: ``stem``, ``stages`` (list) and ``head``."""
        def scale(c: int) -> int:
            return max(1, int(round(c * width)))
        return {"stem": scale(self.stem_channels), "stages": [scale(c) for c in self.stage_channels],
                "head": scale(self.head_channels)}

    # ---- size -------------------------------------------------------------------------------
    def stage_size(self) -> int:
        """Distinct block sequences of one stage: sum over depths d of (kernels x expands) ** d."""
        per_block = len(self.kernels) * len(self.expands)
        return sum(per_block ** d for d in self.depths)

    def size(self, include_width: bool = True, include_resolution: bool = True) -> int:
        """Exact number of distinct subnets (architectures) in the space."""
        n = self.stage_size() ** self.num_stages
        if include_width:
            n *= len(self.widths)
        if include_resolution:
            n *= len(self.resolutions)
        return n

    # ---- special members ------------------------------------------------------------------
    def largest(self) -> "Arch":
        return Arch(max(self.resolutions), max(self.widths), (max(self.depths),) * self.num_stages,
                    (max(self.kernels),) * self.num_slots, (max(self.expands),) * self.num_slots)

    def smallest(self) -> "Arch":
        return Arch(min(self.resolutions), min(self.widths), (min(self.depths),) * self.num_stages,
                    (min(self.kernels),) * self.num_slots, (min(self.expands),) * self.num_slots)

    # ---- sampling and variation -----------------------------------------------------------
    def sample(self, rng: random.Random) -> "Arch":
        """A uniformly random arch: every choice of every dimension is reachable (width 1.0 included)."""
        return Arch(rng.choice(self.resolutions), rng.choice(self.widths),
                    tuple(rng.choice(self.depths) for _ in range(self.num_stages)),
                    tuple(rng.choice(self.kernels) for _ in range(self.num_slots)),
                    tuple(rng.choice(self.expands) for _ in range(self.num_slots)))

    def mutate(self, arch: "Arch", rng: random.Random, prob: float = 0.1,
               resolution_prob: float = 0.5) -> "Arch":
        """Resample each gene with probability ``prob`` (resolution and width with ``resolution_prob``)."""
        def pick(current, choices, p):
            return rng.choice(choices) if rng.random() < p else current
        return Arch(pick(arch.resolution, self.resolutions, resolution_prob),
                    pick(arch.width, self.widths, resolution_prob),
                    tuple(pick(d, self.depths, prob) for d in arch.depths),
                    tuple(pick(k, self.kernels, prob) for k in arch.kernels),
                    tuple(pick(e, self.expands, prob) for e in arch.expands))

    def crossover(self, a: "Arch", b: "Arch", rng: random.Random) -> "Arch":
        """Per-gene coin flip between two parents (every gene of the child comes from a or b)."""
        def flip(x, y):
            return x if rng.random() < 0.5 else y
        return Arch(flip(a.resolution, b.resolution), flip(a.width, b.width),
                    tuple(flip(x, y) for x, y in zip(a.depths, b.depths)),
                    tuple(flip(x, y) for x, y in zip(a.kernels, b.kernels)),
                    tuple(flip(x, y) for x, y in zip(a.expands, b.expands)))

    # ---- validation ---------------------------------------------------------------------------
    def validate(self, arch: "Arch") -> "Arch":
        """Return ``arch`` if it lies in the space, else raise :class:`ArchError` listing the allowed values."""
        def check(name, value, allowed):
            if not any(_same(value, a) for a in allowed):
                raise ArchError(f"{name} {value} is not in the space; allowed values: {list(allowed)}")
        check("resolution", arch.resolution, self.resolutions)
        check("width", arch.width, self.widths)
        if len(arch.depths) != self.num_stages:
            raise ArchError(f"expected {self.num_stages} stages, got {len(arch.depths)}")
        for s, d in enumerate(arch.depths):
            check(f"depth of stage {s + 1}", d, self.depths)
        for name, genes, allowed in (("kernel", arch.kernels, self.kernels), ("expand", arch.expands, self.expands)):
            if len(genes) != self.num_slots:
                raise ArchError(f"expected {self.num_slots} {name} genes, got {len(genes)}")
            for stage, block in arch.active_slots():
                check(f"{name} of stage {stage + 1} block {block + 1}", genes[stage * self.max_depth + block],
                      allowed)
        return arch

    def restrict(self, **choices: tuple) -> "SearchSpace":
        """A sub-space with fewer choices in some dimensions, e.g. ``restrict(kernels=(3,), widths=(0.5,))``.

        Its archs are archs of this space (same skeleton), so the same supernet runs them. Choices outside
        this space, or unknown dimension names, are errors.
        """
        dims = ("resolutions", "widths", "depths", "kernels", "expands")
        for name, values in choices.items():
            if name not in dims:
                raise ArchError(f"unknown dimension {name!r}; choose from {list(dims)}")
            allowed = getattr(self, name)
            bad = [v for v in values if not any(_same(v, a) for a in allowed)]
            if bad or not values:
                raise ArchError(f"{name} {bad or '()'} not in the space; allowed values: {list(allowed)}")
        return replace(self, block_slots=self.max_depth, **{k: tuple(sorted(v)) for k, v in choices.items()})

    def parse(self, text: str) -> "Arch":
        """Parse and validate an arch string; also accepts 'largest' and 'smallest'."""
        if text == "largest":
            return self.largest()
        if text == "smallest":
            return self.smallest()
        return self.validate(Arch.from_string(text, self))

    def describe(self) -> dict[str, Any]:
        """The space as plain data (for ``nas-lab info --json`` and the supernet config)."""
        d = asdict(self)
        d.update(size=self.size(), size_kernel_expand_depth=self.size(False, False),
                 num_blocks_max=self.num_slots)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SearchSpace":
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names})


def _same(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=0, abs_tol=1e-9)


@dataclass(frozen=True, eq=False)
class Arch:
    """One subnet config. Equality and hashing use the canonical string (inactive genes ignored)."""

    resolution: int
    width: float
    depths: tuple[int, ...]
    kernels: tuple[int, ...]
    expands: tuple[int, ...]
    _max_depth: int = field(default=0, repr=False)  # 0 = len(kernels) // len(depths)

    @property
    def max_depth(self) -> int:
        return self._max_depth or len(self.kernels) // len(self.depths)

    def active_slots(self) -> list[tuple[int, int]]:
        """(stage, block) of every active block, in forward order."""
        return [(s, b) for s, d in enumerate(self.depths) for b in range(d)]

    def blocks(self) -> list[tuple[int, int, int, int]]:
        """(stage, block, kernel, expand) of every active block, in forward order."""
        m = self.max_depth
        return [(s, b, self.kernels[s * m + b], self.expands[s * m + b]) for s, b in self.active_slots()]

    def __str__(self) -> str:
        return self.to_string()

    def to_string(self) -> str:
        stages = []
        for s, d in enumerate(self.depths):
            m = self.max_depth
            stages.append("-".join(f"k{self.kernels[s * m + b]}e{self.expands[s * m + b]}" for b in range(d)))
        return f"r{self.resolution}_w{_fmt_width(self.width)}_" + "_".join(stages)

    @classmethod
    def from_string(cls, text: str, space: SearchSpace | None = None) -> "Arch":
        """Parse ``r28_w1.0_k3e4-k5e6_...``; inactive slots are filled with the space's smallest choices."""
        space = space or SearchSpace()
        parts = text.strip().split("_")
        hint = "expected like 'r28_w1.0_k3e4-k5e6_k7e3_k3e3_k5e4' (resolution, width, one group per stage)"
        if len(parts) != 2 + space.num_stages or not parts[0].startswith("r") or not parts[1].startswith("w"):
            raise ArchError(f"malformed arch string {text!r}: {hint}")
        try:
            resolution, width = int(parts[0][1:]), float(parts[1][1:])
            m = space.max_depth
            kernels = [min(space.kernels)] * space.num_slots
            expands = [min(space.expands)] * space.num_slots
            depths = []
            for s, group in enumerate(parts[2:]):
                blocks = group.split("-")
                if len(blocks) > m:
                    raise ArchError(f"stage {s + 1} has {len(blocks)} blocks; allowed depths: {list(space.depths)}")
                depths.append(len(blocks))
                for b, tok in enumerate(blocks):
                    k, e = tok.removeprefix("k").split("e")
                    if not tok.startswith("k"):
                        raise ValueError(tok)
                    kernels[s * m + b], expands[s * m + b] = int(k), int(e)
        except ArchError:
            raise
        except ValueError as err:
            raise ArchError(f"malformed arch string {text!r} ({err}): {hint}") from None
        return cls(resolution, width, tuple(depths), tuple(kernels), tuple(expands), m)

    def to_dict(self) -> dict[str, Any]:
        return {"resolution": self.resolution, "width": self.width, "depths": list(self.depths),
                "kernels": list(self.kernels), "expands": list(self.expands)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Arch":
        """Build from the dict form (unknown keys are an error, not silently ignored)."""
        keys = {"resolution", "width", "depths", "kernels", "expands"}
        if set(d) != keys:
            raise ArchError(f"arch dict keys {sorted(d)} differ from the expected {sorted(keys)}")
        return cls(int(d["resolution"]), float(d["width"]), tuple(d["depths"]), tuple(d["kernels"]),
                   tuple(d["expands"]))

    def __eq__(self, other: object) -> bool:
        # duck-typed, so archs stay comparable after ``importlib.reload(nas_lab.space)`` (graders do that)
        return callable(getattr(other, "to_string", None)) and self.to_string() == other.to_string()

    def __hash__(self) -> int:
        return hash(self.to_string())


def _fmt_width(w: float) -> str:
    return f"{w:g}" if float(w) != int(w) else f"{w:.1f}"


def unique(archs: Iterable[Arch]) -> list[Arch]:
    """Drop duplicates, keeping the first occurrence."""
    seen, out = set(), []
    for a in archs:
        if a not in seen:
            seen.add(a)
            out.append(a)
    return out
