"""Pretrained weights through timm: a local file offline, a clear error otherwise."""

import pytest
import torch

from clca_edge.core.errors import PretrainedWeightsError
from clca_edge.models import create_model

from conftest import TINY, TINY_IMG


def test_local_weights_file_is_loaded_and_clr_copies_its_cls(tmp_path):
    import timm
    from safetensors.torch import save_file

    src = timm.create_model("vit_tiny_patch16_224", img_size=TINY_IMG, num_classes=7, **TINY)
    with torch.no_grad():
        src.cls_token.normal_()
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    model = create_model("vit_tiny_patch16_224", method="evit", keep_rate=0.25, img_size=TINY_IMG, num_classes=3,
                         pretrained=str(path), **TINY)
    torch.testing.assert_close(model.backbone.blocks[2].mlp.fc1.weight, src.blocks[2].mlp.fc1.weight)
    torch.testing.assert_close(model.backbone.cls_token, src.cls_token)
    torch.testing.assert_close(model.clr_token, src.cls_token)


def test_missing_weights_file_says_what_to_pass(tmp_path):
    with pytest.raises(PretrainedWeightsError, match="does not exist; pass an existing"):
        create_model("vit_tiny_patch16_224", img_size=TINY_IMG, pretrained=str(tmp_path / "nope.pth"), **TINY)


def test_offline_hub_gives_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedWeightsError) as err:
        create_model("vit_tiny_patch16_224", img_size=TINY_IMG, pretrained="hub", **TINY)
    msg = str(err.value)
    assert "--pretrained PATH" in msg and "--pretrained none" in msg and "\n" not in msg
