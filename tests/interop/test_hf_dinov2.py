"""transformers' DINOv2 <-> this backbone, checked against transformers itself (random weights, no download)."""

import json

import pytest
import torch

from clsvit_lightning.errors import ConfigError
from clsvit_lightning.models import VisionTransformer, export_backbone, from_pretrained, load_pretrained
from tests.interop.backbones import features, random_backbone, randomize

transformers = pytest.importorskip("transformers")

IMAGES = torch.randn(2, 3, 42, 42, generator=torch.Generator().manual_seed(0))


def hf_model(num_registers=0, classifier=False, **config):
    """A random transformers DINOv2 of 2 layers, 64 wide, on a 3 x 3 grid of 14 px patches."""
    arguments = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=42, patch_size=14, **config)
    if num_registers:
        model_class = transformers.Dinov2WithRegistersModel
        hf_config = transformers.Dinov2WithRegistersConfig(num_register_tokens=num_registers, **arguments)
    else:
        model_class = transformers.Dinov2ForImageClassification if classifier else transformers.Dinov2Model
        hf_config = transformers.Dinov2Config(num_labels=5 if classifier else 2, **arguments)
    return randomize(model_class(hf_config))


def hf_features(model, images=IMAGES):
    """``last_hidden_state``: [CLS], registers, patches after the final layernorm."""
    backbone = model.dinov2 if hasattr(model, "dinov2") else model
    with torch.no_grad():
        return backbone(pixel_values=images).last_hidden_state


@pytest.mark.parametrize(
    ("num_registers", "layerscale_init"), [(0, 1e-5), (4, 1e-5), (0, None)], ids=["plain", "registers", "no-layerscale"]
)
def test_an_exported_backbone_loads_into_transformers_with_the_same_features(tmp_path, num_registers, layerscale_init):
    model = random_backbone(num_registers=num_registers, layerscale_init=layerscale_init)
    info = export_backbone(model, tmp_path / "hf", "hf")
    model_class = transformers.Dinov2WithRegistersModel if num_registers else transformers.Dinov2Model
    assert info["load"] == f"transformers.{model_class.__name__}.from_pretrained({str(tmp_path / 'hf')!r})"
    theirs = model_class.from_pretrained(tmp_path / "hf").eval()
    torch.testing.assert_close(hf_features(theirs), features(model, IMAGES), atol=1e-5, rtol=0)


@pytest.mark.parametrize("num_registers", [0, 4], ids=["Dinov2Model", "Dinov2WithRegistersModel"])
def test_a_transformers_folder_loads_with_its_architecture_and_features(tmp_path, num_registers):
    theirs = hf_model(num_registers)
    theirs.save_pretrained(tmp_path / "hf")
    ours = from_pretrained(tmp_path / "hf")
    assert not ours.training and ours.config["num_registers"] == num_registers and ours.config["num_heads"] == 2
    torch.testing.assert_close(features(ours, IMAGES), hf_features(theirs), atol=1e-5, rtol=0)
    # The position embedding is resized as transformers resizes it (no offset; antialias with registers).
    other = torch.randn(1, 3, 70, 56)
    torch.testing.assert_close(features(ours, other), hf_features(theirs, other), atol=1e-5, rtol=0)
    # The same weights through load_pretrained (a model you build), the weights file alone, and
    # transformers 5's in-memory names (q_proj, k_proj, v_proj, o_proj).
    for weights in (tmp_path / "hf", tmp_path / "hf" / "model.safetensors", theirs.state_dict()):
        built = VisionTransformer(**ours.config).eval()
        load_pretrained(built, weights)
        assert torch.equal(features(built, IMAGES), features(ours, IMAGES))


def test_a_specialized_model_warm_started_from_transformers_weights_computes_the_vanilla_function(tmp_path):
    theirs = hf_model(num_registers=4)
    theirs.save_pretrained(tmp_path / "hf")
    vanilla = from_pretrained(tmp_path / "hf")
    specialized = from_pretrained(tmp_path / "hf", specialization="paper")
    assert specialized.config["specialization"] != "vanilla" and len(specialized.load_report.warm_started) > 0
    assert torch.equal(features(specialized, IMAGES), features(vanilla, IMAGES))
    torch.testing.assert_close(features(specialized, IMAGES), hf_features(theirs), atol=1e-5, rtol=0)


