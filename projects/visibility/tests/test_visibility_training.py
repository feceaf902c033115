"""The visibility-aware LFEM in training: views that report what they hide, pasted occluders, gate supervision
(and the three ways it is commonly broken), whole-local gating, and the model at test time (one vector out)."""
import csv
import math
import types

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.random_erasing import RandomErasing
from torch import nn
from torch.utils.data import default_collate

from lfem_plugin import config as C
from lfem_plugin.tools import train as T
from lfem_plugin.models.jpm import JigsawPatchModule, group_token_indices
from lfem_plugin.models.interface import stack_views
from lfem_plugin.models.visibility import TokenGeometry, box_mask
from lfem_plugin.registry import MODELS
from lfem_visibility.block import VisibilityLFEM as LFEM
from lfem_visibility.engine import VisibilityEngine
from lfem_visibility.losses import GateVisibilityLoss, TokenVisibilityLoss
from lfem_visibility.occluders import MarkedErasing, build_visibility_transform, paste_occluders, split_views
from tests.helpers import CPU_CONFIG, SMALL, TR


def _prepared(engine, data, pids):
    """The engine's batch as the old ``_views`` gave it: (images, visibility, token targets)."""
    batch = VisibilityEngine.prepare_batch(engine, dict(data, pid=pids, camid=torch.zeros_like(pids)))
    return batch.images, batch.extras.get("visibility"), batch.extras.get("token_visibility")

GEOMETRY = TokenGeometry((64, 32), 16, 8, 4, rearrange=True)


def _eraser(p):
    return RandomErasing(probability=p, mode="pixel", max_count=1, device="cpu")


# ---- views that know what they hide --------------------------------------------------------------------------
def test_marked_erasing_reports_exactly_the_filled_rectangle():
    img = torch.full((3, 64, 32), 0.25)
    out, box = MarkedErasing(_eraser(1.0), always=True)(img)
    top, left, h, w = box.tolist()
    changed = (out != 0.25).any(0)
    assert h * w > 0 and changed[top:top + h, left:left + w].all() and changed.sum() == h * w
    assert torch.equal(img, torch.full((3, 64, 32), 0.25))  # the input is not modified
    out, box = MarkedErasing(_eraser(0.0))(img)
    assert box.tolist() == [0, 0, 0, 0] and torch.equal(out, img)
    with pytest.raises(ValueError, match="max_count=1"):
        MarkedErasing(RandomErasing(max_count=2, device="cpu"))


def test_views_return_their_own_targets_and_collate_like_torchreid():
    transform = build_visibility_transform(GEOMETRY, 64, 32, padding=4)
    items = [transform(Image.new("RGB", (32, 64), (i * 40, 90, 10))) for i in range(4)]
    batch = default_collate(items)  # what torchreid's DataLoader does with a dataset item's img
    views, visibility, boxes = split_views(batch)
    assert [v.shape for v in views] == [(4, 3, 64, 32)] * 3
    assert visibility.shape == (4, 3, 4) and boxes.shape == (4, 3, 4)
    for b in range(4):
        for v in range(3):
            assert torch.allclose(visibility[b, v], GEOMETRY.from_boxes(boxes[b, v:v + 1])[0])
    assert (boxes[:, 1, 2] * boxes[:, 1, 3] > 0).all() and (visibility[:, 1] < 1).any(1).all()  # erased: always
    assert (boxes[:, 2] == 0).all() and (visibility[:, 2] == 1).all()  # cropped: hides nothing
    assert "VisibilityMultiView" in repr(transform) and "MarkedErasing" in repr(transform)
    assert split_views([views[0]])[1] is None and len(split_views(views[0])[0]) == 1  # plain transforms


def test_a_view_of_another_size_than_the_model_is_refused():
    transform = build_visibility_transform(TokenGeometry((96, 80), 16, 16, 4, True), 64, 32)
    with pytest.raises(ValueError, match=r"view original is \(64, 32\) but the model's input is \(96, 80\)"):
        transform(Image.new("RGB", (32, 64)))


# ---- pasted occluders ---------------------------------------------------------------------------------------
def _batch(views=2, batch=6):
    images = torch.arange(views * batch, dtype=torch.float32).view(views, batch, 1, 1, 1).expand(-1, -1, 3, 8, 4)
    boxes = torch.zeros(batch, views, 4, dtype=torch.long)
    boxes[:, 1] = torch.tensor([2, 1, 3, 2])  # the second view hides rows 2-4, columns 1-2
    return images.clone(), boxes, torch.tensor([0, 0, 1, 1, 2, 2])


