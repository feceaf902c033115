"""A training step that never waits for the device: no host read in the step, one graph for the compiler, values
read every ``print_freq`` steps with the same numbers, the non-finite guarantee kept, fused/foreach optimisers."""
import copy

import pytest
import torch

from lfem_plugin.engine.engines import Batch

from lfem_plugin.engine import NonFiniteLossError
from lfem_plugin.engine.loop import read_summaries
from lfem_plugin.optim import build_optimizer, guarded_step
from lfem_plugin.registry import MODELS

from ..helpers import tiny_engine

HOST_READS = ("item", "__bool__", "tolist", "nonzero", "__int__", "__float__", "__index__", "numpy", "cpu",
              "argwhere", "any", "all")


def _batch(seed: int = 0, nan: bool = False):
    g = torch.Generator().manual_seed(seed)
    views = [torch.randn(4, 3, 64, 32, generator=g) for _ in range(3)]
    if nan:
        views[0][0, 0, 0, 0] = float("nan")
    return {"img": views, "pid": torch.tensor([0, 0, 1, 1]), "camid": torch.tensor([0, 1, 0, 1])}


class _Batches(list):
    batch_size = 4


def _count_host_reads(monkeypatch):
    """Wraps every Tensor method that reads a value to the host (or branches on one); returns the call log."""
    calls = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return calls


def test_the_counter_sees_host_reads(monkeypatch):  # the wrapper below is not blind
    calls = _count_host_reads(monkeypatch)
    x = torch.ones(3)
    x.sum().item(), bool(x.any()), x.tolist(), x.nonzero(), float(x[0])
    assert {"item", "__bool__", "tolist", "nonzero", "__float__", "any"} <= set(calls)


def test_a_training_step_reads_nothing_to_the_host(monkeypatch):
    engine = tiny_engine()
    batch = _batch()
    engine.forward_backward(batch)  # the first step builds the optimiser state
    calls = _count_host_reads(monkeypatch)
    summary = engine.forward_backward(batch)
    assert calls == []
    monkeypatch.undo()
    assert all(torch.is_tensor(v) and v.dim() == 0 for v in summary.values())
    assert {"loss", "acc", "ce/original", "tri/local4", "gate/1"} <= set(summary)


def test_the_step_values_read_later_are_the_step_values():
    torch.manual_seed(0)
    engine = tiny_engine()
    summary = engine.forward_backward(_batch())
    read = read_summaries([summary, {"lr": 0.5}])
    assert read[0] == {k: v.item() for k, v in summary.items()} and read[1] == {"lr": 0.5}
    terms = [v for k, v in read[0].items() if k.startswith(("ce/", "tri/"))]
    assert read[0]["loss"] == pytest.approx(sum(terms), rel=1e-6)
    assert read_summaries([]) == []


def test_training_step_and_evaluation_forward_are_one_graph_each():
    engine = tiny_engine()
    views = torch.stack(_batch()["img"])
    pids, cams = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
    train = torch._dynamo.explain(engine.training_step)(Batch(views, cams, pids))
    assert train.graph_break_count == 0, train.break_reasons
    evaluation = torch._dynamo.explain(engine.model.eval())(views[0], camera=cams)
    assert evaluation.graph_break_count == 0, evaluation.break_reasons


def test_compile_covers_the_loss():
    engine = tiny_engine()
    engine.compile(backend="eager")  # the graph capture, without a compiler toolchain
    assert "training_step" in vars(engine)  # the one name, now the compiled step
    assert engine.model._compiled_call_impl is not None
    torch.manual_seed(0)
    compiled = engine.forward_backward(_batch())
    torch.manual_seed(0)
    eager = tiny_engine().forward_backward(_batch())
    assert set(compiled) == set(eager)


def _train(engine, batches, print_freq):
    engine.train_loader, engine.epoch, engine.max_epoch = _Batches(batches), 0, 1
    engine.train(print_freq=print_freq)


