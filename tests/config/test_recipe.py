"""The shipped Occluded-Duke recipe: TransReID's loss normalisation, and ablation configs that differ from it only in
what the paper's Table 2 changes."""
from pathlib import Path

import pytest
import torch

from lfem_plugin import config as C
from lfem_plugin.tools import train as T
from lfem_plugin.losses import branch_weights

REPO = Path(__file__).resolve().parents[2]
DUKE = REPO / "configs" / "occluded_duke"
FULL = DUKE / "lfem_vit_base_s11_256x128.yaml"


def _flat(cfg, prefix=""):
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_shipped_recipe_branch_weights_are_transreids_normalisation():
    cfg = C.load_config(FULL)
    assert cfg.lfem.loss_weights == "transreid" == C.get_default_config().lfem.loss_weights
    names = ("final", "erased", "cropped", "local1", "local2", "local3", "local4")
    weights = branch_weights(names, cfg.lfem.loss_weights)
    assert weights == pytest.approx((1 / 6,) * 3 + (1 / 8,) * 4)  # 0.5 x mean of 3 globals, 0.5 x mean of 4 locals
    assert sum(weights) == pytest.approx(1.0)
    assert branch_weights(names, "paper") == (1.0,) * 7


@pytest.mark.parametrize("name, allowed", [
    ("vit_transreid_base_s11_256x128.yaml", {"lfem.use_lfem", "lfem.views", "lfem.local_feature"}),
    ("lfem_only_vit_base_s11_256x128.yaml", {"lfem.views"}),
    ("rerc_only_vit_base_s11_256x128.yaml", {"lfem.use_lfem", "lfem.local_feature"}),
    ("lfem_paper_sum_vit_base_s11_256x128.yaml", {"lfem.loss_weights"}),
])
def test_ablation_configs_differ_from_the_recipe_only_in_table_2(name, allowed):
    full, ablation = _flat(C.load_config(FULL)), _flat(C.load_config(DUKE / name))
    changed = {k for k in full if full[k] != ablation[k]} - {"data.save_dir"}
    assert changed == allowed
    assert ablation["data.save_dir"].endswith(name[:-len(".yaml")])


def test_recipe_loss_is_transreids_total_on_one_batch():
    """The shipped weighting sums to TransReID's 0.5 global + 0.5 local per loss type; the literal sum is the
    unnormalised one (more than 3.5x on any batch)."""
    cfg = C.load_config(FULL)
    model = T.build_model(C.load_config(None, ["model.name", "lfem_vit_tiny", "lfem.stride", "8", "data.height",
                                               "64", "data.width", "32", "model.pretrained", "False"]), 4, 2)
    from lfem_plugin.losses import MultiBranchLoss
    out = model(torch.randn(3, 8, 3, 64, 32), camera=torch.tensor([0, 1] * 4), branch_features=True)
    logits = model.classify(out.names, out.features)
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    ours, terms = MultiBranchLoss(out.names, branch_weights(out.names, cfg.lfem.loss_weights),
                                  branch_weights(out.names, cfg.lfem.loss_weights))(logits, out.features, pids)
    literal, _ = MultiBranchLoss(out.names)(logits, out.features, pids)
    by_kind = {kind: [terms[f"{kind}/{n}"] for n in out.names] for kind in ("ce", "tri")}
    transreid = sum(0.5 * sum(v[:3]) / 3 + 0.5 * sum(v[3:]) / 4 for v in by_kind.values())
    assert ours.item() == pytest.approx(transreid.item(), rel=1e-6)
    assert literal.item() > 3.5 * ours.item()


# ---- the other benchmarks: the same recipe on another dataset, TransReID's own recipes -------------------------
BENCHMARKS = {"market1501": ["market1501", "occluded_reid", "partial_reid", "partial_ilids"],
              "dukemtmcreid": ["dukemtmcreid"], "msmt17": ["msmt17"], "p_dukemtmc_reid": ["p_dukemtmc_reid"]}
_DATA_KEYS = {"data.sources", "data.targets", "data.save_dir"}