def test_paste_fills_the_hidden_rectangle_from_another_identity_only():
    images, boxes, pids = _batch()
    out = paste_occluders(images, boxes, pids)
    assert torch.equal(out[0], images[0])  # the first view hides nothing
    outside = torch.ones(8, 4, dtype=torch.bool)
    outside[2:5, 1:3] = False
    assert torch.equal(out[1][..., outside], images[1][..., outside])
    donors = out[1, :, 0, 2, 1].long()  # the pasted value is the donor's index in the first view
    assert (out[1, :, :, 2:5, 1:3] == donors.view(-1, 1, 1, 1)).all()
    assert (pids[donors] != pids).all()


def test_paste_is_deterministic_under_a_seed_and_draws_anew_without():
    images, boxes, pids = _batch()
    torch.manual_seed(3)
    first = paste_occluders(images, boxes, pids)
    torch.manual_seed(3)
    assert torch.equal(paste_occluders(images, boxes, pids), first)
    draws = {tuple(paste_occluders(images, boxes, pids)[1, :, 0, 2, 1].tolist()) for _ in range(10)}
    assert len(draws) > 1


def test_paste_leaves_an_image_without_another_identity_and_checks_shapes():
    images, boxes, _ = _batch()
    assert torch.equal(paste_occluders(images, boxes, torch.zeros(6, dtype=torch.long)), images)
    with pytest.raises(ValueError, match=r"expected \(6, 2, 4\)"):
        paste_occluders(images, boxes[:, :1], torch.zeros(6, dtype=torch.long))


def _ramp_batch(batch=4, height=32, width=16):
    """One view hiding a 6 x 4 rectangle at (10, 5); image b is the linear ramp 100 b + 2 row + col (bilinear
    resampling reproduces a linear function exactly inside the image)."""
    rows = torch.arange(height, dtype=torch.float32).view(-1, 1)
    cols = torch.arange(width, dtype=torch.float32).view(1, -1)
    images = torch.stack([100.0 * b + 2 * rows + cols for b in range(batch)]).view(1, batch, 1, height, width)
    boxes = torch.tensor([10, 5, 6, 4]).repeat(batch, 1, 1)
    return images, boxes, torch.arange(batch)


@pytest.mark.parametrize("scale", [(1.0, 1.0), (2.0, 2.0), (0.5, 0.5), (0.5, 2.0)])
def test_resized_paste_shows_the_drawn_piece_of_the_donor(scale):
    """paste_resized, replayed draw for draw: hidden pixel (i, j) shows the donor (another identity) at row
    src_top + (i + 0.5 - top) s_h - 0.5 and column src_left + (j + 0.5 - left) s_w - 0.5 (pixel-centre coordinates)
    of the drawn source rectangle, sides s = log-uniform in ``scale`` each, placed uniformly inside the image; on
    ramps bilinear sampling gives that value exactly (border pixels clamp); outside the rectangle nothing changes."""
    images, boxes, pids = _ramp_batch()
    out = paste_occluders(images, boxes, pids, resize=True, scale=scale, generator=torch.Generator().manual_seed(5))
    replay = torch.Generator().manual_seed(5)
    scores = torch.rand(4, 4, generator=replay)
    donors = scores.masked_fill(pids.view(1, -1) == pids.view(-1, 1), -1.0).argmax(1)
    draws = torch.rand(4, 4, generator=replay)
    lo, hi = torch.log(torch.tensor(scale)).tolist()
    size, hw = torch.tensor([32.0, 16.0]), torch.tensor([6.0, 4.0])
    src_hw = torch.minimum(hw * torch.exp(lo + (hi - lo) * draws[:, :2]), size)
    src_top_left, s = draws[:, 2:] * (size - src_hw), src_hw / hw
    inside = torch.zeros(32, 16, dtype=torch.bool)
    inside[10:16, 5:9] = True
    assert torch.equal(out[..., ~inside], images[..., ~inside])
    rows, cols = torch.arange(10, 16, dtype=torch.float32), torch.arange(5, 9, dtype=torch.float32)
    for b in range(4):
        y = (src_top_left[b, 0] + (rows + 0.5 - 10) * s[b, 0] - 0.5).clamp(0, 31)
        x = (src_top_left[b, 1] + (cols + 0.5 - 5) * s[b, 1] - 0.5).clamp(0, 15)
        expected = 100.0 * donors[b] + 2 * y.view(-1, 1) + x.view(1, -1)
        torch.testing.assert_close(out[0, b, 0, 10:16, 5:9], expected, atol=1e-3, rtol=0)
        assert pids[donors[b]] != pids[b]


