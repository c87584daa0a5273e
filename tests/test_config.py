"""Bad configuration values fail early, with a message naming the value and the allowed range."""

import pytest

from clca_edge.core.errors import ConfigError
from clca_edge.models import ClcaConfig, ModelConfig, default_locations, validate_config

from conftest import TINY


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.01, float("nan")])
def test_keep_rate_outside_range(rate):
    with pytest.raises(ConfigError, match=r"keep_rate=.* outside \(0, 1\]"):
        ModelConfig(keep_rate=rate)


def test_locations_must_increase():
    with pytest.raises(ConfigError, match=r"locations=\[6, 3\] must be strictly increasing"):
        ModelConfig(locations=(6, 3))
    with pytest.raises(ConfigError, match="strictly increasing"):
        ModelConfig(locations=(3, 3))


def test_locations_out_of_range_named_with_allowed_range():
    cfg = ModelConfig(backbone="vit_tiny_patch16_224", locations=(1, 4), img_size=64, backbone_kwargs=TINY)
    with pytest.raises(ConfigError, match=r"locations=\[1, 4\] out of range for a 4-block backbone; allowed 0..3"):
        validate_config(cfg)


def test_keep_rate_count_must_match_locations():
    with pytest.raises(ConfigError, match="2 values for 3 locations"):
        ModelConfig(keep_rate=(0.5, 0.5), locations=(1, 2, 3))


def test_unknown_method_lists_choices():
    with pytest.raises(ConfigError, match="method='magic' is unknown; choose one of none, topk, evit"):
        ModelConfig(method="magic")


def test_backbone_without_class_token():
    cfg = ModelConfig(backbone="vit_base_patch16_gap_224", img_size=64, backbone_kwargs=TINY)
    with pytest.raises(ConfigError, match="no class token"):
        validate_config(cfg)


def test_not_a_vit():
    with pytest.raises(ConfigError, match="resnet18"):
        validate_config(ModelConfig(backbone="resnet18", img_size=64))


def test_img_size_not_divisible_by_patch():
    cfg = ModelConfig(backbone="vit_tiny_patch16_224", img_size=70, backbone_kwargs=TINY)
    with pytest.raises(ConfigError, match="img_size=70 is not divisible by the patch size 16"):
        validate_config(cfg)


def test_default_locations_scale_with_depth():
    assert default_locations(12) == (3, 6, 9)
    assert default_locations(24) == (6, 12, 18)
    assert default_locations(4) == (1, 2, 3)
    assert default_locations(1) == (0,)


def test_resolve_recovery_layers_and_per_location_rates():
    plan = ModelConfig(keep_rate=(0.5, 0.4, 0.3)).resolve(12)
    assert plan.locations == (3, 6, 9)
    assert plan.keep_rates == (0.5, 0.4, 0.3)
    assert plan.recovery == (3, 6, 9, 10)  # every location plus the block before the last
    assert plan.cache_until == 10
    off = ModelConfig(clca=ClcaConfig.off()).resolve(12)
    assert off.recovery == () and off.keep_rates == (0.1, 0.1, 0.1)


def test_config_round_trips_through_dict():
    cfg = ModelConfig(method="topk", keep_rate=(0.5, 0.25), locations=(2, 5), clca=ClcaConfig(num_clr=2),
                      backbone_kwargs={"depth": 6})
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_clca_needs_carriers():
    with pytest.raises(ConfigError, match="carriers"):
        ClcaConfig(num_clr=0, gap_carriers=False)


def test_wrongly_typed_values_are_config_errors():
    assert ModelConfig(keep_rate="0.5,0.25", locations=(1, 2)).keep_rate == (0.5, 0.25)
    assert ModelConfig(num_classes="3").num_classes == 3
    with pytest.raises(ConfigError, match="wrong type"):
        ModelConfig(locations=["a"])


def test_backbone_assertions_and_unknown_method_options_fail_before_weights():
    with pytest.raises(ConfigError, match="rejected its options"):
        validate_config(ModelConfig(backbone="vit_tiny_patch16_224", img_size=64,
                                    backbone_kwargs=dict(depth=4, embed_dim=65, num_heads=2)))
    with pytest.raises(ConfigError, match="has no options \\['bogus'\\]"):
        validate_config(ModelConfig(backbone="vit_tiny_patch16_224", img_size=64, backbone_kwargs=TINY,
                                    method="topk", method_kwargs={"bogus": 1}))