def test_a_non_finite_step_stops_the_run_and_changes_no_weight(tmp_path):
    torch.manual_seed(0)
    engine = tiny_engine()
    _train(engine, [_batch(0)], print_freq=10)
    after_first = copy.deepcopy(dict(engine.model.named_parameters()))
    batches = [_batch(1, nan=True), _batch(2)]  # iteration 1 non-finite, iteration 2 finite: both read at the end
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at epoch 1, iteration 1 \(step 2\).*ce/original"):
        _train(engine, batches, print_freq=10)
    for name, param in engine.model.named_parameters():
        assert torch.equal(param, after_first[name]), name


def test_a_finite_run_updates_the_weights_and_fills_the_log(capsys):
    torch.manual_seed(0)
    engine = tiny_engine()
    before = copy.deepcopy(dict(engine.model.named_parameters()))
    _train(engine, [_batch(0), _batch(1), _batch(2)], print_freq=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch: [")]
    assert len(lines) == 1 and lines[0].startswith("epoch: [1/1][2/3]") and "ce/original" in lines[0]
    assert not torch.equal(before["backbone.pos_embed"], engine.model.backbone.pos_embed)


@pytest.mark.parametrize("fused", [False, True])
def test_guarded_step_changes_nothing_on_a_false_flag(fused):
    model = torch.nn.Linear(3, 2)
    optimizer = build_optimizer(model, lr=0.1, weight_decay=0.0, weight_decay_bias=0.0, bias_lr_factor=1.0,
                                device="cuda" if fused else "cpu")  # fused kernels run on the CPU too
    model(torch.ones(1, 3)).sum().backward()
    before = [p.detach().clone() for p in model.parameters()]
    guarded_step(optimizer, torch.tensor(False))
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert not hasattr(optimizer, "found_inf")
    guarded_step(optimizer, torch.tensor(True))
    if fused:  # the skipped step left no momentum behind: this is a first step
        expected = [b - 0.1 * p.grad for p, b in zip(model.parameters(), before)]
        assert all(torch.allclose(p, e) for p, e in zip(model.parameters(), expected))
    else:
        assert not any(torch.equal(p, b) for p, b in zip(model.parameters(), before))


@pytest.mark.parametrize("optim", ["sgd", "adamw"])
def test_fused_optimiser_on_cuda_foreach_elsewhere(optim):
    model = MODELS.get("lfem_vit_tiny")(num_classes=4, loss="triplet")
    cuda = build_optimizer(model, optim=optim, device="cuda")
    assert cuda.defaults["fused"] is True and not cuda.defaults["foreach"]
    assert cuda._step_supports_amp_scaling  # GradScaler and guarded_step skip on the device
    if optim == "sgd":  # momentum starts at zeros, so a skipped first step leaves no uninitialised memory behind
        assert all(torch.equal(s["momentum_buffer"], torch.zeros_like(p)) for p, s in cuda.state.items())
    cpu = build_optimizer(model, optim=optim, device="cpu")
    assert cpu.defaults["foreach"] is True and not cpu.defaults["fused"]
    assert build_optimizer(model, optim=optim).defaults["foreach"] is True  # parameters on CPU: foreach


def test_evaluation_precision_is_checked_and_off_on_the_cpu():
    from lfem_plugin.engine import LFEMEngine
    engine = tiny_engine()
    assert engine.eval_amp == "off"
    with pytest.raises(ValueError, match="test.amp='fp16'; choices: 'bf16', 'off'"):
        LFEMEngine(engine.datamanager, engine.model, engine.optimizer, engine.scheduler, engine.criterion,
                   use_gpu=False, eval_amp="fp16")
    cpu = LFEMEngine(engine.datamanager, engine.model, engine.optimizer, engine.scheduler, engine.criterion,
                     use_gpu=False, eval_amp="bf16")
    assert cpu.eval_amp == "off"