def test_resized_paste_draws_its_places_under_the_seed_and_keeps_the_plain_paste_draws():
    images, boxes, pids = _ramp_batch()
    torch.manual_seed(0)
    first = paste_occluders(images, boxes, pids, resize=True)
    torch.manual_seed(0)
    assert torch.equal(paste_occluders(images, boxes, pids, resize=True), first)
    assert len({paste_occluders(images, boxes, pids, resize=True)[0, 0, 0, 10, 5].item() for _ in range(10)}) > 1
    torch.manual_seed(0)
    same_place = paste_occluders(images, boxes, pids)  # 'paste': the donor's own rectangle, the same donor draw
    assert torch.equal(same_place[0, :, 0, 10:16, 5:9] // 100, first[0, :, 0, 10:16, 5:9] // 100)
    assert torch.equal(same_place[0, :, 0, 10:16, 5:9] % 100, images[0, :, 0, 10:16, 5:9] % 100)
    with pytest.raises(ValueError, match="scale"):
        paste_occluders(images, boxes, pids, resize=True, scale=(2.0, 1.0))


# ---- gate supervision: one sigmoid, its own view, the JPM's token order --------------------------------------
def test_gate_loss_is_bce_with_logits_by_hand():
    logits = torch.tensor([[0.0, 2.0]])
    loss = GateVisibilityLoss(0.5)(logits, torch.tensor([[[1.0, 0.25]]]))
    expected = (math.log(2) + (2 - 0.5 + math.log(1 + math.exp(-2)))) / 2
    assert loss.item() == pytest.approx(0.5 * expected, rel=1e-6)
    with pytest.raises(ValueError, match="expected \\(2, 2\\)"):
        GateVisibilityLoss()(logits, torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="no LFEM"):
        GateVisibilityLoss()(None, torch.ones(1, 1, 2))


def test_the_sigmoid_is_applied_once_pitfall_1():
    """Pitfall: a sigmoid applied before a with-logits loss (two sigmoids). The model's gate logits are the relation
    itself (gate = sigmoid(logit)), and the loss's gradient on them is (sigmoid(z) - t) / n, as for one sigmoid."""
    lfem = LFEM(4, 4)
    f_l, f_g = torch.randn(3, 4), torch.randn(3, 4)
    out = lfem(f_l, f_g)
    relation = (lfem.proj_local_key(f_l) * lfem.proj_global(f_g)).sum(-1) / 2
    assert torch.allclose(out.logit, relation) and torch.allclose(out.gate, torch.sigmoid(relation))
    model = MODELS.get("lfem_vit_vis_tiny")(num_classes=4).train()
    feats = model(torch.randn(3, 2, 3, 64, 32), branch_features=True)
    assert feats.gate_logits.shape == (6, 4)
    assert torch.allclose(torch.sigmoid(feats.gate_logits[:2]), feats.gates)
    z = feats.gate_logits.detach().requires_grad_()
    targets = torch.rand(2, 3, 4)
    (grad,) = torch.autograd.grad(GateVisibilityLoss()(z, targets), z)
    assert torch.allclose(grad, (torch.sigmoid(z) - targets.transpose(0, 1).reshape(6, 4)) / 24, atol=1e-7)


def test_each_view_is_supervised_by_its_own_box_pitfall_2():
    """Pitfall: the original view's gates trained with the erased view's box. Views of an image carry codes; the
    engine's views and targets, the model's stacking and the loss's reordering must pair each row with its own
    view: logits equal to each row's own target give zero gradient, and any other pairing does not."""
    views = [torch.full((3, 3, 64, 32), float(v)) + torch.arange(3.0).view(3, 1, 1, 1) * 10 for v in range(3)]
    codes = torch.tensor([[[(10 * b + v + 1) / 40] * 4 for v in range(3)] for b in range(3)])  # (B, V, K)
    data = {"img": {"views": views, "visibility": codes, "boxes": torch.zeros(3, 3, 4, dtype=torch.long)}}
    engine = types.SimpleNamespace(device=torch.device("cpu"), gate_loss=GateVisibilityLoss(), token_loss=None,
                                   occluder="noise")
    images, visibility, _ = _prepared(engine, data, torch.arange(3))
    rows, _ = stack_views(images)  # the model's rows: view-major
    own = (rows[:, 0, 0, 0] + 1) / 40  # row v*B + b holds pixel 10 b + v, its target is (10 b + v + 1) / 40
    z = torch.logit(own).unsqueeze(1).repeat(1, 4).requires_grad_()
    (grad,) = torch.autograd.grad(GateVisibilityLoss()(z, visibility), z)
    assert grad.abs().max() < 1e-7
    swapped = visibility[:, [1, 0, 2]]  # the original view's gates against the erased view's targets
    (grad,) = torch.autograd.grad(GateVisibilityLoss()(z, swapped), z)
    assert grad.abs().max() > 1e-4  # (1/40) / 36 per mispaired entry


def test_missing_targets_are_a_clear_error():
    engine = types.SimpleNamespace(device=torch.device("cpu"), gate_loss=GateVisibilityLoss(), token_loss=None,
                                   occluder="noise")
    with pytest.raises(ValueError, match="needs visibility targets"):
        _prepared(engine, {"img": [torch.zeros(2, 3, 64, 32)]}, torch.arange(2))


# ---- whole-local gating ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("scope", ["refined", "local"])
def test_gate_scope_fusion_by_hand(scope):
    torch.manual_seed(0)
    lfem = LFEM(4, 4, gate_scope=scope)
    f_l, f_g = torch.randn(2, 4), torch.randn(2, 4)
    out = lfem(f_l, f_g)
    r = out.gate.unsqueeze(-1)
    refined = r * lfem.proj_out(lfem.proj_local_value(f_l))
    expected = f_l + f_g + refined if scope == "refined" else f_g + r * f_l + refined
    assert torch.allclose(out.fused, expected) and torch.allclose(out.refined, refined)
    with pytest.raises(ValueError, match="gate_scope"):
        LFEM(4, gate_scope="all")


# ---- a gate that reads the group's patch tokens -----------------------------------------------------------------
def test_token_gate_by_hand_and_paper_gate_at_init():
    torch.manual_seed(0)
    paper, tokens_gate = LFEM(4, 4), LFEM(4, 4, gate_input="relation_tokens")
    missing = tokens_gate.load_state_dict(paper.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["token_score.bias", "token_score.weight"]
    f_l, f_g, t = torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 3, 4)  # 3 patch tokens per group
    # w and b start at 0: the gate starts as the paper's
    assert torch.equal(tokens_gate(f_l, f_g, t).logit, paper(f_l, f_g).logit)
    with torch.no_grad():
        tokens_gate.token_score.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0]]))
        tokens_gate.token_score.bias.fill_(0.25)
    relation = (tokens_gate.proj_local_key(f_l) * tokens_gate.proj_global(f_g)).sum(-1) / 2  # 1/sqrt(4)
    per_token = t[..., 0] - 2 * t[..., 1] + 0.5 * t[..., 2] + 0.25  # (2, 3)
    expected = relation + per_token.mean(1)
    out = tokens_gate(f_l, f_g, t)
    assert torch.allclose(out.logit, expected) and torch.allclose(out.gate, torch.sigmoid(expected))
    assert torch.allclose(out.aux, per_token) and paper(f_l, f_g).aux is None
    assert torch.equal(paper(f_l, f_g, t).logit, paper(f_l, f_g).logit)  # the paper's gate ignores tokens
    for bad in (None, t.mean(1)):
        with pytest.raises(ValueError, match="needs the group's patch tokens"):
            tokens_gate(f_l, f_g, bad)
    with pytest.raises(ValueError, match="gate_input"):
        LFEM(4, gate_input="tokens")


