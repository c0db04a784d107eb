"""GPU speed-ups: a CPU fit uses none of them, each does what it says, and every method trains under them.

The GPU itself is not here; the bf16/channels-last/fused path is exercised on the CPU (autocast, channels-last and
fused optimisers all exist there), which is where a dtype mismatch between a method's pieces would show up.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from collections import defaultdict

import pytest
import torch
from torch import nn
from torch._dynamo import list_backends, register_backend
from torch._dynamo.backends.registry import lookup_backend

from engine.bench import method_step_times
from engine.methods import FitContext, get_method, list_methods
from engine.methods.speedups import CompileFallbackWarning, Speedups
from engine.methods.training import make_optimizer, to_device, train_epochs
from engine.nn import build_backbone, nt_xent_loss

CPU = torch.device("cpu")
ALL_GPU_SPEEDUPS = Speedups(autocast_dtype=torch.bfloat16, channels_last=True, fused_optimizer=True)


def test_a_cpu_fit_uses_none_of_the_gpu_speedups():
    assert Speedups.for_device(CPU) == Speedups()
    assert FitContext("cpu").speedups == Speedups()
    assert isinstance(FitContext("cpu").autocast(), type(Speedups().autocast(CPU)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_fit_uses_bf16_channels_last_and_fused_optimisers():
    speedups = Speedups.for_device(torch.device("cuda"), compile=False)
    assert speedups.autocast_dtype == torch.bfloat16 and speedups.channels_last and speedups.fused_optimizer
    assert speedups.tuned_kernels and not speedups.compile


def test_cpu_speedups_leave_the_process_wide_kernel_settings_alone():
    before = torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()
    Speedups.for_device(CPU).prepare(nn.Linear(2, 2))
    assert (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()) == before == (False, "highest")


def test_prepare_lays_convolutions_out_channels_last_and_keeps_checkpoint_keys():
    model = build_backbone("resnet18", 32, 3)
    keys = list(model.state_dict())
    Speedups(channels_last=True).prepare(model)
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convolutions and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convolutions)
    assert list(model.state_dict()) == keys


def test_autocast_runs_the_network_in_bfloat16_and_the_loss_in_float32():
    layer = nn.Linear(8, 4)
    with Speedups(autocast_dtype=torch.bfloat16).autocast(CPU):
        z_a, z_b = layer(torch.randn(16, 8)), layer(torch.randn(16, 8))
        loss = nt_xent_loss(z_a, z_b, 0.1)
    assert z_a.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    assert layer.weight.grad.dtype == torch.float32


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_optimisers_are_fused_only_when_asked(name):
    parameter = nn.Parameter(torch.randn(3))
    assert make_optimizer(name, [parameter], 0.1, 0.0, fused=True).defaults["fused"]
    assert not make_optimizer(name, [parameter], 0.1, 0.0).defaults.get("fused")


def test_to_device_keeps_cpu_draws_unchanged():
    draws = torch.randint(10, (5,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(to_device(draws, CPU), draws)


@pytest.fixture(scope="module")
def digits_subset(digits):
    """600 digits: enough for a few steps of every stage at the fast presets' batches."""
    return dataclasses.replace(digits, images=digits.images[:600], labels=digits.labels[:600])


@pytest.mark.parametrize("method", sorted(list_methods()))
def test_every_method_trains_under_bf16_autocast_channels_last_and_fused_optimisers(method, digits_subset):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = method_step_times(method, digits_subset, CPU, speedups=ALL_GPU_SPEEDUPS)
    finally:
        torch.set_num_threads(threads)
    assert [row["stage"] for row in rows] == [stage.name for stage in get_method(method).stages]
    # one epoch may well leave a clustering collapsed; a NaN loss or a dtype error may not
    assert all(row["fit_outcome"] == "finished" or "collapsed" in row["fit_outcome"] for row in rows), rows
    assert all(row["speedups"] == "bfloat16+channels_last+fused_optimizer" for row in rows)


