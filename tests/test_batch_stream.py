"""Level I's batch stream: each rank's parts of every global batch, cut from one permutation
per epoch; at a million examples too (``bench corpus``; the cut is linear in N)."""

import torch
from torch.utils.data import TensorDataset

from tapweight.method.batches import BatchStream, to_device


def test_ranks_split_each_global_batch_of_one_permutation():
    data = TensorDataset(torch.arange(103))
    streams = [BatchStream(data, 8, list, seed=5, shard=(rank, 2)) for rank in range(2)]
    parts = [s._batches(0) for s in streams]
    order = torch.randperm(103, generator=torch.Generator().manual_seed(5)).tolist()
    assert len(parts[0]) == 12  # 103 // 8 batches, the ragged tail dropped
    for i, (a, b) in enumerate(zip(*parts)):
        assert len(a) == len(b) == 4 and a + b == order[8 * i:8 * i + 8]


def test_an_epoch_of_a_million_is_a_partition_into_full_batches():
    stream = BatchStream(TensorDataset(torch.zeros(1_000_000)), 32, list, seed=0)
    batches = stream._batches(0)
    assert len(batches) == 31_250 and all(len(b) == 32 for b in batches[:3] + batches[-3:])
    assert sorted(i for b in batches for i in b) == list(range(1_000_000))


def test_to_device_makes_uint8_images_float_in_0_1_and_leaves_other_tensors():
    images = torch.tensor([[0, 51, 255]], dtype=torch.uint8)
    ids, labels = torch.tensor([3, 4]), torch.tensor([0.5])
    moved = to_device({"image": images, "index": ids, "pair": (labels,)}, torch.device("cpu"))
    assert moved["image"].dtype == torch.float32
    assert torch.equal(moved["image"], torch.tensor([[0.0, 0.2, 1.0]]))
    assert moved["index"] is ids and moved["pair"][0] is labels  # on their device already: the same tensors
    assert images.dtype == torch.uint8  # the caller's batch is not changed