def test_a_classification_model_gives_its_backbone_and_drops_the_classifier(tmp_path):
    theirs = hf_model(classifier=True)
    theirs.save_pretrained(tmp_path / "hf")
    ours = from_pretrained(tmp_path / "hf")
    assert ours.load_report.dropped == ["classifier.bias", "classifier.weight"]
    torch.testing.assert_close(features(ours, IMAGES), hf_features(theirs), atol=1e-5, rtol=0)


def test_a_folder_without_config_json_is_named(tmp_path):
    hf_model().save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "config.json").unlink()
    for load in (lambda: from_pretrained(tmp_path / "hf"), lambda: load_pretrained(random_backbone(), tmp_path / "hf")):
        with pytest.raises(ConfigError, match=r"has no config\.json; expected a Hugging Face model folder") as error:
            load()
        assert str(tmp_path / "hf") in str(error.value)


def test_a_folder_of_another_model_type_or_without_weights_is_named(tmp_path):
    folder = tmp_path / "hf"
    hf_model().save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "vit"}))
    with pytest.raises(ConfigError, match=r"config\.json describes a model_type='vit' model; expected 'dinov2'"):
        from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**config, "use_swiglu_ffn": True}))  # but an MLP's weights
    with pytest.raises(ConfigError, match=r"a GELU MLP \(mlp\.fc1/fc2\); build the model with ffn_layer='mlp'"):
        from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match=r"has config\.json but no model\.safetensors"):
        from_pretrained(folder)


def test_a_tasks_pretrained_option_reads_a_transformers_folder(tmp_path):
    from clsvit_lightning.tasks.feature_extraction import FeatureExtraction  # noqa: PLC0415 (Lightning)

    theirs = hf_model(num_registers=4)
    theirs.save_pretrained(tmp_path / "hf")
    config = from_pretrained(tmp_path / "hf").config
    task = FeatureExtraction(VisionTransformer(**{**config, "specialization": "paper"}), str(tmp_path / "hf"))
    torch.testing.assert_close(features(task.backbone, IMAGES), hf_features(theirs), atol=1e-5, rtol=0)


@pytest.mark.parametrize("num_registers", [0, 4], ids=["Dinov2Model", "Dinov2WithRegistersModel"])
def test_the_giants_swiglu_ffn_goes_both_ways_with_transformers(tmp_path, num_registers):
    # transformers' use_swiglu_ffn (DINOv2's giant): mlp.weights_in packs the gate over the value.
    theirs = hf_model(num_registers, use_swiglu_ffn=True)
    theirs.save_pretrained(tmp_path / "hf")
    ours = from_pretrained(tmp_path / "hf")
    assert ours.config["ffn_layer"] == "swiglu" and ours.blocks[0].mlp.hidden_features == 176  # 2/3 * 256 -> 176
    torch.testing.assert_close(features(ours, IMAGES), hf_features(theirs), atol=1e-5, rtol=0)
    # transformers 5's in-memory names (gate_proj, up_proj, down_proj) read the same.
    built = VisionTransformer(**ours.config).eval()
    load_pretrained(built, theirs.state_dict())
    assert torch.equal(features(built, IMAGES), features(ours, IMAGES))
    # And back: a SwiGLU backbone of this package exported for transformers.
    model = random_backbone(num_registers=num_registers, ffn_layer="swiglu", seed=3)
    export_backbone(model, tmp_path / "out", "hf")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["use_swiglu_ffn"] is True
    model_class = transformers.Dinov2WithRegistersModel if num_registers else transformers.Dinov2Model
    reloaded = model_class.from_pretrained(tmp_path / "out").eval()
    torch.testing.assert_close(hf_features(reloaded), features(model, IMAGES), atol=1e-5, rtol=0)
