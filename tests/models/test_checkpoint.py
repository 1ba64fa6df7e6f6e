import pytest
import torch
import torch.nn.functional as F

from clsvit_lightning.models import CheckpointMismatchError, VisionTransformer, load_pretrained


def build(**kwargs):
    defaults = dict(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3, layerscale_init=0.3)
    return VisionTransformer(**{**defaults, **kwargs}).eval()


def source_model(**kwargs):
    model = build(**kwargs)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.2)
    return model


def same_outputs(a, b, images=None):
    images = torch.randn(2, 3, 32, 32) if images is None else images
    with torch.no_grad():
        return torch.allclose(a.forward_features(images)["x_prenorm"], b.forward_features(images)["x_prenorm"])


@pytest.mark.parametrize("num_registers", [0, 4])
def test_dinov2_flat_keys_load_as_they_are(num_registers):
    source = source_model(num_registers=num_registers)
    target = build(num_registers=num_registers)
    report = load_pretrained(target, dict(source.state_dict()))
    assert same_outputs(source, target)
    assert not report.warm_started and not report.dropped


def test_dinov2_teacher_checkpoint_with_chunks_prefixes_and_heads(tmp_path):
    source = source_model(num_registers=4)
    chunked = {}
    for key, value in source.state_dict().items():
        if key.startswith("blocks."):
            index = int(key.split(".")[1])
            key = f"blocks.{index // 2}." + key[len("blocks.") :]  # block_chunks=2: blocks.<chunk>.<i>.
        chunked[f"module.backbone.{key}"] = value
    chunked["module.dino_head.mlp.0.weight"] = torch.zeros(8, 48)
    chunked["module.ibot_head.last_layer.weight_g"] = torch.zeros(8, 1)
    path = tmp_path / "teacher_checkpoint.pth"
    torch.save({"teacher": chunked, "iteration": 7}, path)
    target = build(num_registers=4)
    report = load_pretrained(target, path)
    assert same_outputs(source, target)
    assert sorted(report.dropped) == ["dino_head.mlp.0.weight", "ibot_head.last_layer.weight_g"]


def test_timm_format_registers_pos_embed_without_class_slot_and_classifier_head():
    source = source_model(num_registers=4)
    with torch.no_grad():
        source.pos_embed[:, 0] = 0  # timm no_embed_class: [CLS] gets no position
    timm_state = {k: v for k, v in source.state_dict().items() if k not in ("register_tokens", "mask_token")}
    timm_state["reg_token"] = source.register_tokens.detach()
    timm_state["pos_embed"] = source.pos_embed.detach()[:, 1:]  # [1, 16, D]
    timm_state["head.weight"], timm_state["head.bias"] = torch.zeros(10, 48), torch.zeros(10)
    target = build(num_registers=4)
    report = load_pretrained(target, timm_state)
    assert same_outputs(source, target)
    assert report.kept_initial == ["mask_token"]
    assert set(report.dropped) == {"head.weight", "head.bias"}


def test_deit3_checkpoint_with_gamma_keys_and_patch_only_pos_embed():
    source = source_model()
    with torch.no_grad():
        source.pos_embed[:, 0] = 0  # DeiT III adds the position to the patches only
    deit = {k: v for k, v in source.state_dict().items() if k != "mask_token"}
    for index in range(3):
        for branch in (1, 2):
            deit[f"blocks.{index}.gamma_{branch}"] = deit.pop(f"blocks.{index}.ls{branch}.gamma")
    deit["pos_embed"] = deit["pos_embed"][:, 1:]
    deit["head.weight"], deit["head.bias"] = torch.zeros(10, 48), torch.zeros(10)
    target = build()
    load_pretrained(target, {"model": deit})  # the released files wrap the weights in "model"
    assert same_outputs(source, target)


@pytest.mark.parametrize(("offset", "antialias"), [(0.1, False), (0.0, True)])  # DINOv2; its reg4 models
def test_pos_embed_of_another_grid_is_resized_as_the_source_model_resizes_it(offset, antialias):
    options = dict(interpolate_offset=offset, interpolate_antialias=antialias)
    source = source_model(img_size=64, **options)  # 8x8 grid
    target = build(img_size=32, **options)  # 4x4 grid
    report = load_pretrained(target, source.state_dict())
    grid = source.pos_embed[:, 1:].reshape(1, 8, 8, 48).permute(0, 3, 1, 2)
    size = dict(scale_factor=(4.1 / 8, 4.1 / 8)) if offset else dict(size=(4, 4))  # bicubic, by hand
    expected = F.interpolate(grid, mode="bicubic", antialias=antialias, **size).permute(0, 2, 3, 1).reshape(1, 16, 48)
    torch.testing.assert_close(target.pos_embed[:, 1:], expected)
    torch.testing.assert_close(target.pos_embed[:, :1], source.pos_embed[:, :1])
    assert report.resized == ["pos_embed: 8x8 -> 4x4 grid"]
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the loaded model at its size = the source model run at that size
        torch.testing.assert_close(
            target.forward_features(images)["x_prenorm"], source.forward_features(images)["x_prenorm"]
        )


def test_vanilla_checkpoint_warm_starts_a_specialized_model():
    source = source_model(num_registers=1)
    target = build(num_registers=1, specialization="paper")
    report = load_pretrained(target, source.state_dict())
    assert "blocks.0.attn.qkv.prefix_weight" in report.warm_started and "norm.prefix_bias" in report.warm_started
    assert same_outputs(source, target)