def test_mlp_token_gate_by_hand_starts_as_the_paper_and_trains_both_layers(tmp_path):
    """'relation_tokens_mlp': s_j = w . GELU(W_t t_j + c) + b; w, b start at 0 (the paper's gate), the linear
    reading's state dict has no hidden layer (its checkpoints load unchanged), the token BCE trains both layers."""
    torch.manual_seed(0)
    paper, mlp = LFEM(4, 4), LFEM(4, 4, gate_input="relation_tokens_mlp")
    assert "token_hidden.0.weight" not in LFEM(4, 4, gate_input="relation_tokens").state_dict()
    missing = mlp.load_state_dict(paper.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["token_hidden.0.bias", "token_hidden.0.weight", "token_score.bias",
                               "token_score.weight"]
    f_l, f_g, t = torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 3, 4)
    assert torch.equal(mlp(f_l, f_g, t).logit, paper(f_l, f_g).logit)
    with torch.no_grad():
        mlp.token_score.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0]]))
        mlp.token_score.bias.fill_(0.25)
    hidden = torch.nn.functional.gelu(t @ mlp.token_hidden[0].weight.T + mlp.token_hidden[0].bias)
    per_token = hidden @ torch.tensor([1.0, -2.0, 0.5, 0.0]) + 0.25
    out = mlp(f_l, f_g, t)
    assert torch.allclose(out.aux, per_token, atol=1e-6)
    relation = (mlp.proj_local_key(f_l) * mlp.proj_global(f_g)).sum(-1) / 2
    assert torch.allclose(out.logit, relation + per_token.mean(1), atol=1e-6)
    loss = TokenVisibilityLoss()(out.aux.unsqueeze(1), torch.rand(2, 1, 1, 3))
    grads = torch.autograd.grad(loss, [mlp.token_hidden[0].weight, mlp.token_score.weight])
    assert all(g.abs().max() > 0 for g in grads)
    cfg = C.load_config(None, ["model.name", "lfem_vit_vis_tokens_tiny", "lfem.gate_input", "relation_tokens_mlp"])
    T.check_run_config(cfg)  # token supervision is allowed with the MLP score
    model = T.family(cfg).build_model(cfg, num_classes=4, num_cameras=2)
    assert all(isinstance(lfem.token_hidden[1], nn.GELU) for lfem in model.fusion.lfems)
    from lfem_plugin.tools.inference import export_onnx
    report = export_onnx(model.eval(), str(tmp_path / "mlp.onnx"), 64, 32, with_camera=True)
    assert report["max_abs_diff"] <= 1e-4  # the test feature stays one vector, exported as for the linear score


