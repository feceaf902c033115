"""Visibility targets of the JPM groups: exact on hand-built boxes, through the JPM's own token order."""
import pytest
import torch
from torch import nn

from lfem_plugin.models.jpm import JigsawPatchModule, group_token_indices
from lfem_plugin.models.visibility import TokenGeometry, box_mask, group_visibility, patch_visibility

# 64x32 input, 16-px patches, stride 8: a 7 x 3 grid (21 patches), 4 groups of 5 (one token left over).
TINY = {"img_size": (64, 32), "patch_size": 16, "stride": 8, "num_groups": 4}
TOP_BAND = (0, 0, 16, 32)  # hides pixel rows 0-15: patch row 0 fully, patch row 1 (pixels 8-23) half


def test_patch_visibility_counts_visible_area():
    vis = patch_visibility(box_mask(torch.tensor([TOP_BAND]), 64, 32), 16, 8)
    assert vis.shape == (1, 21)
    assert vis[0].tolist() == [0.0] * 3 + [0.5] * 3 + [1.0] * 15
    # a 4x4 box in the corner: patch (0, 0) loses 16 of its 256 pixels; nothing else is touched
    vis = patch_visibility(box_mask(torch.tensor([(0, 0, 4, 4)]), 64, 32), 16, 8)
    assert vis[0, 0].item() == pytest.approx(1 - 16 / 256) and (vis[0, 1:] == 1).all()


def test_stripes_targets_exact():
    """rearrange false: groups are tokens 0-4, 5-9, 10-14, 15-19 (row-major)."""
    targets = TokenGeometry(**TINY, rearrange=False).from_boxes([TOP_BAND])
    assert targets[0].tolist() == pytest.approx([(0 * 3 + 0.5 * 2) / 5, (0.5 + 4) / 5, 1.0, 1.0])


def test_shift_shuffle_targets_exact():
    """rearrange true (shift 5 = rotate by 4, N=21 odd so token 2 is appended again, two chunks interleaved): the
    token order is 4,15,5,16,6 | 17,7,18,8,19 | 9,20,10,0,11 | 1,12,2,13,3 | 14,2 (by hand)."""
    assert group_token_indices(21, 4, True) == [[4, 15, 5, 16, 6], [17, 7, 18, 8, 19], [9, 20, 10, 0, 11],
                                                [1, 12, 2, 13, 3]]
    targets = TokenGeometry(**TINY, rearrange=True).from_boxes([TOP_BAND])
    assert targets[0].tolist() == pytest.approx([(0.5 + 1 + 0.5 + 1 + 1) / 5, 1.0, 4 / 5, (0 + 1 + 0 + 1 + 0.5) / 5])


def test_row_order_targets_differ_from_shuffled_ones():
    """Pitfall: comparing shuffled tokens with row-order targets. The same box gives other targets per order, and
    the shuffled ones are the JPM's (next test)."""
    stripes = TokenGeometry(**TINY, rearrange=False).from_boxes([TOP_BAND])
    shuffled = TokenGeometry(**TINY, rearrange=True).from_boxes([TOP_BAND])
    assert not torch.allclose(stripes, shuffled)


class _MeanOfPatches(nn.Module):
    """A stand-in transformer block: the output token 0 is the mean of the group's patch tokens."""

    def forward(self, tokens):
        return torch.cat([tokens[:, 1:].mean(1, keepdim=True), tokens[:, 1:]], dim=1)


@pytest.mark.parametrize("rearrange", [True, False])
@pytest.mark.parametrize("grid", [(7, 3), (22, 11), (6, 4)])
def test_targets_are_the_jpm_groups_own_means(rearrange, grid):
    """The JPM itself, fed each patch's visible fraction as its token, returns the targets as its local features:
    the targets and the gates see the same tokens, whatever the order."""
    rows, cols = grid
    geometry = TokenGeometry(((rows - 1) * 8 + 16, (cols - 1) * 8 + 16), 16, 8, 4, rearrange)
    boxes = torch.tensor([(5, 3, 30, 11), (0, 0, 0, 0), (17, 0, 9, 40)])
    patch_vis = patch_visibility(box_mask(boxes, *geometry.img_size), 16, 8)
    assert patch_vis.shape[1] == rows * cols
    jpm = JigsawPatchModule(_MeanOfPatches(), nn.Identity(), 4, rearrange)
    tokens = torch.cat([torch.zeros(3, 1, 1), patch_vis.unsqueeze(-1)], dim=1)
    _, locals_ = jpm(tokens)
    assert torch.allclose(torch.cat(locals_, dim=1), geometry.from_boxes(boxes), atol=1e-6)
    assert geometry.from_boxes(boxes)[1].tolist() == [1.0] * 4  # no box: everything visible


def test_stripes_are_horizontal_bands_top_to_bottom():
    """``lfem.rearrange false``: each group is a run of consecutive row-major tokens, groups ordered top to bottom
    (at 22 x 11 a group holds 60 tokens, so a boundary can fall inside a row, as in TransReID)."""
    groups = group_token_indices(22 * 11, 4, rearrange=False)
    assert all(g == list(range(g[0], g[0] + 60)) for g in groups)
    rows = [(min(g) // 11, max(g) // 11) for g in groups]
    assert rows == [(0, 5), (5, 10), (10, 16), (16, 21)]


def test_geometry_of_a_backbone_and_bad_inputs():
    from lfem_plugin.models.backbones import build_backbone
    backbone = build_backbone("vit_tiny_test", img_size=(64, 32), stride=8, rearrange=False)
    assert TokenGeometry.of(backbone) == TokenGeometry((64, 32), 16, 8, 4, False, 5, 2)
    with pytest.raises(ValueError, match="no JPM"):
        TokenGeometry.of(build_backbone("vit_tiny_test", img_size=(64, 32), stride=8, jpm=False))
    with pytest.raises(ValueError, match="mask of size"):
        TokenGeometry(**TINY, rearrange=True).from_mask(torch.ones(1, 32, 32))
    with pytest.raises(ValueError, match="smaller than the patch"):
        TokenGeometry((8, 8), 16, 8, 4, True)
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        patch_visibility(torch.ones(64, 32), 16, 8)


def test_group_visibility_of_a_clean_view_is_one():
    assert group_visibility(torch.ones(2, 21), 4, True).tolist() == [[1.0] * 4] * 2
