import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lfem_plugin import _torchreid
from lfem_plugin import config as C
from lfem_plugin.tools import preflight
from lfem_plugin.tools import families, train as T
from lfem_plugin.utils.checkpoint import load_checkpoint, save_checkpoint
from lfem_plugin.engine import LFEMEngine
from lfem_plugin.optim import WarmupCosineLR, build_optimizer
from lfem_plugin.registry import MODELS

from ..helpers import register_synthetic, tiny_engine, write_synthetic_reid

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"


def _transreid_lr(t, base, max_epoch=120, warmup=5, lr=8e-3):
    lr_min, warm_init = 0.002 * lr, 0.01 * lr
    if t < warmup:
        return warm_init + t * (base - warm_init) / warmup
    if t >= max_epoch:
        return lr_min
    return lr_min + 0.5 * (base - lr_min) * (1 + math.cos(math.pi * t / max_epoch))


def test_scheduler_matches_transreid_formula():
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    opt = torch.optim.SGD([{"params": [params[0]], "lr": 8e-3}, {"params": [params[1]], "lr": 1.6e-2}], lr=8e-3)
    sched = WarmupCosineLR(opt, max_epoch=120)
    seen = {}
    for epoch in range(1, 121):
        seen[epoch] = sched.get_last_lr()
        sched.step()
    for t in (1, 5, 60, 119, 120):
        assert seen[t][0] == pytest.approx(_transreid_lr(t, 8e-3), rel=1e-9)
        assert seen[t][1] == pytest.approx(_transreid_lr(t, 1.6e-2), rel=1e-9)
    assert seen[1] == pytest.approx([1.664e-3, 3.264e-3])


def test_scheduler_state_round_trip():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=8e-3)
    a = WarmupCosineLR(opt, max_epoch=20)
    for _ in range(7):
        a.step()
    b = WarmupCosineLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=8e-3), max_epoch=20)
    b.load_state_dict(a.state_dict())
    assert b.get_last_lr() == a.get_last_lr()


def test_parameter_groups_bias_lr_and_frozen_excluded():
    model = MODELS.get("lfem_vit_tiny")(num_classes=3)
    model.backbone.cls_token.requires_grad_(False)
    opt = build_optimizer(model, lr=8e-3, weight_decay=1e-4, bias_lr_factor=2.0, weight_decay_bias=5e-4)
    weights, biases = opt.param_groups
    assert (weights["lr"], weights["weight_decay"]) == (8e-3, 1e-4)
    assert (biases["lr"], biases["weight_decay"]) == (1.6e-2, 5e-4)
    named = dict(model.named_parameters())
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(named["backbone.cls_token"]) not in in_opt
    assert all("bias" in n for n, p in named.items() if any(p is q for q in biases["params"]))
    assert len(in_opt) == sum(p.requires_grad for p in model.parameters())
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9


def test_config_base_merge_and_unknown_key(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"train": {"lr": 0.1, "max_epoch": 5},
                                                        "lfem": {"use_lfem": True}}))
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({"_BASE_": "base.yaml", "train": {"max_epoch": 7}}))
    cfg = C.load_config(tmp_path / "child.yaml", ["lfem.use_lfem", "False"])
    assert (cfg.train.lr, cfg.train.max_epoch, cfg.lfem.use_lfem) == (0.1, 7, False)
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({"train": {"max_epochs": 3}}))
    with pytest.raises(KeyError, match="max_epochs"):
        C.load_config(tmp_path / "typo.yaml")
    with pytest.raises(KeyError, match="lfem.use_lfme"):
        C.load_config(None, ["lfem.use_lfme", "True"])


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")),
                         ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_shipped_configs_load(path):
    if path.name.startswith("_"):
        return
    cfg = C.load_config(path)
    assert cfg.model.name in MODELS or cfg.model.name in _torchreid.root().models.__dict__["__model_factory"]
    preflight.check_config(cfg)  # and nothing in it fails before a run


def test_paper_config_is_the_paper_recipe():
    cfg = C.load_config(REPO / "configs" / "occluded_duke" / "lfem_vit_base_s11_256x128.yaml")
    assert (cfg.data.height, cfg.data.width, cfg.lfem.stride, cfg.lfem.sie_coef) == (256, 128, 11, 3.0)
    assert (cfg.train.batch_size, cfg.sampler.num_instances, cfg.train.max_epoch) == (48, 3, 200)
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.lfem.weight_decay_bias, cfg.lfem.bias_lr_factor) == (
        8e-3, 1e-4, 1e-4, 2.0)
    assert (cfg.lfem.flip_prob, cfg.lfem.re_prob, cfg.lfem.padding, cfg.loss.triplet.margin) == (0.5, 0.5, 10, 0.3)
    assert (cfg.test.eval_freq, cfg.train.checkpoint_period, cfg.test.rerank) == (20, 20, False)
    assert cfg.test.normalize_feature and cfg.lfem.neck_feat == "before"