@pytest.mark.parametrize("rearrange", [True, False])
def test_each_groups_tokens_are_its_own_branch_output(rearrange):
    """A group's tokens are the local branch's output patch tokens of that group, in the JPM's order (the same block
    call that gives the local feature), and changing one group's input tokens changes no other group's."""
    torch.manual_seed(0)
    block = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    jpm = JigsawPatchModule(block, nn.LayerNorm(8), num_groups=4, rearrange=rearrange).eval()
    tokens = torch.randn(2, 1 + 21, 8)
    global_feat, local_feats, group_tokens = jpm.forward_with_tokens(tokens)
    plain_global, plain_locals = jpm(tokens)
    assert torch.equal(global_feat, plain_global) and all(map(torch.equal, local_feats, plain_locals))
    groups = group_token_indices(21, 4, rearrange)
    for k, ids in enumerate(groups):
        out = jpm.local_branch.norm(jpm.local_branch.block(torch.cat([tokens[:, :1], tokens[:, 1:][:, ids]], 1)))
        assert torch.allclose(out[:, 0], local_feats[k], atol=1e-6)
        assert torch.allclose(out[:, 1:], group_tokens[k], atol=1e-6) and group_tokens[k].shape == (2, 5, 8)
    changed = tokens.clone()
    changed[:, 1 + groups[2][0]] += 5.0
    moved = [not torch.allclose(a, b) for a, b in zip(group_tokens, jpm.forward_with_tokens(changed)[2])]
    assert moved == [False, False, True, False]


