"""Harmonization: region modes, tiling, determinism, checkpoints, the set-level run and resume."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from metsynth.diffusion import harmonize as H
from metsynth.diffusion import refine
from metsynth.diffusion.harmonize import (
    Box,
    feather_weight,
    harmonize_set,
    harmonize_volume,
    lesion_boxes,
    load_denoiser,
    predict_noise_tiled,
    read_synthetic_set,
)
from metsynth.diffusion.presets import HarmonizeConfig
from metsynth.errors import ConfigError, InputError
from metsynth.volume import Volume


@pytest.fixture(scope="module")
def denoiser(trained):
    return load_denoiser(trained.export, device="cpu")


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------- boxes and weights
def test_lesion_boxes_cover_lesion_and_margin_and_hold_a_patch():
    label = np.zeros((40, 60, 60), np.uint8)
    label[5:8, 10:14, 10:14] = 1  # near a corner
    label[30:33, 40:45, 40:45] = 1
    boxes = lesion_boxes(label, (1.0, 1.0, 1.0), margin_mm=2.0, feather_mm=1.0, patch_size=(8, 16, 16))
    assert len(boxes) == 2
    for box, (lo, hi) in zip(boxes, [((5, 10, 10), (8, 14, 14)), ((30, 40, 40), (33, 45, 45))]):
        assert all(b >= p for b, p in zip(box.shape, (8, 16, 16)))
        assert all(0 <= a and b <= n for a, b, n in zip(box.lo, box.hi, label.shape))
        assert all(a <= max(lo_ - 3, 0) and b >= min(hi_ + 3, n)
                   for a, b, lo_, hi_, n in zip(box.lo, box.hi, lo, hi, label.shape))
    # lesions whose boxes overlap are refined together
    label[12:14, 20:24, 20:24] = 1
    merged = lesion_boxes(label, (1.0, 1.0, 1.0), 2.0, 1.0, (8, 16, 16))
    assert len(merged) == 2 and merged[0].lesions == (1, 2)
    assert lesion_boxes(np.zeros((10, 10, 10)), (1, 1, 1), 2.0, 1.0, (8, 8, 8)) == []


def test_feather_weight_is_one_inside_and_fades_at_inner_faces_only():
    box = Box((0, 10, 10), (20, 30, 30))
    w = feather_weight(box, (20, 60, 60), (1.0, 1.0, 1.0), feather_mm=3.0)
    assert w.shape == (20, 20, 20)
    assert np.all(w[:, 4:-4, 4:-4] == 1.0)
    assert 0 < w[10, 0, 10] < 0.25 and 0 < w[10, 10, -1] < 0.25  # inner faces fade out
    assert w[0, 10, 10] == 1.0 and w[-1, 10, 10] == 1.0  # faces on the volume border do not
    assert np.all(feather_weight(box, (20, 60, 60), (1, 1, 1), 0.0) == 1.0)


class _Identity:
    """A stand-in denoiser whose 'noise estimate' is its input: tiling must give the input back."""

    def __init__(self, patch):
        from types import SimpleNamespace

        self.config = SimpleNamespace(train=SimpleNamespace(patch_size=patch))
        self.calls = 0

    def predict(self, x, t):
        self.calls += x.shape[0]
        return x.clone()


def test_gaussian_tiling_reassembles_the_volume():
    fake = _Identity((8, 16, 16))
    x = torch.randn((1, 1, 20, 37, 30), generator=torch.Generator().manual_seed(0))
    out = predict_noise_tiled(fake, x, 10, HarmonizeConfig(overlap=0.25, sw_batch_size=3))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=1e-5)
    assert fake.calls == H.count_windows(x.shape[2:], (8, 16, 16), 0.25)
    small = torch.randn((1, 1, 6, 10, 12))  # smaller than one window: padded, then cropped back
    torch.testing.assert_close(predict_noise_tiled(fake, small, 0, HarmonizeConfig()), small, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- one volume
def _synthetic(builders, seed=200, centre=(10, 22, 22)):
    image, _ = builders.femur_volume(seed)
    label = np.zeros(image.shape, np.uint8)
    zz, yy, xx = np.indices(image.shape)
    ball = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= 9
    label[ball] = 1
    arr = image.array.copy()
    arr[ball] = -0.45
    return image.with_array(arr), image.with_array(label)


def test_lesion_mode_changes_only_the_lesion_box_and_is_reproducible(builders, denoiser, tiny_config):
    image, label = _synthetic(builders)
    cfg = tiny_config.harmonize
    out, info = harmonize_volume(image, label, denoiser, cfg, seed=7)
    assert out.shape == image.shape and out.dtype == np.float32
    assert info["timesteps"] == [20, 10, 0] and len(info["boxes"]) == 1
    box = Box(*[tuple(info["boxes"][0][k]) for k in ("lo", "hi")])
    assert box.shape == tuple(tiny_config.train.patch_size)  # one window
    inside = np.zeros(image.shape, bool)
    inside[box.slices] = True
    assert np.array_equal(out[~inside], image.array[~inside])  # bit for bit outside the box
    changed = out[inside] != image.array[inside]
    assert changed.mean() > 0.5
    again, _ = harmonize_volume(image, label, denoiser, cfg, seed=7)
    assert np.array_equal(out, again)
    other, _ = harmonize_volume(image, label, denoiser, cfg, seed=8)
    assert not np.array_equal(out, other)


def test_volume_mode_refines_everything_on_the_same_grid(builders, denoiser, tiny_config):
    image, label = _synthetic(builders)
    small = image.crop((0, 0, 0), (16, 40, 48))  # 1 x 2 x 2 windows
    cfg = tiny_config.harmonize.merged(region="volume")
    out, info = harmonize_volume(small, None, denoiser, cfg, seed=1)
    assert out.shape == small.shape and info["windows"] == 4
    assert (out != small.array).mean() > 0.9
    assert np.all(np.abs(out) <= 1)


def test_out_of_range_images_and_missing_labels_are_refused(builders, denoiser, tiny_config):
    image, label = _synthetic(builders)
    with pytest.raises(InputError, match=r"not \[-1, 1\]"):
        harmonize_volume(image.with_array(image.array * 1000), label, denoiser, tiny_config.harmonize, 0)
    with pytest.raises(InputError, match="needs the volume's label"):
        harmonize_volume(image, None, denoiser, tiny_config.harmonize, 0)


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoints_load_with_weights_only(trained, monkeypatch):
    seen = []
    real = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    from_export = load_denoiser(trained.export, "cpu")
    from_lightning = load_denoiser(trained.checkpoint, "cpu")  # the EMA weights inside the .ckpt
    assert seen == [True, True]
    assert from_export.weights == from_lightning.weights == "ema"
    a, b = from_export.model.state_dict(), from_lightning.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert from_export.sha256 == H.file_sha256(trained.export)


class Payload:
    """Not a tensor: ``weights_only`` loading must refuse it (a pickle could run code)."""

    def __reduce__(self):
        return (print, ("this would have run",))


def test_unsafe_or_incomplete_checkpoints_are_refused(tmp_path, trained):
    bad = tmp_path / "model.pt"
    torch.save({"w": Payload()}, bad)
    (tmp_path / "model.yaml").write_text(trained.export_config.read_text())
    with pytest.raises(InputError, match="weights_only"):
        load_denoiser(bad, "cpu")
    alone = tmp_path / "alone" / "model.pt"  # model.pt carries its settings: it loads without model.yaml
    alone.parent.mkdir()
    alone.write_bytes(trained.export.read_bytes())
    assert load_denoiser(alone, "cpu").weights == "ema"
    lonely = tmp_path / "other" / "model.pt"  # the format before: a bare state_dict needs its model.yaml
    lonely.parent.mkdir()
    torch.save(torch.load(trained.export, weights_only=True)["state_dict"], lonely)
    with pytest.raises(InputError, match="model.yaml"):
        load_denoiser(lonely, "cpu")
    with pytest.raises(InputError, match="not found"):
        load_denoiser(tmp_path / "nothing.pt", "cpu")
    for text, problem in ((b"config: {model: [1,\n", "invalid YAML at line"), (b"\xf4config: 1\n", "not UTF-8")):
        (lonely.parent / "model.yaml").write_bytes(text)  # a damaged settings file: one line, no traceback
        with pytest.raises(InputError, match=problem):
            load_denoiser(lonely, "cpu")


def test_gpu_requests_without_a_gpu_are_explained():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        H.resolve_device("gpu")
    assert H.resolve_device("auto").type == "cpu"


# ----------------------------------------------------------------------------- the set
def test_harmonized_set_has_the_synthetic_layout_and_provenance(tmp_path, builders, trained):
    src = builders.write_synthetic_set(tmp_path / "syn", dropped=True)
    out = tmp_path / "harm"
    summary = harmonize_set(src, out, trained.export, progress=False)
    assert (summary.volumes, summary.done_now, summary.flagged) == (2, 2, [])
    rows = _csv(out / "index.csv")
    assert [r["volume_id"] for r in rows] == ["syn000", "syn001", "syn999"]
    assert rows[2]["kept"] == "false" and rows[2]["image"] == ""
    sha = H.file_sha256(trained.export)
    for row in rows[:2]:
        vid = row["volume_id"]
        assert row["image"] == f"images/{vid}.nii.gz" and row["kept"] == "true" and row["consistent"] == "true"
        assert row["checkpoint_sha256"] == sha and row["start_timestep"] == "20" and row["healthy_case"]
        before, after = Volume.read(src / "images" / f"{vid}.nii.gz"), Volume.read(out / row["image"])
        assert after.same_grid(before) and after.array.dtype == np.float32
        assert (out / row["label"]).read_bytes() == (src / "labels" / f"{vid}.nii.gz").read_bytes()
        side = json.loads((out / "sidecars" / f"{vid}.json").read_text())
        assert side["healthy_case"] == json.loads((src / "sidecars" / f"{vid}.json").read_text())["healthy_case"]
        h = side["harmonization"]
        assert h["source_image"] == str((src / "images" / f"{vid}.nii.gz").resolve())
        assert (h["checkpoint_sha256"], h["start_timestep"], h["ddim_steps"], h["seed"]) == (sha, 20, 20, 0)
        assert h["timesteps"] == [20, 10, 0] and h["weights"] == "ema"
        assert side["consistency"]["collapsed"] is False
    lesions = _csv(out / "consistency.csv")
    assert len(lesions) == 2 and all(float(r["ratio"]) > 0.5 for r in lesions)


def test_rerun_resumes_and_reproduces_bytes(tmp_path, builders, trained):
    src = builders.write_synthetic_set(tmp_path / "syn", index=False, sidecars=False)
    assert [i.volume_id for i in read_synthetic_set(src)[0]] == ["syn000", "syn001"]
    out = tmp_path / "harm"
    trial = harmonize_set(src, out, trained.export, progress=False, limit=1)
    assert (trial.volumes, trial.done_now) == (1, 1) and [r["volume_id"] for r in _csv(out / "index.csv")] == ["syn000"]
    kept_mtime = (out / "images" / "syn000.nii.gz").stat().st_mtime_ns
    summary = harmonize_set(src, out, trained.export, progress=False)
    assert (summary.done_before, summary.done_now) == (1, 1)
    assert (out / "images" / "syn000.nii.gz").stat().st_mtime_ns == kept_mtime
    first = (out / "images" / "syn001.nii.gz").read_bytes()
    (out / "sidecars" / "syn001.json").unlink()  # interrupted after the image, before the sidecar
    summary = harmonize_set(src, out, trained.export, progress=False)
    assert (summary.done_before, summary.done_now) == (1, 1)
    assert (out / "images" / "syn001.nii.gz").read_bytes() == first
    assert len(_csv(out / "index.csv")) == 2
    # other settings in the same folder are refused unless --force
    cfg = HarmonizeConfig.from_dict({**trained_harmonize(trained), "start_timestep": 10})
    with pytest.raises(ConfigError, match="start_timestep"):
        harmonize_set(src, out, trained.export, cfg, progress=False)
    summary = harmonize_set(src, out, trained.export, cfg, progress=False, force=True)
    assert summary.done_now == 2
    side = json.loads((out / "sidecars" / "syn000.json").read_text())
    assert side["harmonization"]["timesteps"] == [10, 0]


def test_volumes_synthesized_again_are_harmonized_again(tmp_path, builders, trained):
    from helpers import written_again

    src = builders.write_synthetic_set(tmp_path / "syn")
    out = tmp_path / "harm"
    harmonize_set(src, out, trained.export, progress=False)
    written_again(src / "images" / "syn001.nii.gz")  # the synthesis wrote this volume again
    summary = harmonize_set(src, out, trained.export, progress=False)
    assert (summary.done_before, summary.done_now) == (1, 1)
    side = json.loads((out / "sidecars" / "syn001.json").read_text())
    assert side["harmonization"]["source_stamp"] == H.files_stamp([src / "images" / "syn001.nii.gz",
                                                                  src / "labels" / "syn001.nii.gz"])


def trained_harmonize(trained):
    import yaml

    return yaml.safe_load(trained.export_config.read_text())["config"]["harmonize"]


def test_workers_give_the_same_bytes(tmp_path, builders, trained):
    """In-process and in two spawned worker processes (network loaded once per worker), at the
    defaults: the thread count per task must not follow the worker count."""
    import torch

    src = builders.write_synthetic_set(tmp_path / "syn")
    previous = torch.get_num_threads()
    torch.set_num_threads(2)  # the in-process run must not inherit the process's threads
    try:
        harmonize_set(src, tmp_path / "one", trained.export, progress=False)
    finally:
        torch.set_num_threads(previous)
    harmonize_set(src, tmp_path / "two", trained.export, progress=False, workers=2)
    side = json.loads((tmp_path / "one" / "sidecars" / "syn000.json").read_text())
    assert side["harmonization"]["threads"] == 1
    for name in ("syn000.nii.gz", "syn001.nii.gz"):
        assert (tmp_path / "one" / "images" / name).read_bytes() == (tmp_path / "two" / "images" / name).read_bytes()


def test_consistency_check_flags_a_planted_failure(tmp_path, builders, trained, monkeypatch):
    """A 'denoiser' that erases lesions (fills them with the surrounding bone) must be caught."""
    src = builders.write_synthetic_set(tmp_path / "syn")

    def erase(array, denoiser, config, generator):
        out = np.array(array, copy=True)
        dark = out < -0.4  # the planted lesion
        out[dark] = float(np.median(out[~dark & (out > -0.2)]))
        return out

    monkeypatch.setattr(refine, "refine_array", erase)  # where harmonize_volume looks it up
    summary = harmonize_set(src, tmp_path / "harm", trained.export, progress=False)
    assert summary.flagged == ["syn000", "syn001"]
    rows = _csv(tmp_path / "harm" / "index.csv")
    assert [r["consistent"] for r in rows] == ["false", "false"] and rows[0]["kept"] == "true"
    cfg = HarmonizeConfig.from_dict({**trained_harmonize(trained), "drop_inconsistent": True})
    harmonize_set(src, tmp_path / "dropped", trained.export, cfg, progress=False)
    rows = _csv(tmp_path / "dropped" / "index.csv")
    assert [r["kept"] for r in rows] == ["false", "false"]


def test_a_folder_that_is_not_a_synthetic_set_writes_nothing(tmp_path, builders, trained):
    """A prepared cohort (images/, no index.csv) or a set without the labels region 'lesion' needs is
    refused before the output folder exists, not volume by volume into an empty skeleton."""
    prepared = builders.write_prepared_cohort(tmp_path / "prepared").parent
    out = tmp_path / "harm"
    with pytest.raises(InputError, match=r"a cohort \(cohort.yaml\), not a synthetic set .*metsynth synthesize"):
        harmonize_set(prepared, out, trained.export, progress=False)
    assert not out.exists()
    src = builders.write_synthetic_set(tmp_path / "syn", index=False)
    for label in (src / "labels").iterdir():
        label.unlink()
    with pytest.raises(InputError, match=r"volume syn000: no label file .*'lesion' needs it .*\(2 of 2 volumes so\)"):
        harmonize_set(src, out, trained.export, HarmonizeConfig.from_dict(
            {**trained_harmonize(trained), "region": "lesion"}), progress=False)
    assert not out.exists()


def test_bad_inputs_are_named(tmp_path, builders, trained):
    with pytest.raises(InputError, match="synthetic set folder not found"):
        harmonize_set(tmp_path / "nowhere", tmp_path / "o", trained.export, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="neither index.csv nor images"):
        harmonize_set(empty, tmp_path / "o", trained.export, progress=False)
    src = builders.write_synthetic_set(tmp_path / "syn")
    with pytest.raises(ConfigError, match="must differ"):
        harmonize_set(src, src, trained.export, progress=False)
    cfg = HarmonizeConfig(start_timestep=500)
    with pytest.raises(ConfigError, match="T - 1"):
        harmonize_set(src, tmp_path / "o2", trained.export, cfg, progress=False)
    with pytest.raises(ConfigError, match="limit"):
        harmonize_set(src, tmp_path / "o3", trained.export, progress=False, limit=0)


def test_a_dask_scheduler_gives_the_same_bytes(tmp_path, builders, trained):
    distributed = pytest.importorskip("distributed")
    src = builders.write_synthetic_set(tmp_path / "syn", n_volumes=1)
    harmonize_set(src, tmp_path / "local", trained.export, progress=False)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        harmonize_set(src, tmp_path / "dask", trained.export, progress=False, scheduler=client)
    name = "images/syn000.nii.gz"
    assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "dask" / name).read_bytes()


class _Blind(_Identity):
    """A denoiser that sees no noise at all (estimate 0): SDEdit then returns x0 plus all of it."""

    def __init__(self, patch, config):
        super().__init__(patch)
        self.config = config
        self.alphas_cumprod = config.noise.alphas_cumprod()
        self.device = torch.device("cpu")

    def predict(self, x, t):
        self.calls += x.shape[0]
        return torch.zeros_like(x)


def test_antithetic_draws_cancel_the_noise_a_denoiser_leaves(tiny_config):
    """``draws = 2``: the noise the network does not take out is linear in it, so (eps, -eps) cancel."""
    cfg = tiny_config.harmonize.merged(start_timestep=10, clip_sample=False)
    fake = _Blind(tuple(tiny_config.train.patch_size), tiny_config)
    x = (0.2 * torch.randn(tuple(tiny_config.train.patch_size), generator=torch.Generator().manual_seed(3))).numpy()
    once = H.refine_array(x, fake, cfg, torch.Generator().manual_seed(5))
    assert np.abs(once - x).std() > 0.01  # a single run keeps the noise it was given
    calls = fake.calls
    pair = H.refine_array(x, fake, cfg.merged(draws=2), torch.Generator().manual_seed(5))
    np.testing.assert_allclose(pair, x, atol=1e-5)
    assert fake.calls - calls == 2 * calls  # both draws evaluated (in one batch)
    three = H.refine_array(x, fake, cfg.merged(draws=3), torch.Generator().manual_seed(5))
    assert 0 < np.abs(three - x).std() < np.abs(once - x).std() / 2  # a pair plus one fresh draw, averaged
    big = (0.2 * torch.randn((20, 37, 30), generator=torch.Generator().manual_seed(4))).numpy()  # tiled windows
    np.testing.assert_allclose(H.refine_array(big, fake, cfg.merged(draws=2), torch.Generator().manual_seed(5)),
                               big, atol=1e-5)


def test_one_draw_consumes_the_generator_as_before(builders, denoiser, tiny_config):
    """``draws = 1`` (the default) gives the bytes of the single-run code: one randn of the region."""
    from metsynth.diffusion.schedule import ddim_timesteps, sdedit

    image, _ = _synthetic(builders)
    region = image.array[: 16, : 32, : 32]
    cfg = tiny_config.harmonize
    out = H.refine_array(region, denoiser, cfg, torch.Generator().manual_seed(9))
    gen = torch.Generator().manual_seed(9)
    x0 = torch.from_numpy(np.ascontiguousarray(region))[None, None]
    noise = torch.randn(x0.shape, generator=gen)
    steps = ddim_timesteps(tiny_config.noise.num_train_timesteps, cfg.ddim_steps, cfg.start_timestep)
    with torch.no_grad():
        ref = sdedit(x0, lambda x, t: predict_noise_tiled(denoiser, x, t, cfg), steps, denoiser.alphas_cumprod,
                     noise, eta=cfg.eta, clip_sample=cfg.clip_sample, generator=gen)
    assert np.array_equal(out, ref[0, 0].numpy())
