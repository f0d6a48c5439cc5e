"""Draw a subnet of the search space as a row of blocks (matplotlib only, no graphviz).

Each active MBConv block is a box: its height grows with the expand ratio, its colour with the kernel
size, and it is labelled ``k5 e4``. Stages are separated by a gap and labelled with their channels and
stride, so a glance shows where a subnet spends its depth and width.
"""

from __future__ import annotations

from typing import Any

from nas_lab.space import Arch, SearchSpace

KERNEL_COLOURS = {3: "#9ecae1", 5: "#4292c6", 7: "#08519c"}


def draw_arch(arch: Arch, space: SearchSpace | None = None, ax: Any = None, title: str | None = None) -> Any:
    """Draw ``arch`` on ``ax`` (a new figure if None) and return the axes."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    space = space or SearchSpace()
    space.validate(arch)
    channels = space.channels(arch.width)
    blocks = arch.blocks()  # (stage, block, kernel, expand) of every active block
    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 + 0.75 * (len(blocks) + 2 + space.num_stages), 2.6))
    max_e = max(space.expands)
    x = 0.0

    def box(label: str, height: float, colour: str, text_colour: str = "black") -> None:
        nonlocal x
        ax.add_patch(Rectangle((x, -height / 2), 0.6, height, facecolor=colour, edgecolor="black", lw=0.8))
        ax.text(x + 0.3, 0, label, ha="center", va="center", fontsize=7, rotation=90, color=text_colour)
        x += 0.75

    box(f"stem {channels['stem']}", 0.5, "#dddddd")
    for stage in range(space.num_stages):
        x += 0.25
        start = x
        for s, _, kernel, expand in blocks:
            if s == stage:
                box(f"k{kernel} e{expand}", 0.4 + 0.6 * expand / max_e, KERNEL_COLOURS.get(kernel, "#777777"),
                    "white" if kernel >= 5 else "black")
        ax.text((start + x - 0.15) / 2, -0.62, f"{channels['stages'][stage]}ch /{space.stage_strides[stage]}",
                ha="center", va="top", fontsize=7)
    x += 0.25
    box(f"head {channels['head']}", 0.5, "#dddddd")
    box("pool+fc", 0.3, "#eeeeee")
    ax.set_xlim(-0.2, x)
    ax.set_ylim(-0.85, 0.6)
    ax.axis("off")
    ax.set_title(title or f"{arch}  ({arch.resolution}x{arch.resolution} input, width x{arch.width:g})", fontsize=8)
    return ax
