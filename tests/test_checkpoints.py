"""One model.pt format for the U-Net and the DDPM (metsynth.checkpoints): written with its
model.yaml, read back with weights_only, the older formats still read, and a model of the
other network, a Lightning checkpoint without an unpacker, garbage or pickled code refused
in one line."""

from __future__ import annotations

import pytest
import torch
import yaml

from metsynth.checkpoints import MODEL_FORMAT, load_model, save_model
from metsynth.errors import InputError


def _state():
    return {"conv.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "conv.bias": torch.ones(2)}


@pytest.mark.parametrize("network", ["unet", "ddpm"])
def test_round_trip(tmp_path, network):
    meta = {"config": {"depth": 3}, "fold": 1, "spacing": [1.7, 1.7, 1.7]}
    path = save_model(tmp_path / "model.pt", network, _state(), meta)
    state, back, file = load_model(tmp_path, network)  # the folder finds model.pt
    assert file == path
    assert back == meta
    assert all(torch.equal(state[k], v) for k, v in _state().items())
    described = yaml.safe_load((tmp_path / "model.yaml").read_text())
    assert described == {"format": MODEL_FORMAT, "network": network, **meta}


def test_the_same_weights_give_the_same_bytes(tmp_path):
    a = save_model(tmp_path / "a" / "model.pt", "unet", _state(), {"x": 1})
    b = save_model(tmp_path / "b" / "model.pt", "unet", _state(), {"x": 1})
    assert a.read_bytes() == b.read_bytes()


def test_a_model_of_the_other_network_is_refused(tmp_path):
    save_model(tmp_path / "model.pt", "ddpm", _state(), {"config": {}})
    with pytest.raises(InputError, match=r"a DDPM, not a segmentation model \(it is the denoising diffusion model of "
                                         r"`metsynth diffusion train`\); give it to `metsynth harmonize"):
        load_model(tmp_path / "model.pt", "unet")


def test_older_formats_still_load(tmp_path):
    unet = tmp_path / "unet.pt"
    torch.save({"format": "metsynth-unet/1", "state_dict": _state(), "meta": {"fold": 0}}, unet)
    state, meta, _ = load_model(unet, "unet")
    assert meta == {"fold": 0} and set(state) == set(_state())
    with pytest.raises(InputError, match="format metsynth-unet/1, not a DDPM"):
        load_model(unet, "ddpm")

    ddpm = tmp_path / "ddpm" / "model.pt"
    ddpm.parent.mkdir()
    torch.save(_state(), ddpm)
    (ddpm.parent / "model.yaml").write_text(yaml.safe_dump(
        {"format": "metsynth-ddpm/1", "weights": "ema", "trained": {"steps": 3}, "config": {"a": 1}}))
    state, meta, _ = load_model(ddpm, "ddpm")
    assert meta == {"weights": "ema", "trained": {"steps": 3}, "config": {"a": 1}}
    (ddpm.parent / "model.yaml").unlink()
    with pytest.raises(InputError, match="model.yaml missing"):
        load_model(ddpm, "ddpm")
    with pytest.raises(InputError, match="not a metsynth segmentation model"):
        load_model(ddpm, "unet")


def test_lightning_checkpoints_need_the_networks_unpacker(tmp_path):
    ckpt = tmp_path / "best.ckpt"
    torch.save({"state_dict": {"net.conv.bias": torch.ones(2)}, "hyper_parameters": {"meta": {"fold": 2}}}, ckpt)
    with pytest.raises(InputError, match="a Lightning checkpoint; give the exported model.pt"):
        load_model(ckpt, "unet")

    def unpack(obj):
        return {k[4:]: v for k, v in obj["state_dict"].items()}, obj["hyper_parameters"]["meta"]

    state, meta, _ = load_model(ckpt, "unet", from_lightning=unpack)
    assert list(state) == ["conv.bias"] and meta == {"fold": 2}


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("content", [b"not a zip at all", b"PK\x03\x04 cut short", None])
def test_garbage_and_pickled_code_are_refused(tmp_path, content, capsys):
    path = tmp_path / "model.pt"
    if content is None:
        torch.save({"format": MODEL_FORMAT, "network": "unet", "state_dict": {}, "meta": _Evil()}, path)
    else:
        path.write_bytes(content)
    says = (r"is not a model checkpoint \(it looks like a text file\)" if content == b"not a zip at all" else
            r"cannot be read as a metsynth segmentation model with torch.load\(weights_only=True\)")
    with pytest.raises(InputError, match=says) as info:
        load_model(path, "unet")
    assert "\n" not in str(info.value)
    assert "weights_only` set to `False" not in str(info.value) and "weights_only=False" not in str(info.value)
    assert "pwned" not in capsys.readouterr().out


@pytest.mark.parametrize("name, content, looks", [
    ("cohort.yaml", b"name: tiny\ncases:\n- id: M01\n  image: images/M01.nii.gz\n", "a cohort manifest"),
    ("M01.nii.gz", b"\x1f\x8b\x08\x00" + bytes(range(256)), "an image"),
    ("ct.nii", bytes(344) + b"n+1\0" + bytes(200), "an image"),
])
def test_a_manifest_or_image_given_as_the_model_says_so_and_the_usage(tmp_path, name, content, looks):
    """`metsynth predict cohort.yaml image.nii.gz` (arguments swapped): named as what it is, with the usage;
    never torch's advice to load with weights_only=False."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        load_model(path, "unet")
    assert str(info.value) == (f"{path} is not a model checkpoint (it looks like {looks}); usage: metsynth predict "
                               "MODEL INPUTS... -o OUT (the model.pt written by `metsynth train`, or its folder)")
    with pytest.raises(InputError, match=r"usage: metsynth harmonize SET --checkpoint MODEL"):
        load_model(path, "ddpm")


def test_missing_file_names_the_command(tmp_path):
    with pytest.raises(InputError, match="DDPM not found; give the model.pt written by `metsynth diffusion train`"):
        load_model(tmp_path / "nothing", "ddpm")
