"""Decoded-image caches (core.image_cache, data.cache): a cached image is bit for bit the decoded
one for every consumer; disk entries are keyed by content and settings (hit, miss, stale, rebuilt);
a failing disk turns the cache off and removes it; the RAM budget is clamped; per-sample seeds."""

import errno
import json

import cv2
import numpy as np
import pytest
import torch

from clca_edge.core import image_cache as ic
from clca_edge.core.errors import OutputError
from clca_edge.core.image_cache import DiskImageCache, RamImageCache, ram_budget
from clca_edge.core.preprocess import PreprocessSpec, load_rgb, preprocess
from clca_edge.data.cache import open_run_cache

SPEC = PreprocessSpec(img_size=48)


def _write_images(folder, n=6, seed=0, shapes=((90, 70), (64, 64), (40, 120))):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = shapes[i % len(shapes)]
        p = folder / f"img{i}.png"
        cv2.imwrite(str(p), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        paths.append(str(p))
    return paths


@pytest.fixture
def pics(tmp_path):
    return _write_images(tmp_path / "pics")


def test_cached_images_give_every_consumer_the_tensors_of_a_fresh_decode(pics, tmp_path):
    from clca_edge.data.augment import build_train_transform
    from clca_edge.data.dataset import LeafImages
    from clca_edge.data.transforms import EvalTransform

    ram = RamImageCache(SPEC, budget=1 << 30)
    disk, _ = DiskImageCache.open(tmp_path / "c", SPEC)
    for p in pics:
        assert ram.get(p) is not None and disk.get(p) is not None
    disk.freeze()
    assert len(ram) == len(pics) and disk.decoded == len(pics)
    samples = [(p, 0) for p in pics]
    for make in (lambda: EvalTransform(SPEC), *(lambda a=a: build_train_transform(a, SPEC) for a in
                                                ("weak", "field", "none"))):
        plain = LeafImages(samples, make(), seed=3)
        for cache in (ram, disk):
            cached = LeafImages(samples, make(), images=cache, seed=3)
            for key in [(0, 0), (1, 1), (2, 5)]:
                assert torch.equal(plain[key][0], cached[key][0])
    for p in pics:  # and the runtime's preprocessing (the deploy gate, the device)
        assert np.array_equal(preprocess(load_rgb(p), SPEC), preprocess(disk.get(p), SPEC))


def test_disk_cache_hits_misses_and_never_serves_a_changed_image(pics, tmp_path, monkeypatch):
    root = tmp_path / "c"
    first, notes = DiskImageCache.open(root, SPEC)
    assert notes == [] and [first.get(p).shape for p in pics]
    assert (first.hits, first.decoded) == (0, len(pics))
    again, _ = DiskImageCache.open(root, SPEC)
    calls = []
    real = ic.decode_resized
    monkeypatch.setattr(ic, "decode_resized", lambda *a: calls.append(a) or real(*a))
    for p in pics:
        assert np.array_equal(again.get(p), first.get(p))
    assert again.hits == len(pics) and calls == []  # nothing decoded on a hit
    # Same path, new content: a different key, decoded again (never the stale pixels).
    cv2.imwrite(pics[0], np.full((64, 64, 3), 200, np.uint8))
    third, _ = DiskImageCache.open(root, SPEC)
    img = third.get(pics[0])
    assert len(calls) == 1 and third.decoded == 1
    assert np.array_equal(img, np.full((SPEC.resize_size, SPEC.resize_size, 3), 200, np.uint8))
    assert len(list((root / "entries").rglob("*.npy"))) == len(pics) + 1
    assert not list(root.rglob("*.tmp"))  # every entry renamed into place


def test_disk_cache_of_other_settings_or_format_is_rebuilt_with_a_note(pics, tmp_path):
    root = tmp_path / "c"
    cache, _ = DiskImageCache.open(root, SPEC)
    cache.get(pics[0])
    other, notes = DiskImageCache.open(root, PreprocessSpec(img_size=32))
    assert len(notes) == 1 and "rebuilding" in notes[0] and "resize_size 54 (now 36)" in notes[0]
    assert not list((root / "entries").rglob("*.npy"))
    other.get(pics[0])
    meta = json.loads((root / "cache.json").read_text())
    meta["settings"]["format"] = ic.CACHE_FORMAT - 1  # a cache written by an older version
    (root / "cache.json").write_text(json.dumps(meta))
    _, notes = DiskImageCache.open(root, PreprocessSpec(img_size=32))
    assert len(notes) == 1 and "format" in notes[0] and not list((root / "entries").rglob("*.npy"))
    # A reader (eval, deploy) never rebuilds: it does not use a cache of other settings.
    assert ic.open_for_reading(root, SPEC) is None and ic.open_for_reading(tmp_path / "none", SPEC) is None


def test_disk_cache_refuses_a_folder_that_is_not_a_cache(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not a clca-edge image cache"):
        DiskImageCache.open(tmp_path / "mine", SPEC)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_unreadable_files_are_found_once(pics, tmp_path, monkeypatch):
    bad = tmp_path / "pics" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    cache, _ = DiskImageCache.open(tmp_path / "c", SPEC)
    assert cache.get(str(bad)) is None and cache.get(str(tmp_path / "missing.png")) is None
    calls = []
    monkeypatch.setattr(ic, "decode_resized", lambda *a: calls.append(a))
    again, _ = DiskImageCache.open(tmp_path / "c", SPEC)
    assert again.get(str(bad)) is None and calls == []  # the .bad marker of its content
    assert again.unreadable == 1


def test_a_full_disk_turns_the_cache_off_and_removes_it(pics, tmp_path, monkeypatch, caplog):
    root = tmp_path / "c"
    cache, _ = DiskImageCache.open(root, SPEC)
    real, writes = DiskImageCache._write, []

    def filling_up(self, path, data):
        if len(writes) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        writes.append(path)
        real(self, path, data)

    monkeypatch.setattr(DiskImageCache, "_write", filling_up)
    got = [cache.get(p) for p in pics]
    cache.finish()
    assert all(g is not None for g in got)  # every image still served, decoded
    assert cache.failed and "No space left on device" in cache.failed
    assert not root.exists()  # the partial cache is gone
    assert any("going on uncached" in r.getMessage() for r in caplog.records)


def test_ram_budget_is_clamped_to_the_memory_available_and_said(monkeypatch):
    gb = ic.GB
    b = ram_budget(requested_gb=1000, available=8 * gb)
    assert b.bytes == int(8 * gb * ic.MAX_RAM_FRACTION) and "clamped" in b.note and "1000 GB" in b.note
    assert ram_budget(None, available=8 * gb).bytes == 4 * gb and "50% of the 8.0 GB" in ram_budget(None, available=8 * gb).note
    assert ram_budget(2, available=8 * gb, share=2).bytes == gb
    monkeypatch.setattr(ic, "available_memory", lambda: None)  # not Linux, no sysconf
    assert ram_budget(None).bytes == 0 and "unknown" in ram_budget(None).note


def test_auto_caches_in_ram_only_what_fits_whole_and_says_which(pics, monkeypatch):
    monkeypatch.setattr(ic, "available_memory", lambda: 10 * 2**20)  # 5 MiB budget: fits
    rc = open_run_cache("auto", SPEC, expected=len(pics), run_dir="unused")
    assert all(rc.readable(p) for p in pics)
    line = rc.finish()
    assert line.startswith("cache: ram (auto)") and len(rc.cache) == len(pics)
    monkeypatch.setattr(ic, "available_memory", lambda: 30_000)  # 15 kB: two images at most
    rc = open_run_cache("auto", SPEC, expected=len(pics), run_dir="unused")
    assert all(rc.readable(p) for p in pics)
    line = rc.finish()
    assert rc.cache is None and line.startswith("cache: none: the decoded images") and "--cache disk" in line
    rc = open_run_cache("ram", SPEC, expected=len(pics), run_dir="unused")  # explicit: keeps what fits
    assert all(rc.readable(p) for p in pics)
    line = rc.finish()
    assert 0 < len(rc.cache) < len(pics) and "did not fit" in line


def test_sample_seeds_fix_the_augmentation_and_leave_the_callers_generator_alone(pics):
    from clca_edge.data.augment import build_train_transform
    from clca_edge.data.dataset import EpochSampler, LeafImages

    ds = LeafImages([(p, 0) for p in pics], build_train_transform("field", SPEC), seed=0)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = ds[(1, 2)][0]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, ds[(1, 2)][0]) and not torch.equal(a, ds[(2, 2)][0])
    assert not torch.equal(a, LeafImages(ds.samples, ds.transform, seed=1)[(1, 2)][0])
    sampler = EpochSampler(range(3))
    sampler.set_epoch(4)
    assert list(sampler) == [(4, 0), (4, 1), (4, 2)] and len(sampler) == 3


def test_the_deploy_gate_scores_the_same_through_a_cache(pics, tmp_path):
    from pathlib import Path

    from clca_edge.runtime.scoring import EvalSet, evaluate

    seen = {}

    def runner(name):
        def run(x):
            seen.setdefault(name, []).append(x.copy())
            return x.reshape(1, 3, -1).mean(axis=2)
        return run

    items = [(Path(p), i % 3) for i, p in enumerate(pics)]
    plain = evaluate(EvalSet(tmp_path, ["a", "b", "c"], items), SPEC, {"fp32": runner("plain")})
    disk, _ = DiskImageCache.open(tmp_path / "c", SPEC)
    for images in (RamImageCache(SPEC, 1 << 30), disk):
        cached = evaluate(EvalSet(tmp_path, ["a", "b", "c"], items, images=images), SPEC, {"fp32": runner("c")})
        assert cached.accuracy["fp32"].top1 == plain.accuracy["fp32"].top1
        assert all(np.array_equal(a, b) for a, b in zip(seen["plain"], seen.pop("c")))


def test_a_cache_dir_inside_the_class_folders_is_refused(tmp_path):
    from clca_edge.core.errors import ExitCode
    from clca_edge.data.synth import SynthConfig, write_synthetic_dataset
    from click.testing import CliRunner

    from clca_edge.cli import main

    data = tmp_path / "data"
    write_synthetic_dataset(data, SynthConfig(classes=2, per_class=4, size=32))
    res = CliRunner().invoke(main, ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--pretrained", "none",
                                    "--cache-dir", str(data / "train" / "cache")])
    assert res.exit_code == ExitCode.OUTPUT and "inside the class folders" in res.output
    assert not (data / "train" / "cache").exists() and not (tmp_path / "run").exists()
