"""Network-grid resampling and its inverse; phase row selection; augmentation stays in range."""

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric

from common.data.manifest import load_case, read_manifest
from common.errors import InputDataError
from common.models.presets import get_preset
from common.train.data import SliceDataset, image_to_net, mask_to_net, net_geometry, to_native

TINY = get_preset("tiny")


def test_geometry_crop_and_pad():
    # 512 px at 0.8 mm = 409.6 mm -> 64 px at 6.4 mm: exactly the net grid, no offset.
    g = net_geometry((512, 512), (0.8, 0.8), TINY)
    assert g.resized_shape == (64, 64) and g.offset == (0, 0)
    # Wider field (500 mm) is centre-cropped; narrower one (300 mm) padded.
    assert net_geometry((500, 500), (1.0, 1.0), TINY).offset == (7, 7)  # 78 px -> crop 7 each side
    assert net_geometry((300, 300), (1.0, 1.0), TINY).offset == (-9, -9)  # 47 px -> pad 9 before


def test_pad_is_air_and_mask_round_trip_keeps_dice():
    yy, xx = np.mgrid[0:300, 0:360]
    mask = ((((yy - 150) / 100.0) ** 2 + ((xx - 180) / 140.0) ** 2) < 1).astype(np.uint8)
    hu = np.where(mask > 0, 50.0, -100.0).astype(np.float32)
    geom = net_geometry(mask.shape, (1.0, 1.0), TINY)
    net = image_to_net(hu, geom)
    assert net.shape == (64, 64) and net[0, 0] == -1000.0  # padded with air
    back = to_native(mask_to_net(mask, geom).astype(np.float32), None, geom=geom) >= 0.5
    assert back.shape == mask.shape
    dice = DiceMetric()(
        torch.from_numpy(back[None, None].astype(np.float32)), torch.from_numpy(mask[None, None].astype(np.float32))
    )
    assert float(dice) > 0.97


def test_phase_rows_and_items(ring_site):
    ssl = SliceDataset(ring_site, TINY, "ssl", seed=0)
    seg = SliceDataset(ring_site, TINY, "seg", seed=0)
    cls = SliceDataset(ring_site, TINY, "cls", augment=False)
    assert (len(ssl), len(seg), len(cls)) == (16, 12, 12)  # train+unlabelled / train with masks / labels
    item = ssl[0]
    assert item["image"].shape == (1, 64, 64) and "image2" in item
    assert not torch.equal(item["image"], item["image2"])  # two different views
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    assert 0.0 <= float(seg[0]["mask"].min()) and float(seg[0]["mask"].max()) <= 1.0 and seg[0]["mask"].sum() > 0
    assert set(cls.labels.tolist()) == {0, 1}


def test_cached_image_matches_native(ring_site):
    df = read_manifest(ring_site)
    ds = SliceDataset(df, TINY, "seg", augment=False)
    ct, _ = load_case(ds.rows.iloc[0])
    assert np.array_equal(ds.images[0].numpy(), image_to_net(ct.hu, net_geometry(ct.shape, ct.spacing_mm, TINY)))


def test_no_rows_for_phase(ring_site):
    df = read_manifest(ring_site)
    with pytest.raises(InputDataError, match="no rows for phase 'seg'"):
        SliceDataset(df[df["split"] == "unlabelled"], TINY, "seg")


def test_slice_cache_is_keyed_by_content(ring_site, tmp_path):
    import shutil

    from common.train.data import load_slices, select_rows

    site = tmp_path / "site"
    shutil.copytree(ring_site.parent, site)
    rows = select_rows(read_manifest(site / "manifest.csv"), "seg")
    cache = tmp_path / "cache"
    made = load_slices(rows, TINY, cache)
    [entry] = list(cache.iterdir())
    again = load_slices(rows, TINY, cache)
    assert torch.equal(made.images, again.images) and torch.equal(made.masks, again.masks)
    assert again.geometries == made.geometries and torch.equal(again.labels, made.labels)
    assert torch.equal(load_slices(rows, TINY).images, made.images)  # with or without the cache: the same
    copied = tmp_path / "copy"  # another folder with the same files hits the same entry
    shutil.copytree(site, copied)
    load_slices(select_rows(read_manifest(copied / "manifest.csv"), "seg"), TINY, cache)
    assert list(cache.iterdir()) == [entry]
    mask = site / rows.iloc[0]["mask_path"]  # an edited mask is a new entry, never the stale one
    ct, _ = load_case(rows.iloc[0])
    from common.data.mask_io import write_mask_nifti

    write_mask_nifti(mask, np.zeros(ct.shape, np.uint8), ct.geometry)
    edited = load_slices(select_rows(read_manifest(site / "manifest.csv"), "seg"), TINY, cache)
    assert float(edited.masks[0].sum()) == 0.0 and len(list(cache.iterdir())) == 2


def test_a_broken_cache_entry_is_rebuilt(ring_site, tmp_path):
    from common.train.data import load_slices, select_rows

    rows = select_rows(read_manifest(ring_site), "cls")
    made = load_slices(rows, TINY, tmp_path)
    [entry] = list(tmp_path.iterdir())
    entry.write_bytes(b"truncated")
    assert torch.equal(load_slices(rows, TINY, tmp_path).images, made.images)


def test_reseed_restarts_the_augmentation_stream(ring_site):
    """A site that trains a second round in the same process draws what a fresh process would."""
    used = SliceDataset(ring_site, TINY, "seg", seed=1)
    [used[i] for i in range(len(used))]
    used.reseed(7)
    fresh = SliceDataset(ring_site, TINY, "seg", seed=7)
    for i in range(3):
        assert torch.equal(used[i]["image"], fresh[i]["image"])
