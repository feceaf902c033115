import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lfem_plugin import _torchreid
from lfem_plugin.data.transforms import build_test_transform, build_train_transform
from lfem_plugin.losses import MultiBranchLoss, TripletLoss, branch_weights
from lfem_plugin.models.lfem import LFEM, SequentialFusion
from lfem_plugin.registry import MODELS

TR = _torchreid.root()


def test_lfem_equals_hand_computation():
    lfem = LFEM(dim=2, proj_dim=2, scale_gate=False)
    with torch.no_grad():
        lfem.proj_local_key.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))  # W_l1 (out x in)
        lfem.proj_local_value.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))  # W_l2
        lfem.proj_global.weight.copy_(torch.eye(2))  # W_g
        lfem.proj_out.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 1.0]]))  # W_1
    f_l, f_g = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, -0.25]])
    # f_l1 = (1, 4); f_g' = (0.5, -0.25); dot = 0.5 - 1 = -0.5; r = sigmoid(-0.5)
    r = 1 / (1 + math.exp(0.5))
    # f_l2 = (2, 1); f_l2 W_1 = (3, 1)
    expected = f_l + f_g + r * torch.tensor([[3.0, 1.0]])
    out = lfem(f_l, f_g)
    assert torch.allclose(out.gate, torch.tensor([r]))
    assert torch.allclose(out.fused, expected)
    scaled = LFEM(dim=2, proj_dim=2, scale_gate=True)
    scaled.load_state_dict(lfem.state_dict())
    assert torch.allclose(scaled(f_l, f_g).gate, torch.sigmoid(torch.tensor([-0.5 / math.sqrt(2)])))


def test_sequential_fusion_order_matters():
    fusion = SequentialFusion(dim=8, num_groups=4)
    g = torch.randn(3, 8)
    locals_ = [torch.randn(3, 8) * 5 for _ in range(4)]
    out = fusion(g, locals_)
    manual = g
    for k in range(4):
        manual = fusion.lfems[k](locals_[k], manual).fused
    assert torch.allclose(out.final, manual)
    assert out.gates.shape == (3, 4)
    with torch.no_grad():
        for m in fusion.lfems:
            m.proj_out.weight.normal_()
    assert not torch.allclose(fusion(g, locals_).final, fusion(g, locals_[::-1]).final, atol=1e-4)
    assert len(SequentialFusion(8, 4, share=True).lfems) == 1


def test_gate_not_saturated_at_init():
    """At ViT-B width with LayerNorm-scale features, scaled gates stay near 0.5 while unscaled ones saturate."""
    fusion = SequentialFusion(dim=768, num_groups=4)
    g = F.layer_norm(torch.randn(256, 768), (768,))
    locals_ = [F.layer_norm(torch.randn(256, 768), (768,)) for _ in range(4)]
    gates = fusion(g, locals_).gates
    assert 0.1 < gates.min() and gates.max() < 0.9
    unscaled = SequentialFusion(dim=768, num_groups=4, scale_gate=False)
    unscaled.load_state_dict(fusion.state_dict())
    saturated = unscaled(g, locals_).gates
    assert ((saturated < 0.05) | (saturated > 0.95)).float().mean() > 0.5


@pytest.fixture
def tiny():
    return TR.models.build_model("lfem_vit_tiny", num_classes=4, loss="triplet", pretrained=False, use_gpu=False)


def _views(batch=4):
    return [torch.randn(batch, 3, 64, 32) for _ in range(3)]


def test_output_contract_softmax_triplet_eval():
    model = TR.models.build_model("lfem_vit_tiny", num_classes=4, loss="softmax", pretrained=False)
    logits = model(_views(), torch.tensor([0, 1, 0, 1]))
    assert isinstance(logits, list) and len(logits) == 7 and logits[0].shape == (4, 4)
    model.loss = "triplet"
    logits, feats = model(torch.stack(_views()))
    assert len(feats) == 7 and feats[0].shape == (4, model.num_features)
    model.eval()
    assert model(torch.randn(2, 3, 64, 32)).shape == (2, model.num_features)
    model.eval_feature = "concat"
    assert model(torch.randn(2, 3, 64, 32)).shape == (2, 5 * model.num_features)
    model.neck_feat = "after"
    assert model(torch.randn(2, 3, 64, 32)).shape == (2, 5 * model.num_features)


def test_one_view_gives_the_supervised_subset(tiny):
    out = tiny.forward_branches(torch.randn(4, 3, 64, 32))
    assert out.names == ("original", "local1", "local2", "local3", "local4")
    baseline = MODELS.get("vit_transreid_tiny")(num_classes=4)
    with pytest.raises(ValueError, match="num_views"):
        baseline(_views())


