"""The on-disk item store that training on real cutouts streams from."""

import math

import numpy as np
import pytest
import torch

from galmoss_auto.data_scripts.item_store import ItemWriter, Mixed, StoredItems, read_index, write_items


def _items(n):
    for i in range(n):
        yield {"image": np.full((3 + i % 2, 4), i, np.float32), "mask": torch.tensor([i % 2 == 0, True]),
               "id": f"g{i}", "zeropoint": 22.5, "scale": math.nan,
               "target": {"mag": 18.0 + i, "boxes": torch.arange(4, dtype=torch.float64).reshape(1, 4) + i,
                          "labels": torch.tensor([1], dtype=torch.int64), "deep": {"flag": None}}}


def test_items_come_back_as_written(tmp_path):
    n = write_items(tmp_path / "s", _items(7), key="k1", per_file=3)
    assert n == 7
    assert [c for _, c in read_index(tmp_path / "s")["files"]] == [3, 3, 1]
    got = list(StoredItems(tmp_path / "s"))
    assert [it["id"] for it in got] == [f"g{i}" for i in range(7)]
    for i, it in enumerate(got):
        assert it["image"].dtype == torch.float32 and it["image"].shape == (3 + i % 2, 4)
        assert float(it["image"][0, 0]) == i
        assert it["mask"].dtype == torch.bool and it["mask"].tolist() == [i % 2 == 0, True]
        assert it["zeropoint"] == 22.5 and math.isnan(it["scale"])
        assert it["target"]["mag"] == 18.0 + i
        assert it["target"]["boxes"].dtype == torch.float64 and it["target"]["boxes"][0, 0] == i
        assert it["target"]["labels"].dtype == torch.int64
        assert it["target"]["deep"] == {"flag": None}


def test_the_index_says_whether_a_store_can_be_used(tmp_path):
    write_items(tmp_path / "s", _items(2), key="k1")
    assert read_index(tmp_path / "s", "k1")["n"] == 2
    assert read_index(tmp_path / "s", "k2") is None          # prepared from other inputs
    with pytest.raises(RuntimeError):                         # an interrupted preparation
        with ItemWriter(tmp_path / "t", "k1", per_file=1) as w:
            for it in _items(3):
                w.add(it)
            raise RuntimeError("killed")
    assert read_index(tmp_path / "t") is None
    with pytest.raises(FileNotFoundError, match="index.json"):
        StoredItems(tmp_path / "t")
    with pytest.raises(ValueError, match="neither an array nor a JSON value"):
        write_items(tmp_path / "u", [{"x": object()}], key="k")


def test_ranks_and_workers_each_read_their_own_items(tmp_path):
    write_items(tmp_path / "s", _items(11), key="k", per_file=4)
    for world in (1, 2, 3):
        seen = []
        for rank in range(world):
            ds = StoredItems(tmp_path / "s", shuffle=True, seed=5, rank=rank, world_size=world)
            ds.set_epoch(2)
            ids = [it["id"] for it in ds]
            assert len(ids) == len(ds) == 11 // world          # the ranks step together
            seen += ids
        assert len(seen) == len(set(seen)) == 11 // world * world
    ds = StoredItems(tmp_path / "s", shuffle=True, seed=5)
    first = [it["id"] for it in ds]
    ds.set_epoch(1)
    assert sorted(first) == sorted(it["id"] for it in ds) and first != [it["id"] for it in ds]
    # two data-loader workers share the items out, none read twice
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    ids = [it["id"] for it in loader]
    assert sorted(ids) == sorted(f"g{i}" for i in range(11))


def test_mixed_interleaves_every_item_of_every_stream_once(tmp_path):
    write_items(tmp_path / "a", _items(5), key="a", per_file=2)
    write_items(tmp_path / "b", ({**it, "id": "b" + it["id"]} for it in _items(9)), key="b", per_file=4)
    mixed = Mixed([StoredItems(tmp_path / "a", shuffle=True), StoredItems(tmp_path / "b", shuffle=True)], seed=1)
    ids = [it["id"] for it in mixed]
    assert len(mixed) == 14 and sorted(ids) == sorted([f"g{i}" for i in range(5)] + [f"bg{i}" for i in range(9)])
    assert ids[:5] != [f"g{i}" for i in range(5)]