class HostSyncCounter:
    """Counts the calls from engine code of the tensor operations that make the CPU wait for a GPU: reading values
    (``item``, ``float``, ``bool``, ``tolist``, ``cpu``, ``numpy``), counting (``nonzero``, ``bincount``) and
    indexing by a mask. Calls inside torch are not counted (an optimiser reads its step counter, a CPU tensor), nor
    K-means' (it checks convergence once per Lloyd iteration, and how many iterations it takes depends on the
    features, not on the training loop)."""

    READS = ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__float__", "__int__")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        for name in self.READS:
            monkeypatch.setattr(torch.Tensor, name, self._counting(getattr(torch.Tensor, name)))
        monkeypatch.setattr(torch, "bincount", self._counting(torch.bincount))
        monkeypatch.setattr(torch, "nonzero", self._counting(torch.nonzero))
        getitem = torch.Tensor.__getitem__

        def masked_getitem(tensor, index):
            parts = index if isinstance(index, tuple) else (index,)
            if any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts) and _called_from_engine():
                self.count += 1
            return getitem(tensor, index)
        monkeypatch.setattr(torch.Tensor, "__getitem__", masked_getitem)

    def _counting(self, function):
        def counted(*args, **kwargs):
            self.count += _called_from_engine()
            return function(*args, **kwargs)
        return counted


def _called_from_engine() -> bool:
    caller = sys._getframe(2).f_code.co_filename
    return f"{os.sep}engine{os.sep}" in caller and not caller.endswith("kmeans.py")


@pytest.mark.parametrize("method", ["scan", "smc", "cc", "pica", "socnet"])
def test_training_steps_read_nothing_back_from_the_device(method, digits_subset, monkeypatch):
    """Host syncs happen per epoch and per stage (losses, checkpoints, mining), never per step: a run with three
    times as many steps per epoch makes exactly as many of them. Covers the SimCLR and queue pretexts, the SCAN
    heads, self-labelling, and the CC, PICA and S3OC loops."""
    batch_settings = [name for name in dataclasses.asdict(get_method(method).Config()) if name.endswith("batch_size")]
    counts = []
    for batch_size in (50, 150):  # 12 and 4 steps per epoch over 600 images
        counter = HostSyncCounter(monkeypatch)
        rows = method_step_times(method, digits_subset, CPU, **{name: batch_size for name in batch_settings})
        monkeypatch.undo()
        assert all(row["fit_outcome"] == "finished" or "collapsed" in row["fit_outcome"] for row in rows), rows
        counts.append(counter.count)
    assert counts[0] == counts[1] > 0


@pytest.mark.parametrize("capability, native, expected", [((6, 1), False, None), ((7, 0), False, torch.float16),
                                                         ((7, 5), False, torch.float16),
                                                         ((8, 0), True, torch.bfloat16)])