def _cfg(root, save_dir, *opts):
    return C.load_config(REPO / "configs" / "orl" / "lfem_vit_tiny_64x32_cpu.yaml",
                         ["data.root", str(root), "data.save_dir", str(save_dir), "data.sources", "['synthetic_reid']",
                          "data.targets", "['synthetic_reid']", "test.eval_freq", "-1", "train.checkpoint_period", "0",
                          "train.batch_size", "8", "sampler.num_instances", "2", "test.batch_size", "8",
                          "use_gpu", "False", *opts])


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("reid")
    write_synthetic_reid(root)
    register_synthetic()
    return root


def test_one_epoch_lowers_the_loss_and_cameras_reach_eval(synthetic_root, tmp_path):
    cfg = _cfg(synthetic_root, tmp_path, "train.max_epoch", "3", "lfem.stride", "8", "train.lr", "0.02")
    T.set_seed(0)
    dm = T.build_datamanager(cfg)
    engine, model = T.build_engine(cfg, dm)
    batch = next(iter(dm.train_loader))

    def loss_on(batch):
        model.train()
        with torch.no_grad():
            out = model.forward_branches(torch.stack(batch["img"]), batch["camid"])
            return engine.criterion(out.logits, out.features, batch["pid"], out.names)[0].item()

    before = loss_on(batch)
    seen = []
    original = model.forward_eval
    model.forward_eval = lambda x, camera=None: seen.append(camera) or original(x, camera)
    engine.run(**C.engine_run_kwargs(cfg))
    assert loss_on(batch) < before
    assert seen and all(c is not None for c in seen)
    assert {int(c) for cams in seen for c in cams} == {0, 1}
    assert "synthetic_reid" in engine.last_results and 0 <= engine.last_results["synthetic_reid"]["mAP"] <= 1


def test_resume_equals_uninterrupted(synthetic_root, tmp_path, monkeypatch):
    def train(save_dir, resume=""):
        cfg = _cfg(synthetic_root, save_dir, "train.max_epoch", "2", "lfem.stride", "8",
                   "train.checkpoint_period", "1")
        return T.run(cfg, resume=resume)

    full = train(tmp_path / "full")
    original_train = LFEMEngine.train

    def stop_after_first_epoch(self, *args, **kwargs):
        if self.epoch >= 1:
            raise KeyboardInterrupt("stopped")
        return original_train(self, *args, **kwargs)

    monkeypatch.setattr(LFEMEngine, "train", stop_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "half")
    monkeypatch.undo()
    resumed = train(tmp_path / "resumed", resume=str(tmp_path / "half" / "model" / "model.pth.tar-1"))
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ckpt = load_checkpoint(tmp_path / "full" / "model" / "model.pth.tar-2")
    assert ckpt["epoch"] == 2 and "config" in ckpt and ckpt["rank1"] >= 0


def test_checkpoints_load_weights_only_and_pickles_are_refused(tmp_path):
    engine = tiny_engine()
    engine.save_model(0, 0.5, str(tmp_path))
    path = tmp_path / "model" / "model.pth.tar-1"
    state = torch.load(path, weights_only=True)
    assert state["rank1"] == 0.5 and isinstance(state["rank1"], float)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"state_dict": {}, "payload": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(RuntimeError, match="refusing to load"):
        load_checkpoint(tmp_path / "evil.pth")


def test_atomic_checkpoint_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.pth"
    save_checkpoint({"a": torch.ones(2)}, target)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"a": torch.zeros(2)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]


def test_lfem_engine_refuses_a_model_outside_the_reid_model_protocol():
    """Old code: any module was taken, and failed later inside the step (no ``branch_names``, ``classify``...)."""
    from lfem_plugin.losses import MultiBranchLoss
    model = torch.nn.Linear(4, 4)
    optimizer = build_optimizer(model, lr=0.01)
    scheduler = WarmupCosineLR(optimizer, max_epoch=2, warmup_epochs=1)
    with pytest.raises(TypeError, match=r"implementing lfem_plugin\.models\.interface\.ReIDModel.*got Linear.*"
                                        r"TorchreidSoftmaxEngine"):
        LFEMEngine(None, model, optimizer, scheduler, MultiBranchLoss(["original"]), use_gpu=False)
    wrapped = torch.nn.DataParallel(MODELS.get("lfem_vit_tiny")(num_classes=4, loss="triplet"))
    assert tiny_engine(model=wrapped).model is wrapped  # a wrapped ReIDModel is one