@pytest.mark.parametrize("scope", ["refined", "local"])
def test_gate_trained_by_visibility_only_gets_no_identity_gradient(scope):
    """gate_grad 'visibility': the same forward values, no gradient from a loss on the fused feature into the gate's
    parameters (W_l1, W_g, w, b) while f''s own projections still get one; the gate's BCE still trains them."""
    torch.manual_seed(0)
    both = LFEM(4, 4, gate_scope=scope, gate_input="relation_tokens")
    vis = LFEM(4, 4, gate_scope=scope, gate_input="relation_tokens", gate_grad="visibility")
    vis.load_state_dict(both.state_dict())
    f_l, f_g, t = torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 3, 4)
    a, b = both(f_l, f_g, t), vis(f_l, f_g, t)
    assert torch.equal(a.fused, b.fused) and torch.equal(a.logit, b.logit)
    gate_params = [vis.proj_local_key.weight, vis.proj_global.weight, vis.token_score.weight, vis.token_score.bias]
    grads = torch.autograd.grad(b.fused.square().sum(), gate_params + [vis.proj_out.weight], allow_unused=True)
    assert all(g is None or g.abs().max() == 0 for g in grads[:4]) and grads[4].abs().max() > 0
    grads = torch.autograd.grad(a.fused.square().sum(), [both.proj_local_key.weight, both.token_score.weight])
    assert all(g.abs().max() > 0 for g in grads)  # the paper's reading: the identity losses train the gate
    grads = torch.autograd.grad(GateVisibilityLoss()(b.logit.unsqueeze(1), torch.rand(2, 1, 1)), gate_params)
    assert all(g.abs().max() > 0 for g in grads)
    with pytest.raises(ValueError, match="gate_grad"):
        LFEM(4, gate_grad="none")


def test_the_token_gate_key_reaches_the_model_and_is_trained_by_the_gate_loss():
    cfg = C.load_config(None, ["model.name", "lfem_vit_vis_tiny", "lfem.gate_input", "relation_tokens"])
    assert C.load_config(None, ["model.name", "lfem_vit_vis_tiny"]).lfem.gate_input == "relation"
    model = T.family(cfg).build_model(cfg, num_classes=4, num_cameras=2)  # the config's path to the builder
    assert all(lfem.gate_input == "relation_tokens" for lfem in model.fusion.lfems)
    torch.manual_seed(0)
    images = torch.randn(3, 2, 3, 64, 32)
    out = model.train()(list(images), torch.tensor([0, 1]), branch_features=True)
    GateVisibilityLoss(1.0)(out.gate_logits, torch.rand(2, 3, 4)).backward()
    assert all(lfem.token_score.weight.grad.abs().sum() > 0 for lfem in model.fusion.lfems)
    assert out.aux.shape == (6, 4, 5)  # 3 views x 2 images, 4 groups of 5 tokens (7 x 3 grid)
    # the group's gate logit holds the mean of its tokens' scores (checked in the by-hand test above)


def test_token_targets_are_the_patches_of_each_group_in_jpm_order():
    """Per-token targets: the patch visible fractions of TOP_BAND (rows 0-15 of 64x32, 7 x 3 grid at stride 8:
    patch row 0 hidden, row 1 half) in each group's token order; their group means are the group targets."""
    for rearrange in (False, True):
        geometry = TokenGeometry((64, 32), 16, 8, 4, rearrange=rearrange)
        tokens = geometry.tokens_from_boxes([(0, 0, 16, 32)])
        patch = [0.0] * 3 + [0.5] * 3 + [1.0] * 15
        expected = [[patch[i] for i in ids] for ids in group_token_indices(21, 4, rearrange)]
        assert tokens[0].tolist() == expected
        assert torch.allclose(tokens.mean(-1), geometry.from_boxes([(0, 0, 16, 32)]))


def test_token_loss_pairs_each_row_with_its_own_views_tokens():
    """As pitfall 2 for the gate: row v*B + b of the token scores is scored against view v of image b; logits equal
    to their own targets give zero gradient, a swap of views does not; a wrong shape is refused."""
    targets = torch.rand(2, 3, 4, 5) * 0.9 + 0.05  # (B, V, K, n)
    z = torch.logit(targets.transpose(0, 1).reshape(6, 4, 5)).requires_grad_()
    (grad,) = torch.autograd.grad(TokenVisibilityLoss()(z, targets), z)
    assert grad.abs().max() < 1e-7
    (grad,) = torch.autograd.grad(TokenVisibilityLoss()(z, targets[:, [1, 0, 2]]), z)
    assert grad.abs().max() > 1e-4
    by_hand = torch.nn.functional.binary_cross_entropy_with_logits(z, targets.transpose(0, 1).reshape(6, 4, 5))
    assert torch.allclose(TokenVisibilityLoss(2.0)(z, targets), 2 * by_hand)
    with pytest.raises(ValueError, match="do not match"):
        TokenVisibilityLoss()(z[:, :, :4], targets)
    with pytest.raises(ValueError, match="relation_tokens"):
        TokenVisibilityLoss()(None, targets)