@pytest.mark.parametrize("dataset", sorted(BENCHMARKS))
def test_benchmark_configs_carry_the_recipe_to_their_dataset(dataset):
    folder = REPO / "configs" / dataset
    duke, full = _flat(C.load_config(FULL)), _flat(C.load_config(folder / "lfem_vit_base_s11_256x128.yaml"))
    ranks = {"test.ranks"} if dataset == "market1501" else set()  # Rank-3 for the partial sets
    assert {k for k in duke if duke[k] != full[k]} == _DATA_KEYS | ranks
    assert full["data.targets"] == BENCHMARKS[dataset] and full["data.sources"] == [dataset]
    baseline = _flat(C.load_config(folder / "vit_transreid_base_s11_256x128.yaml"))
    assert {k for k in full if full[k] != baseline[k]} == {"lfem.use_lfem", "lfem.views", "lfem.local_feature",
                                                           "data.save_dir"}
    duke_cnn = _flat(C.load_config(DUKE / "cnn_softmax_256x128.yaml"))
    cnn = _flat(C.load_config(folder / "cnn_softmax_256x128.yaml"))
    assert {k for k in duke_cnn if duke_cnn[k] != cnn[k]} == _DATA_KEYS | ranks
    assert cnn["data.targets"] == full["data.targets"] and cnn["test.ranks"] == full["test.ranks"]


@pytest.mark.parametrize("dataset, stride", [("market1501", 12), ("dukemtmcreid", 12), ("msmt17", 12),
                                             ("occluded_duke", 11)])
def test_transreid_recipes_are_transreids_stride_configs(dataset, stride):
    """configs/<Dataset>/vit_transreid_stride.yml of damo-cv/TransReID, key by key."""
    cfg = C.load_config(REPO / "configs" / dataset / f"transreid_recipe_s{stride}_256x128.yaml")
    assert (cfg.lfem.stride, cfg.lfem.sie_coef, cfg.lfem.use_sie, cfg.lfem.rearrange) == (stride, 3.0, True, True)
    assert (cfg.lfem.use_lfem, list(cfg.lfem.views), cfg.lfem.local_feature, cfg.lfem.eval_feature) == \
        (False, ["original"], "jpm", "concat")
    assert (cfg.lfem.soft_margin, cfg.loss.softmax.label_smooth, cfg.lfem.neck_feat) == (True, False, "before")
    assert (cfg.data.height, cfg.data.width, list(cfg.data.norm_mean)) == (256, 128, [0.5] * 3)
    assert (cfg.lfem.flip_prob, cfg.lfem.re_prob, cfg.lfem.padding) == (0.5, 0.5, 10)
    assert (cfg.train.batch_size, cfg.sampler.num_instances, cfg.train.max_epoch, cfg.test.eval_freq) == \
        (64, 4, 120, 120)
    assert (cfg.train.optim, cfg.train.lr, cfg.train.weight_decay, cfg.lfem.weight_decay_bias,
            cfg.lfem.bias_lr_factor, cfg.lfem.warmup_epochs) == ("sgd", 0.008, 1e-4, 1e-4, 2.0, 5)
    assert (cfg.test.normalize_feature, cfg.test.rerank, cfg.lfem.loss_weights) == (True, False, "transreid")
    assert list(cfg.data.sources) == [dataset]


def test_typed_changes_are_a_layer_between_the_file_and_the_overrides():
    cfg = C.load_config(FULL, ["lfem.use_lfem", "True"], changes={"lfem.views": ["original"], "lfem.use_lfem": False,
                                                                 "train.max_epoch": 7})
    assert (list(cfg.lfem.views), cfg.lfem.use_lfem, cfg.train.max_epoch) == (["original"], True, 7)
    with pytest.raises(KeyError, match="unknown config key in the row 'x'"):
        C.load_config(FULL, changes={"lfem.no_such_key": 1}, changes_source="the row 'x'")
    with pytest.raises(ValueError, match="bad value in the row 'x'"):
        C.load_config(FULL, changes={"train.max_epoch": "ten"}, changes_source="the row 'x'")




