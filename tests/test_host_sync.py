"""Training steps move nothing between host and device, checked without a GPU.

The ``meta`` device stands in for the accelerator (``engine.methods.host_sync.simulated_accelerator``): tensors
"on" it hold real CPU values, every op computes, and every copy across the boundary or value read on the host is
counted. A per-step cost shows up as a count that grows with the number of steps: each fit runs twice, with 12 and
with 4 steps per epoch, and every stage must count the same in both.
"""
from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch

from engine.bench import method_step_times
from engine.data.augment import build_augment
from engine.methods import get_method, list_methods
from engine.methods.host_sync import HostSyncs, simulated_accelerator
from engine.methods.simclr import ContrastiveModel
from engine.methods.training import make_optimizer
from engine.nn import build_backbone, nt_xent_loss

STAND_IN = torch.device("meta")


def test_the_counter_sees_copies_reads_and_data_dependent_ops_with_real_values():
    with simulated_accelerator() as syncs:
        x = torch.arange(6.0, device=STAND_IN)  # made on the device: nothing moves
        y = x + torch.tensor([1.0] * 6, device=STAND_IN)  # host data copied over
        assert y.cpu().tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # copied back (a plain host tensor's tolist)
        big = y[y > 3]  # the output's size depends on the data: the host waits
        assert bool(big.sum() == 15)  # a value read on the host
    assert (syncs.host_to_device, syncs.device_to_host, syncs.reads) == (1, 1, 2)


def test_the_stand_in_refuses_host_tensors_in_device_ops_as_a_gpu_does():
    with simulated_accelerator(), pytest.raises(RuntimeError, match="host tensor and a device tensor"):
        torch.ones(3, device=STAND_IN) + torch.ones(3)


def _counted_in(syncs: HostSyncs, step) -> Counter:
    before = Counter(syncs.ops)
    step()
    return Counter(syncs.ops) - before


def test_a_simclr_step_moves_nothing_between_host_and_device():
    """Augment two views (per-channel normalisation, colour jitter with hue, grayscale), forward, NT-Xent,
    backward, SGD: the second step (the first may set things up) copies and reads nothing."""
    images = torch.randint(0, 256, (32, 16, 16, 3), dtype=torch.uint8)
    torch.manual_seed(0)
    with simulated_accelerator() as syncs:
        images = images.to(STAND_IN)
        model = ContrastiveModel(build_backbone("resnet18", 16, 3), 32).to(STAND_IN)
        augment = build_augment("simclr", 16, 3, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
        optimizer = make_optimizer("sgd", model.parameters(), 0.1, 1e-4)

        def step() -> None:
            loss = nt_xent_loss(model(augment(images)), model(augment(images)), 0.5)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        step()
        assert _counted_in(syncs, step) == Counter()


@pytest.fixture(scope="module")
def digits_subset(digits):
    return dataclasses.replace(digits, images=digits.images[:600], labels=digits.labels[:600])


class StageCounts:
    """The host syncs of each stage of a fit and the stage's number of steps."""

    def __init__(self, syncs: HostSyncs) -> None:
        self.syncs, self.ops, self.steps = syncs, {}, {}
        self._stage, self._start = None, Counter()

    def __call__(self, event) -> None:
        if event.kind == "stage":
            self._stage, self._start, self.steps[event.stage] = event.stage, Counter(self.syncs.ops), event.total
        elif event.kind == "stage_done":
            # K-means checks convergence every Lloyd iteration, as many as the features need: not a step's cost
            self.ops[event.stage] = Counter({op: n for op, n in (Counter(self.syncs.ops) - self._start).items()
                                             if "kmeans.py" not in op})


# Pinned draws that a GPU queues without waiting (training.to_device), one per step here: the SCAN and TEMI losses'
# random neighbour of each anchor, and SPICE-Self's shuffle of each repeat (one step per repeat at these batch
# sizes). The stand-in cannot tell pinned from pageable memory, so they are named here.
PINNED_DRAWS_PER_STEP = {("scan", "cluster"): 1, ("smc", "cluster"): 1, ("spice", "self"): 1, ("temi", "cluster"): 1}


@pytest.mark.parametrize("method", sorted(set(list_methods()) - {"kmeans"}))
def test_training_steps_move_nothing_between_host_and_device(method, digits_subset):
    """Per stage, a fit with 12 steps per epoch copies and reads exactly as often as one with 4 (or as many more
    times as the stage has more pinned per-step draws); a stage whose number of steps does not follow the batch
    size (SPICE-Semi) is not compared. Before the fix the SimCLR pretext copied ~15 constants per
    step (normalisation, luma, YIQ matrices, NT-Xent's targets) and JULE two random draws per step."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    batch_settings = [n for n in dataclasses.asdict(get_method(method).Config()) if n.endswith("batch_size")]
    runs = []
    try:
        for batch_size in (50, 150):
            with simulated_accelerator() as syncs:
                counts = StageCounts(syncs)
                rows = method_step_times(method, digits_subset, STAND_IN, observe=counts,
                                         **{name: batch_size for name in batch_settings})
            assert all(row["fit_outcome"] == "finished" or "collapsed" in row["fit_outcome"] for row in rows), rows
            runs.append(counts)
    finally:
        torch.set_num_threads(threads)
    many, few = runs
    compared = 0
    for stage, ops in many.ops.items():
        extra_steps = many.steps[stage] - few.steps[stage]
        if extra_steps == 0:  # steps not set by the batch (mining, K-means, SPICE-Semi's fixed count): no evidence
            continue
        compared += 1
        per_step = dict(ops - few.ops[stage])
        allowed = PINNED_DRAWS_PER_STEP.get((method, stage), 0) * extra_steps
        assert sum(per_step.values()) == allowed and not few.ops[stage] - ops, (
            f"{method} {stage}: {extra_steps} more steps cost {per_step} (allowed {allowed} pinned draws)")
    assert compared, f"{method}: no stage ran more steps with the smaller batch"