def test_views_run_in_one_batched_forward(tiny):
    calls = []
    tiny.backbone.patch_embed.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    tiny(_views(batch=4), torch.tensor([0, 1, 0, 1]))
    assert calls == [12]


def test_gradients_reach_every_parameter(tiny):
    logits, feats = tiny(_views(), torch.tensor([0, 1, 0, 1]))
    loss, _ = MultiBranchLoss(tiny.branch_names)(logits, feats, torch.tensor([0, 0, 1, 1]))
    loss.backward()
    missing = [n for n, p in tiny.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    assert tiny(_views(), torch.tensor([0, 1, 0, 1]), branch_features=True).gates.shape == (4, 4)


def test_bnneck_bias_stays_frozen_after_open_all_layers(tiny):
    TR.utils.open_all_layers(tiny)
    names = [n for n, _ in tiny.named_parameters()]
    assert not any(n.endswith("bn.bias") for n in names)
    assert all(torch.equal(h.bn.bias, torch.zeros_like(h.bn.bias)) for h in tiny.heads)


def test_torchreid_triplet_engine_step_on_cpu(tiny):
    """The stock ImageTripletEngine-style step: model(imgs) -> (outputs, features), DeepSupervision losses."""
    criterion_t = TR.losses.TripletLoss(margin=0.3)
    criterion_x = TR.losses.CrossEntropyLoss(num_classes=4, use_gpu=False)
    optimizer = torch.optim.SGD(tiny.parameters(), lr=0.01)
    imgs, pids = torch.randn(8, 3, 64, 32), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    outputs, features = tiny(imgs)
    loss = TR.losses.DeepSupervision(criterion_t, features, pids) + TR.losses.DeepSupervision(criterion_x, outputs,
                                                                                              pids)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)


# ---- loss -----------------------------------------------------------------------------------------------------

def test_triplet_hand_computed_two_identities():
    feats = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0], [1.0, 1.0]])
    pids = torch.tensor([0, 0, 1, 1])
    # anchor 0: d_ap = 5, d_an = min(1, sqrt2) = 1 -> relu(5 - 1 + 0.3) = 4.3
    # anchor 1: d_ap = 5, d_an = min(|(3,4)-(1,0)|=sqrt20, |(3,4)-(1,1)|=sqrt13) -> 5 - sqrt13 + 0.3
    # anchor 2: d_ap = 1, d_an = min(1, sqrt20) = 1 -> 0.3
    # anchor 3: d_ap = 1, d_an = min(sqrt2, sqrt13) -> relu(1 - sqrt2 + 0.3) = 0
    expected = (4.3 + (5.3 - math.sqrt(13)) + 0.3 + 0.0) / 4
    assert TripletLoss(0.3)(feats, pids).item() == pytest.approx(expected, rel=1e-5)
    soft = [5 - 1, 5 - math.sqrt(13), 0.0, 1 - math.sqrt(2)]
    assert TripletLoss(None)(feats, pids).item() == pytest.approx(np.mean([math.log1p(math.exp(d)) for d in soft]),
                                                                  rel=1e-5)


def test_triplet_equals_torchreid():
    feats, pids = torch.randn(16, 8), torch.arange(4).repeat_interleave(4)
    assert TripletLoss(0.3)(feats, pids).item() == pytest.approx(TR.losses.TripletLoss(0.3)(feats, pids).item(),
                                                                 rel=1e-5)


def test_multibranch_loss_weights_and_zero_skip():
    names = ("final", "erased", "local1")
    logits = [torch.randn(4, 3) for _ in names]
    feats = [torch.randn(4, 5) for _ in names]
    pids = torch.tensor([0, 0, 1, 1])
    total, terms = MultiBranchLoss(names)(logits, feats, pids)
    hand = sum(F.cross_entropy(lg, pids) + TripletLoss(0.3)(f, pids) for lg, f in zip(logits, feats))
    assert total.item() == pytest.approx(hand.item(), rel=1e-5)
    assert set(terms) == {f"{k}/{n}" for k in ("ce", "tri") for n in names}
    total, terms = MultiBranchLoss(names, id_weights=(2.0, 0.0, 1.0), triplet_weights=(0.0, 1.0, 0.5))(
        logits, feats, pids)
    hand = 2 * F.cross_entropy(logits[0], pids) + F.cross_entropy(logits[2], pids) + TripletLoss(0.3)(
        feats[1], pids) + 0.5 * TripletLoss(0.3)(feats[2], pids)
    assert total.item() == pytest.approx(hand.item(), rel=1e-5)
    assert "ce/erased" not in terms and "tri/final" not in terms


def test_transreid_weight_preset():
    w = branch_weights(("final", "local1", "local2", "local3", "local4"), "transreid")
    assert w == (0.5, 0.125, 0.125, 0.125, 0.125)
    assert sum(branch_weights(("final", "erased", "cropped", "local1"), "transreid")) == pytest.approx(1.0)