def test_bfloat16_where_the_gpu_computes_it_natively_else_float16_on_tensor_cores(monkeypatch, capability, native,
                                                                                    expected):
    """A V100 (7.0) or T4 (7.5) emulates bfloat16, slower than float32: it trains in float16 with a gradient scaler;
    a GTX 1080 (6.1) has no float16 tensor cores and trains in float32; an A100 (8.0) trains in bfloat16."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation or native)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    speedups = Speedups.for_device(torch.device("cuda"), compile=False)
    assert speedups.autocast_dtype == expected and speedups.channels_last and speedups.fused_optimizer
    assert speedups.scales_gradients == (expected == torch.float16)


def test_float16_runs_only_in_a_loop_that_scales_its_gradients():
    layer, x = nn.Linear(4, 2), torch.randn(3, 4)
    with Speedups(autocast_dtype=torch.float16).autocast(CPU):
        assert layer(x).dtype == torch.float32
    with Speedups(autocast_dtype=torch.float16).autocast(CPU, gradients_scaled=True):
        assert layer(x).dtype == torch.float16
    with Speedups(autocast_dtype=torch.bfloat16).autocast(CPU):
        assert layer(x).dtype == torch.bfloat16


def test_train_epochs_scales_float16_gradients_skipping_the_steps_that_overflow(tmp_path):
    """dLoss/dW is 80 per weight here: scaled by GradScaler's first 2^16 it overflows float16 (max 65504), so the
    step is skipped and the scale halved, seven times, until 2^9 (80·512 = 40960 fits); the three steps left update
    the weights by exactly what three unscaled float32 SGD steps would (momentum 0.9: 80 + 152 + 216.8 = 448.8
    times the learning rate). The loss scale is checkpointed with the stage."""
    layer = nn.Linear(4, 1)
    before = layer.weight.detach().clone()
    context = FitContext("cpu", speedups=Speedups(autocast_dtype=torch.float16), checkpoint_dir=tmp_path)
    optimizer = make_optimizer("sgd", layer.parameters(), 1e-3, 0.0)
    images = torch.full((8, 4), 10.0)
    dtypes, losses = [], []

    def step(indices, at):
        out = layer(images[indices])
        dtypes.append(out.dtype)
        loss = out.float().sum()
        losses.append(loss.detach())
        return {"loss": loss}

    train_epochs(context, "stage", layer, optimizer, step, epochs=10, n_samples=8, batch_size=8,
                 generator=torch.Generator().manual_seed(0), losses=("loss",), lr=1e-3)
    assert set(dtypes) == {torch.float16} and all(torch.isfinite(loss) for loss in losses)
    assert torch.allclose(before - layer.weight.detach(), torch.full_like(before, 448.8e-3), atol=1e-4)
    assert torch.load(tmp_path / "stage.pt")["state"]["scaler"]["scale"] == 2.0 ** 9


class GraphsPerStage:
    """A ``torch.compile`` backend (``aot_eager`` underneath: traced, not code-generated) that counts the graphs
    compiled during each stage of a fit; pass it as ``observe`` to follow the stages."""

    NAME = "dce_graphs_per_stage"
    current: "GraphsPerStage | None" = None

    def __init__(self) -> None:
        self.graphs: dict[str, int] = defaultdict(int)
        self.stage = "outside any stage"
        GraphsPerStage.current = self

    def __call__(self, event) -> None:
        if event.kind == "stage":
            self.stage = event.stage
        elif event.kind == "stage_done":
            self.stage = f"after {event.stage}"

    @staticmethod
    def backend(graph, example_inputs):
        GraphsPerStage.current.graphs[GraphsPerStage.current.stage] += 1
        return lookup_backend("aot_eager")(graph, example_inputs)


if GraphsPerStage.NAME not in list_backends(exclude_tags=()):
    register_backend(GraphsPerStage.backend, name=GraphsPerStage.NAME)

UNTRAINED_STAGES = ("mine", "init")  # neighbour mining and JULE's initial clusters train no network


@pytest.mark.parametrize("method", sorted(set(list_methods()) - {"kmeans", "dec"}))
def test_compile_covers_what_each_training_stage_calls(method, digits_subset):
    """With compile on, every stage that trains a network compiles at least one graph: what its loop calls, be it
    the model, a submodule (DigPro's online and target networks) or a method (the queue pretexts' ``contrast``).
    Before, ``prepare`` compiled the top-level module only, so SPICE's and smc's pretexts and DigPro compiled
    nothing, and JULE used no speed-up at all."""
    torch._dynamo.reset()
    graphs = GraphsPerStage()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = method_step_times(method, digits_subset, CPU, observe=graphs,
                                 speedups=Speedups(compile=True, compile_backend=GraphsPerStage.NAME))
    finally:
        torch.set_num_threads(threads)
    trained = [s.name for s in get_method(method).stages if s.name not in UNTRAINED_STAGES]
    assert all(row["fit_outcome"] == "finished" or "collapsed" in row["fit_outcome"] for row in rows), rows
    assert all(graphs.graphs[stage] > 0 for stage in trained), dict(graphs.graphs)
    # embedding (features for K-means, mining, the results) runs the plain module: it compiles nothing
    assert not [stage for stage in graphs.graphs if stage not in trained], dict(graphs.graphs)


def _failing_backend(gm, example_inputs):
    raise RuntimeError("PassManager::run failed (a stand-in for a Triton compiler bug)")


def test_a_compiler_failure_warns_and_the_step_runs_uncompiled():
    if "dce_test_failing" not in list_backends(exclude_tags=()):
        register_backend(_failing_backend, name="dce_test_failing")
    torch._dynamo.reset()
    model = nn.Linear(4, 2)
    forward = Speedups(compile=True, compile_backend="dce_test_failing").compiled(model)
    x = torch.randn(3, 4)
    with pytest.warns(CompileFallbackWarning, match="PassManager::run failed"):
        out = forward(x)
    torch.testing.assert_close(out, model(x))
    assert forward.weight is model.weight  # the wrapper still reads as the module
    out.sum().backward()
    assert model.weight.grad is not None


def test_an_error_of_the_step_itself_is_not_swallowed_by_the_fallback():
    torch._dynamo.reset()
    forward = Speedups(compile=True, compile_backend="eager").compiled(nn.Linear(4, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)  # nor taken for a compiler failure
        with pytest.raises(RuntimeError, match="shapes cannot be multiplied|size mismatch|mat1"):
            forward(torch.randn(3, 5))
    assert forward.failed is None
    assert forward(torch.randn(3, 4)).shape == (3, 2)  # still compiled