def test_the_paper_keys_stay_off_and_the_vis_name_turns_every_part_on():
    paper = C.load_config(None, ["model.name", "lfem_vit"])
    assert (paper.lfem.gate_supervision, paper.lfem.occluder, paper.lfem.gate_scope, paper.lfem.rearrange) == \
        (0.0, "noise", "refined", True)
    for name in ("lfem_vit_vis", "lfem_vit_vis_tiny"):
        cfg = C.load_config(None, ["model.name", name])
        assert (cfg.lfem.gate_supervision, cfg.lfem.occluder, cfg.lfem.gate_scope, cfg.lfem.rearrange) == \
            (1.0, "paste", "local", False)
    model = MODELS.get("lfem_vit_vis_tiny")(num_classes=4)
    assert model.backbone.jpm.rearrange is False and model.fusion.lfems[0].gate_scope == "local"
    for name in ("lfem_vit_vis_tokens", "lfem_vit_vis_tokens_tiny"):
        cfg = C.load_config(None, ["model.name", name])
        assert (cfg.lfem.gate_supervision, cfg.lfem.token_supervision, cfg.lfem.occluder, cfg.lfem.gate_scope,
                cfg.lfem.rearrange, cfg.lfem.gate_input, cfg.lfem.gate_grad) == \
            (1.0, 1.0, "paste", "local", False, "relation_tokens", "visibility")
    assert (paper.lfem.token_supervision, paper.lfem.gate_input, paper.lfem.gate_grad) == (0.0, "relation", "all")
    for name in ("lfem_vit_vis_tokens_mlp", "lfem_vit_vis_tokens_mlp_tiny"):
        cfg = C.load_config(None, ["model.name", name])
        assert (cfg.lfem.gate_input, cfg.lfem.occluder, cfg.lfem.token_supervision, cfg.lfem.gate_grad) == \
            ("relation_tokens_mlp", "noise", 1.0, "visibility")


_CHOICE = r" \(in the KEY VALUE overrides\) is not one of"


@pytest.mark.parametrize("opts, match", [(["lfem.gate_supervision", "-1.0"], "gate_supervision is -1.0"),
                                         (["lfem.occluder", "cutout"], "lfem.occluder 'cutout'" + _CHOICE),
                                         (["lfem.gate_scope", "all"], "lfem.gate_scope 'all'" + _CHOICE),
                                         (["lfem.gate_input", "tokens"], "lfem.gate_input 'tokens'" + _CHOICE),
                                         (["lfem.token_supervision", "1.0"], "only lfem.gate_input relation_tokens"),
                                         (["lfem.gate_grad", "none"], "lfem.gate_grad 'none'" + _CHOICE),
                                         (["lfem.gate_supervision", "0.0", "lfem.gate_grad", "visibility"],
                                          "would never train"),
                                         (["lfem.token_supervision", "-1.0"], "token_supervision is -1.0"),
                                         (["lfem.use_lfem", "False"], "use_lfem is false")])
def test_bad_visibility_keys_fail_before_training(opts, match):
    """A name outside a key's choices fails when the config loads (ValueError, naming where it was set); the other
    settings in the preflight (PreflightError, a ValueError)."""
    with pytest.raises(ValueError, match=match):
        T.check_run_config(C.load_config(None, ["model.name", "lfem_vit_vis_tiny", *opts]))


# ---- end to end on torchreid's loaders ------------------------------------------------------------------------
def _vis_cfg(root, save_dir, *opts):
    return C.load_config(CPU_CONFIG, ["model.name", "lfem_vit_vis_tiny", "data.root", str(root), "data.save_dir",
                                      str(save_dir), *SMALL, *opts])


@pytest.mark.parametrize("rearrange", ["True", "False"])
def test_a_training_step_gets_targets_in_the_models_own_token_order(synthetic_root, tmp_path, rearrange):
    """Pitfall 3 at the pipeline level: the targets come from the built model's patch grid and JPM order."""
    cfg = _vis_cfg(synthetic_root, tmp_path, "lfem.rearrange", rearrange)
    dm = T.build_datamanager(cfg)
    engine, model = T.build_engine(cfg, dm)
    assert dm.train_loader.dataset.transform.geometry == TokenGeometry.of(model.backbone) == model.token_geometry()
    assert model.backbone.jpm.rearrange is (rearrange == "True")
    summary = engine.forward_backward(next(iter(dm.train_loader)))
    assert np.isfinite(summary["vis/gate_bce"]) and summary["vis/gate_bce"] > 0