# ---- transforms -----------------------------------------------------------------------------------------------

def _img():
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (112, 92, 3), dtype=np.uint8))


def test_multiview_shapes_differ_erased_always_and_repr():
    t = build_train_transform(64, 32, re_prob=0.0)
    for _ in range(30):
        views = t(_img())
        assert len(views) == 3 and all(v.shape == (3, 64, 32) for v in views)
    clean = build_train_transform(64, 32, re_prob=0.0, views=("original",))
    erased_only = build_train_transform(64, 32, views=("erased",)).transforms[0]
    for seed in range(30):
        torch.manual_seed(seed), random.seed(seed)
        a = clean(_img())[0]
        torch.manual_seed(seed), random.seed(seed)
        b = erased_only(_img())
        assert not torch.equal(a, b)  # same flip/crop draws, and a rectangle always erased
    assert not torch.equal(*t(_img())[:2])
    assert "erased" in repr(t) and "RandomResizedCrop" in repr(t)


def test_multiview_reproducible_under_seed():
    t = build_train_transform(64, 32)
    torch.manual_seed(3), random.seed(3)
    a = t(_img())
    torch.manual_seed(3), random.seed(3)
    b = t(_img())
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_test_transform_is_one_view():
    assert build_test_transform(64, 32)(_img()).shape == (3, 64, 32)


def test_branches_are_named_by_the_views_the_data_gives():
    from lfem_plugin.config import load_config, model_kwargs, transform_kwargs
    from lfem_plugin.data.transforms import build_train_transform
    cfg = load_config(None, ["model.name", "lfem_vit_tiny", "lfem.views", "['original','cropped']"])
    model = MODELS.get("lfem_vit_tiny")(num_classes=4, **model_kwargs(cfg, 2, [0, 1]))
    assert model.branch_names[:2] == ("original", "cropped") and model.num_views == 2
    assert build_train_transform(**transform_kwargs(cfg)).names == ("original", "cropped")
    out = model.forward_branches(torch.randn(2, 4, 3, 64, 32), camera=torch.tensor([0, 1, 0, 1]))
    assert out.names[:2] == ("original", "cropped")  # the cropped view is not logged as 'erased'
    with pytest.raises(ValueError, match="distinct names"):
        MODELS.get("lfem_vit_tiny")(num_classes=4, views=("original", "occluded"))


def test_gates_come_back_from_a_call_and_no_state_is_left_on_the_model(tiny):
    from lfem_plugin.models import ReIDModel
    tiny.eval()
    image, camera = torch.randn(2, 3, 64, 32), torch.tensor([0, 1])
    gates = tiny.gates(image, camera)
    with torch.no_grad():
        feature = tiny(image, camera)
        branches = tiny(image, camera, branch_features=True)
    assert gates.shape == (2, 4) and ((gates > 0) & (gates < 1)).all()
    assert torch.allclose(gates, branches.gates)  # the same gates as the training forward of that view
    assert feature.shape == (2, tiny.num_features) and not hasattr(tiny, "last_gates")
    assert isinstance(tiny, ReIDModel) and tiny.uses_sie
    windows = tiny.group_windows()  # 64x32 input, 16-pixel patches at stride 8: a 7 x 3 grid, 4 JPM groups of 5
    grid = {(8 * r, 8 * c, 16, 16) for r in range(7) for c in range(3)}
    flat = [w for group in windows for w in group]
    assert [len(g) for g in windows] == [5] * 4 and len(set(flat)) == 20 and set(flat) <= grid
    baseline = TR.models.build_model("vit_transreid_tiny", num_classes=4, pretrained=False).eval()
    assert baseline.gates(image, camera) is None and not baseline.use_lfem


def test_build_args_are_the_data_given_sizes():
    from lfem_plugin.models.lfem_vit import build_args_of
    model = MODELS.get("lfem_vit_tiny")(num_classes=5, camera_ids=[2, 7, 9])
    assert model.build_args() == (5, 3, [2, 7, 9]) == build_args_of(model.state_dict())
    single = MODELS.get("lfem_vit_tiny")(num_classes=3, num_cameras=1)
    assert single.build_args() == (3, 0, None) == build_args_of(single.state_dict())


def test_the_fusion_block_is_named_data_and_an_unknown_name_lists_the_registered_ones():
    from lfem_plugin.models.lfem import LFEM, fusion_block
    model = MODELS.get("lfem_vit_tiny")(num_classes=4)
    assert all(type(block) is LFEM for block in model.fusion.lfems)  # 'lfem', the paper's, by default
    assert fusion_block("lfem") is LFEM
    with pytest.raises(KeyError, match=r"no LFEM block named 'nope'; registered: \[.*'lfem'"):
        MODELS.get("lfem_vit_tiny")(num_classes=4, lfem_block="nope")
