import pytest
import timm
import torch
from timm.layers import resample_abs_pos_embed

from lfem_plugin.models import build_backbone, checkpoint_filter_fn, load_pretrained
from lfem_plugin.models.jpm import group_token_indices
from lfem_plugin.models.patch_embed import patch_grid
from lfem_plugin.models.pretrained import resolve_weights, WEIGHT_SOURCES, WeightSource

TINY = dict(embed_dim=32, depth=3, num_heads=2)


@pytest.mark.parametrize("stride, grid", [(16, (16, 8)), (14, (18, 9)), (12, (21, 10)), (11, (22, 11))])
def test_patch_grid_matches_transreid_table(stride, grid):
    assert patch_grid((256, 128), 16, stride) == grid
    model = build_backbone("vit_tiny_test", stride=stride, img_size=(256, 128))
    assert model.pos_embed.shape[1] == grid[0] * grid[1] + 1


def test_wrong_input_size_is_a_clear_error():
    model = build_backbone("vit_tiny_test", img_size=(64, 32))
    with pytest.raises(ValueError, match=r"expected input of shape \(B, C, 64, 32\)"):
        model(torch.randn(1, 3, 60, 32))


def test_equals_timm_vit_with_stride16_no_sie_no_jpm():
    ours = build_backbone("vit_tiny_test", img_size=(64, 32), stride=16, jpm=False, drop_path_rate=0.0).eval()
    ref = timm.models.VisionTransformer(img_size=(64, 32), patch_size=16, embed_dim=64, depth=3, num_heads=2,
                                        num_classes=0, global_pool="token", qkv_bias=True).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 32)
    assert torch.allclose(ours(x).global_feat, ref(x), atol=1e-5)


def test_jpm_groups_stride11_are_two_bands_half_an_image_apart():
    groups = group_token_indices(242, num_groups=4, shift_num=5, shuffle_groups=2)
    rotated = [(i + 4) % 242 for i in range(242)]  # shift 5 = start at patch index 4
    for k, group in enumerate(groups):
        expected = rotated[30 * k:30 * k + 30] + rotated[121 + 30 * k:121 + 30 * k + 30]
        assert sorted(group) == sorted(expected)
        assert group[:2] == [rotated[30 * k], rotated[121 + 30 * k]]  # interleaved
    used = {i for g in groups for i in g}
    assert len(used) == 240 and len(set(range(242)) - used) == 2


def test_jpm_forward_routes_tokens_by_index():
    """Feed tokens that encode their index: each local branch sees exactly its group's tokens."""
    model = build_backbone("vit_tiny_test", img_size=(64, 32), stride=8, jpm=True).eval()
    jpm = model.jpm
    seen = []
    jpm.local_branch.forward_tokens = lambda tokens: seen.append(tokens[:, 1:, 0].clone()) or (tokens[:, 0],
                                                                                               tokens[:, 1:])
    jpm.global_branch.forward = lambda tokens: tokens[:, 0]
    n = model.patch_embed.num_patches
    tokens = torch.arange(n + 1, dtype=torch.float32).view(1, -1, 1).repeat(1, 1, 64) - 1  # cls = -1
    jpm(tokens)
    batch_groups = seen[0].long().tolist()
    assert batch_groups == model.group_token_indices()


def test_rearrange_off_gives_raster_groups():
    groups = group_token_indices(10, num_groups=4, rearrange=False)
    assert groups == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_sie_cameras_change_output_none_works_out_of_range_raises():
    model = build_backbone("vit_tiny_test", img_size=(64, 32), num_cameras=3).eval()
    x = torch.randn(2, 3, 64, 32)
    a = model(x, torch.tensor([0, 0])).global_feat
    b = model(x, torch.tensor([1, 2])).global_feat
    c = model(x, None).global_feat
    assert not torch.allclose(a, b) and not torch.allclose(a, c)
    with pytest.raises(ValueError, match="outside the SIE table"):
        model(x, torch.tensor([0, 3]))
    single = build_backbone("vit_tiny_test", img_size=(64, 32), num_cameras=1).eval()
    assert not single.sie.enabled
    assert torch.equal(single(x, torch.tensor([5, 7])).global_feat, single(x).global_feat)