def test_a_training_step_with_token_supervision(synthetic_root, tmp_path):
    """The engine's per-token targets are each view's own box through the model's geometry, image-major
    (B, V, K, n); the token loss alone trains the token scores; the step logs it."""
    cfg = _vis_cfg(synthetic_root, tmp_path, "model.name", "lfem_vit_vis_tokens_tiny")
    dm = T.build_datamanager(cfg)
    engine, model = T.build_engine(cfg, dm)
    assert engine.token_geometry == model.token_geometry()
    assert all(lfem.gate_grad == "visibility" and lfem.gate_input == "relation_tokens" for lfem in model.fusion.lfems)
    data = next(iter(dm.train_loader))
    _, _, boxes = split_views(data["img"])
    images, _, tokens = _prepared(engine, data, data["pid"])
    batch, num_views = boxes.shape[:2]
    assert tokens.shape == (batch, num_views, 4, 5)
    for b in range(batch):
        for v in range(num_views):
            assert torch.equal(tokens[b, v], model.token_geometry().tokens_from_boxes(boxes[b, v:v + 1])[0])
    assert (tokens[:, 2] == 1).all()  # the cropped view hides nothing
    out = model.train()(images, camera=data["camid"], branch_features=True)
    grads = torch.autograd.grad(engine.token_loss(out.aux, tokens),
                                [lfem.token_score.weight for lfem in model.fusion.lfems])
    assert all(g.abs().sum() > 0 for g in grads)
    summary = engine.forward_backward(data)
    assert np.isfinite(summary["vis/token_bce"]) and summary["vis/token_bce"] > 0


@pytest.mark.parametrize("occluder", ["paste", "paste_resized"])
def test_a_training_step_pastes_inside_the_boxes_only(synthetic_root, tmp_path, occluder):
    """lfem.occluder reaches the engine; the pasted views differ from the loader's only inside each view's box."""
    cfg = _vis_cfg(synthetic_root, tmp_path, "lfem.occluder", occluder)
    dm = T.build_datamanager(cfg)
    engine, _ = T.build_engine(cfg, dm)
    assert engine.occluder == occluder
    data = next(iter(dm.train_loader))
    views, _, boxes = split_views(data["img"])
    images, _, _ = _prepared(engine, data, data["pid"])
    hidden = box_mask(boxes.transpose(0, 1), *images.shape[-2:]) < 0.5  # (V, B, H, W)
    changed = (images != torch.stack(views)).any(2)
    assert changed.any() and not (changed & ~hidden).any()
    summary = engine.forward_backward(data)
    assert all(math.isfinite(float(v)) for v in summary.values())


@pytest.mark.parametrize("name", ["lfem_vit_vis_tiny", "lfem_vit_vis_tokens_tiny", "lfem_vit_vis_tokens_mlp_tiny"])
def test_the_trained_vis_model_extracts_searches_and_exports_one_vector(synthetic_root, tmp_path, capsys, name):
    from lfem_plugin.cli import main
    from lfem_plugin.tools.inference import export_onnx, extract_features, list_images, load_trained
    cfg = _vis_cfg(synthetic_root, tmp_path / "run", "train.max_epoch", "1", "model.name", name)
    T.run(cfg)
    ckpt = tmp_path / "run" / "model" / "model.pth.tar-1"
    query = synthetic_root / "synthetic_reid" / "query"
    paths = list_images(str(query))
    model, _ = load_trained(str(ckpt))
    ours, _ = extract_features(model.eval(), paths, 64, 32, [0.5] * 3, [0.5] * 3)
    assert ours.shape == (len(paths), model.num_features)
    extractor = TR.utils.FeatureExtractor(model_name=name, model_path=str(ckpt), image_size=(64, 32),
                                          pixel_mean=[0.5] * 3, pixel_std=[0.5] * 3, device="cpu", verbose=False)
    assert np.allclose(extractor(paths).numpy(), ours, atol=1e-5)
    assert export_onnx(model, str(tmp_path / "m.onnx"), 64, 32, with_camera=True)["max_abs_diff"] <= 1e-4
    gallery = synthetic_root / "synthetic_reid" / "gallery"
    assert main(["search", "--weights", str(ckpt), "--query", str(query), "--gallery", str(gallery), "--top-k", "2",
                 "--device", "cpu", "--out", str(tmp_path / "search")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "search" / "results.csv")))
    assert len(rows) == 2 * len(paths)