def test_non_finite_loss_stops_with_a_message(synthetic_root, tmp_path):
    engine = tiny_engine()
    batch = {"img": [torch.randn(4, 3, 64, 32) for _ in range(3)], "pid": torch.tensor([0, 0, 1, 1]),
             "camid": torch.tensor([0, 1, 0, 1])}
    with torch.no_grad():
        engine.model.backbone.pos_embed.fill_(float("nan"))
    engine.epoch, engine.max_epoch = 0, 1
    engine.train_loader = torch.utils.data.DataLoader([batch], batch_size=None)  # the loop reads the step's values
    with pytest.raises(Exception, match=r"non-finite loss at epoch 1, iteration 1.*ce/original"):
        engine.train(print_freq=1)


DDP_SCRIPT = r"""
import os, sys, torch, torch.distributed as dist
sys.path.insert(0, {tests!r})
import lfem_plugin
from lfem_plugin.registry import MODELS
from lfem_plugin.engine import LFEMEngine
from helpers import tiny_engine
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
model = MODELS.get("lfem_vit_tiny")(num_classes=4, loss="triplet", drop_path_rate=0.0)
state = {{k: v.clone() for k, v in model.state_dict().items()}}
g = torch.Generator().manual_seed(1)
views = [torch.randn(8, 3, 64, 32, generator=g) for _ in range(3)]
pids, cams = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), torch.tensor([0, 1] * 4)
if world > 1:
    model = torch.nn.parallel.DistributedDataParallel(model)
    sl = slice(rank * 4, rank * 4 + 4)  # whole identities per rank
    views, pids, cams = [v[sl] for v in views], pids[sl], cams[sl]
engine = tiny_engine(model=model)
engine.forward_backward({{"img": views, "pid": pids, "camid": cams}})
# evaluation features: each rank extracts a shard, the shards are gathered in order
class Items(torch.utils.data.Dataset):
    def __len__(self):
        return 7
    def __getitem__(self, i):
        return {{"img": torch.randn(3, 64, 32, generator=torch.Generator().manual_seed(i)), "pid": i, "camid": i % 2}}
engine.model.eval()
feats, fpids, fcams = engine._extract(torch.utils.data.DataLoader(Items(), batch_size=3))
assert fpids.tolist() == list(range(7))
if rank == 0:
    state = {{k: v for k, v in (model.module if world > 1 else model).state_dict().items()}}
    state["_eval_features"] = feats
    torch.save(state, {out!r} + str(world))
dist.barrier()
os._exit(0)  # skip interpreter teardown: gloo's threads can abort an otherwise finished process at exit
"""


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_step_matches_single_process(tmp_path):
    script = tmp_path / "ddp_step.py"
    script.write_text(DDP_SCRIPT.format(tests=str(TESTS), out=str(tmp_path / "state")))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for n in (1, 2):
        out = subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "--master_port",
                              str(_free_port()), str(script)], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
    one, two = torch.load(tmp_path / "state1"), torch.load(tmp_path / "state2")
    for key in one:
        assert torch.allclose(one[key].float(), two[key].float(), atol=1e-5, rtol=1e-4), key


def test_cli_train_then_test_end_to_end(synthetic_root, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(REPO)]))  # helpers, this checkout
    pre = "import helpers, sys; helpers.register_synthetic(); from lfem_plugin.cli import main; sys.exit(main())"
    common = ["-s", "synthetic_reid", "-t", "synthetic_reid", "--config-file",
              str(REPO / "configs" / "orl" / "lfem_vit_tiny_64x32_cpu.yaml"), "--root", str(synthetic_root)]
    overrides = ["data.save_dir", str(tmp_path), "train.batch_size", "8",
                 "sampler.num_instances", "2", "train.max_epoch", "1", "lfem.stride", "8"]
    out = subprocess.run([sys.executable, "-c", pre, "train", *common, *overrides], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    ckpt = tmp_path / "model" / "model.pth.tar-1"
    assert ckpt.is_file() and list(tmp_path.glob("train.log-*"))
    out = subprocess.run([sys.executable, "-c", pre, "test", *common, "--weights", str(ckpt), *overrides], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert '"mAP"' in out.stdout


def test_pretrained_normalisation_mismatch_is_reported(caplog):
    import logging
    cfg = C.load_config(None, ["model.name", "lfem_deit_small_patch16_s16_256x128"])
    with caplog.at_level(logging.WARNING):
        families._check_normalisation(cfg, MODELS.get(cfg.model.name))
    assert "0.485" in caplog.text
    caplog.clear()
    families._check_normalisation(C.load_config(None, []), MODELS.get("lfem_vit"))  # jx ViT: 0.5 / 0.5 as configured
    assert caplog.text == ""