def test_specialized_checkpoint_round_trips_into_a_specialized_model(tmp_path):
    source = source_model(specialization="paper")
    torch.save(source.state_dict(), tmp_path / "paper.pth")
    target = build(specialization="paper")
    report = load_pretrained(target, tmp_path / "paper.pth")
    assert not report.warm_started and same_outputs(source, target)


def test_specialized_checkpoint_into_a_vanilla_model_is_refused_with_a_hint():
    source = source_model(specialization="paper")
    with pytest.raises(
        CheckpointMismatchError, match=r"unknown to the model.*prefix_weight(.|\n)*hint: the checkpoint is specialized"
    ):
        load_pretrained(build(), source.state_dict())


def test_dimension_mismatch_lists_the_keys_and_shapes():
    source = source_model(embed_dim=36)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"checkpoint: embed_dim=36(.|\n)*shape mismatches.*"
        r"cls_token: checkpoint \(1, 1, 36\) vs model \(1, 1, 48\)",
    ):
        load_pretrained(build(), source.state_dict())


def test_depth_mismatch_lists_missing_and_unknown_blocks():
    with pytest.raises(CheckpointMismatchError, match=r"missing from the checkpoint.*blocks\.2\.attn\.proj\.bias"):
        load_pretrained(build(), source_model(depth=2).state_dict())
    with pytest.raises(CheckpointMismatchError, match=r"unknown to the model.*blocks\.3\."):
        load_pretrained(build(), source_model(depth=4).state_dict())


def test_register_count_mismatch_is_a_shape_error():
    with pytest.raises(
        CheckpointMismatchError, match=r"register_tokens: checkpoint \(1, 4, 48\) vs model \(1, 2, 48\)"
    ):
        load_pretrained(build(num_registers=2), source_model(num_registers=4).state_dict())


def test_swiglu_checkpoint_gets_a_hint():
    state = dict(source_model().state_dict())
    state["blocks.0.mlp.w12.weight"] = torch.zeros(4, 48)
    with pytest.raises(CheckpointMismatchError, match="SwiGLU"):
        load_pretrained(build(), state)


def test_unreadable_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.pth does not exist"):
        load_pretrained(build(), tmp_path / "missing.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointMismatchError, match=r"corrupt\.pth is truncated or not a torch checkpoint"):
        load_pretrained(build(), corrupt)
    empty = tmp_path / "empty.pth"
    torch.save({"epoch": 3}, empty)
    with pytest.raises(CheckpointMismatchError, match="no tensors found"):
        load_pretrained(build(), empty)


def test_a_run_folder_stands_for_its_newest_last_checkpoint(tmp_path):
    import os

    old, new = source_model(), source_model()
    segments = [tmp_path / "run/clsvit" / run_id / "checkpoints" for run_id in ("a1", "b2")]  # two requeue segments
    for folder, model in zip(segments, (old, new), strict=True):
        folder.mkdir(parents=True)
        torch.save({"state_dict": model.state_dict()}, folder / "last.ckpt")
        torch.save({"state_dict": old.state_dict()}, folder / "epoch=9.ckpt")
    os.utime(segments[0] / "last.ckpt", (1, 1))  # the first segment's is older
    target = build()
    load_pretrained(target, tmp_path / "run")
    assert same_outputs(target, new)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .ckpt file under the folder"):
        load_pretrained(build(), tmp_path / "empty")


def test_pickled_objects_are_refused_by_weights_only_loading(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"model": source_model().state_dict(), "config": _Custom()}, path)
    with pytest.raises(CheckpointMismatchError, match="weights-only"):
        load_pretrained(build(), path)


class _Custom:
    pass


@pytest.mark.parametrize(
    "content, why",
    [
        (b"", r"is an empty file"),
        (b"not a torch file", r"is truncated or not a torch checkpoint \(UnpicklingError\)"),
        ("truncated", r"is truncated or not a torch checkpoint \(\w+\)"),
    ],
)
def test_read_checkpoint_says_which_file_and_why_without_unsafe_advice(tmp_path, content, why):
    from clsvit_lightning.models.checkpoint_files import CheckpointReadError, read_checkpoint

    bad = tmp_path / "bad.pth"
    if content == "truncated":
        torch.save(source_model().state_dict(), bad)
        bad.write_bytes(bad.read_bytes()[:200])
    else:
        bad.write_bytes(content)
    with pytest.raises(CheckpointReadError, match=f"^{bad} {why}") as error:
        read_checkpoint(bad)
    assert "weights_only=False" not in str(error.value) and error.value.__cause__ is None
    with pytest.raises(FileNotFoundError, match=f"^{tmp_path / 'nothing.pth'} does not exist$"):
        read_checkpoint(tmp_path / "nothing.pth")


def test_a_pickle_of_foreign_objects_is_named_not_run(tmp_path):
    from collections import OrderedDict  # allowed by weights_only; a Path is not

    from clsvit_lightning.models.checkpoint_files import CheckpointReadError, read_checkpoint

    path = tmp_path / "objects.pth"
    torch.save(OrderedDict(where=tmp_path), path)
    with pytest.raises(CheckpointReadError, match=r"objects\.pth holds a pickled pathlib\.\w+, which a weights-only"):
        read_checkpoint(path)