def test_sie_coefficient_scales_the_camera_term():
    model = build_backbone("vit_tiny_test", img_size=(64, 32), num_cameras=2, sie_coef=3.0)
    cam = torch.tensor([1])
    assert torch.allclose(model.sie(cam), 3.0 * model.sie.table[1:2])


def _square_vit_state_dict(embed_dim=64, depth=3, heads=2, distilled=False):
    ref = timm.models.VisionTransformer(img_size=224, patch_size=16, embed_dim=embed_dim, depth=depth,
                                        num_heads=heads, num_classes=10, qkv_bias=True)
    sd = ref.state_dict()
    if distilled:
        sd["dist_token"] = torch.zeros(1, 1, embed_dim)
        sd["pos_embed"] = torch.cat([sd["pos_embed"][:, :1], torch.randn(1, 1, embed_dim), sd["pos_embed"][:, 1:]], 1)
        sd["head_dist.weight"] = torch.zeros(10, embed_dim)
    return sd


def test_checkpoint_filter_round_trip(tmp_path):
    model = build_backbone("vit_tiny_test", img_size=(256, 128), stride=11)
    sd = _square_vit_state_dict()
    path = tmp_path / "vit.pth"
    torch.save({"model": {"module." + k: v for k, v in sd.items()}}, path)
    load_pretrained(model, path)
    expected = resample_abs_pos_embed(sd["pos_embed"], new_size=[22, 11], old_size=[14, 14], num_prefix_tokens=1,
                                      interpolation="bilinear", antialias=False)
    assert torch.equal(model.pos_embed.data, expected)
    assert torch.equal(model.patch_embed.proj.weight, sd["patch_embed.proj.weight"])
    for branch in (model.jpm.global_branch, model.jpm.local_branch):
        assert torch.equal(branch.block.attn.qkv.weight, sd["blocks.2.attn.qkv.weight"])
        assert torch.equal(branch.norm.weight, sd["norm.weight"])
    assert torch.equal(model.blocks[1].mlp.fc1.weight, sd["blocks.1.mlp.fc1.weight"])
    filtered = checkpoint_filter_fn(sd, model)
    assert not any(k.startswith("head") for k in filtered)


def test_checkpoint_filter_deit_distilled_and_legacy_patch_weights():
    model = build_backbone("vit_tiny_test", img_size=(64, 32), stride=16)
    sd = _square_vit_state_dict(distilled=True)
    sd["patch_embed.proj.weight"] = sd["patch_embed.proj.weight"].reshape(64, -1)
    out = checkpoint_filter_fn(sd, model)
    assert "dist_token" not in out and "head_dist.weight" not in out
    assert out["pos_embed"].shape == model.pos_embed.shape
    assert out["patch_embed.proj.weight"].shape == model.patch_embed.proj.weight.shape
    model.load_state_dict(out, strict=False)


def test_mismatched_checkpoint_raises_readable_error(tmp_path):
    model = build_backbone("vit_tiny_test", img_size=(64, 32))
    path = tmp_path / "wrong.pth"
    torch.save(_square_vit_state_dict(embed_dim=32), path)
    with pytest.raises(RuntimeError, match="does not fit this backbone"):
        load_pretrained(model, path)
    torch.save({"foo.weight": torch.zeros(3)}, path)
    with pytest.raises(RuntimeError, match="no tensor"):
        load_pretrained(model, path)


def test_offline_download_fails_with_a_message_naming_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setitem(WEIGHT_SOURCES, "offline", WeightSource("http://127.0.0.1:9/none.pth", "none.pth",
                                                                (0.5,) * 3, (0.5,) * 3))
    with pytest.raises(RuntimeError, match=r"none\.pth.*put it at"):
        resolve_weights("offline")


def test_every_parameter_gets_a_gradient():
    model = build_backbone("vit_tiny_test", img_size=(64, 32), stride=8, num_cameras=2)
    out = model(torch.randn(2, 3, 64, 32), torch.tensor([0, 1]))
    (sum((f * torch.randn_like(f)).sum() for f in (out.global_feat, *out.local_feats))).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
