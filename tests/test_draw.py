"""draw_arch: one box per active block, labelled with its kernel and expand; bad archs are refused."""

import random

import matplotlib
import pytest

matplotlib.use("Agg")

from nas_lab.draw import draw_arch  # noqa: E402
from nas_lab.space import Arch, ArchError, SearchSpace  # noqa: E402

SPACE = SearchSpace()


@pytest.mark.parametrize("seed", range(3))
def test_one_labelled_box_per_block(seed):
    arch = SPACE.sample(random.Random(seed))
    ax = draw_arch(arch, SPACE)
    labels = [t.get_text() for t in ax.texts]
    blocks = [f"k{k} e{e}" for _, _, k, e in arch.blocks()]
    assert [label for label in labels if label.startswith("k")] == blocks
    assert len(ax.patches) == len(blocks) + 3  # stem, head, pool+fc
    assert str(arch) in ax.get_title()


def test_invalid_arch_is_refused():
    bad = Arch(32, 1.0, (1, 1, 1, 1), (3,) * 12, (3,) * 12)
    with pytest.raises(ArchError, match="resolution"):
        draw_arch(bad, SPACE)
