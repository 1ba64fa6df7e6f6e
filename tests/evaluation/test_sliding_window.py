"""Sliding-window and TTA inference: coverage, averaging, equality with whole-image inference."""

import pytest
import torch
import torch.nn.functional as F

from clsvit_lightning.evaluation.sliding_window import infer, slide_inference, tta_inference, window_starts


@pytest.mark.parametrize(("size", "crop", "stride"), [(512, 512, 341), (683, 512, 341), (100, 32, 20), (20, 32, 16)])
def test_windows_cover_the_side_and_stay_inside(size, crop, stride):
    starts = window_starts(size, crop, stride)
    covered = torch.zeros(size, dtype=torch.bool)
    for start in starts:
        assert start >= 0 and (start + crop <= size or start == 0)
        covered[start : start + crop] = True
    assert covered.all()
    assert starts == sorted(starts) and (size <= crop or starts[-1] + crop == size)  # last window ends at the border


def test_stride_larger_than_crop_is_rejected():
    with pytest.raises(ValueError, match="stride 40 > crop_size 32"):
        window_starts(100, 32, 40)


def test_translation_equivariant_model_gives_the_whole_image_result():
    conv = torch.nn.Conv2d(3, 4, kernel_size=1)  # per-pixel: a window changes nothing
    images = torch.randn(2, 3, 45, 70)
    with torch.no_grad():
        torch.testing.assert_close(slide_inference(conv, images, 32, 20), conv(images))
        torch.testing.assert_close(slide_inference(conv, images, (16, 24), (9, 11)), conv(images))


def test_overlapping_windows_are_averaged():
    # Each window predicts its own mean intensity everywhere: the result depends on the windows.
    def window_mean(window):
        return window.mean(dim=(1, 2, 3), keepdim=True).expand(-1, 1, *window.shape[-2:])

    images = torch.rand(1, 3, 10, 13)
    result = slide_inference(window_mean, images, 6, 4)
    total, count = torch.zeros(10, 13), torch.zeros(10, 13)
    for top in window_starts(10, 6, 4):
        for left in window_starts(13, 6, 4):
            total[top : top + 6, left : left + 6] += images[0, :, top : top + 6, left : left + 6].mean()
            count[top : top + 6, left : left + 6] += 1
    assert (count > 0).all()  # every pixel is covered
    torch.testing.assert_close(result[0, 0], total / count)


def test_one_window_covering_the_image_equals_whole_inference():
    def non_local(images):  # depends on the whole input: equal only if the window is the image
        return images.cumsum(dim=-1)[:, :2]

    images = torch.randn(1, 3, 20, 30)
    torch.testing.assert_close(infer(non_local, images, "slide", 32, 16), infer(non_local, images, "whole"))


def test_tta_averages_probabilities_over_flips_and_scales():
    conv = torch.nn.Conv2d(3, 5, kernel_size=1)
    images = torch.randn(1, 3, 16, 24)
    with torch.no_grad():
        plain = tta_inference(conv, images)
        torch.testing.assert_close(plain, conv(images).softmax(1))
        # A per-pixel model commutes with the flip: flip TTA changes nothing.
        torch.testing.assert_close(tta_inference(conv, images, flip=True), plain)
        # Two scales: the mean of the two resized-back probability maps.
        up = F.interpolate(images, size=(24, 36), mode="bilinear", align_corners=False)
        back = F.interpolate(conv(up), size=(16, 24), mode="bilinear", align_corners=False).softmax(1)
        torch.testing.assert_close(tta_inference(conv, images, scales=(1.0, 1.5)), (plain + back) / 2)
        assert torch.equal(tta_inference(conv, images, output="values"), conv(images))


def test_short_side_resizes_relative_to_the_target_short_side():
    conv = torch.nn.Conv2d(3, 5, kernel_size=1)
    images = torch.randn(1, 3, 16, 24)
    with torch.no_grad():
        # short side 16 -> 32 is scale 2; with TTA scale 0.5 on top it is the original size again.
        torch.testing.assert_close(
            tta_inference(conv, images, short_side=32), tta_inference(conv, images, scales=(2.0,))
        )
        torch.testing.assert_close(
            tta_inference(conv, images, short_side=32, scales=(0.5,)), tta_inference(conv, images)
        )
        assert tta_inference(conv, images, short_side=21).shape == (1, 5, 16, 24)  # back at the input size


# ------------------------------------------------------------------ separable fast path
from clsvit_lightning.evaluation.sliding_window import (  # noqa: E402
    SeparablePredictor,
    _row_chunks,
    bilinear_matrix,
    separable_slide_inference,
)
from clsvit_lightning.models import VisionTransformer  # noqa: E402
from clsvit_lightning.models.heads import BNConvHead, DenseFeatures, DensePredictor  # noqa: E402


@pytest.mark.parametrize(("out_size", "in_size"), [(64, 4), (75, 5), (30, 30), (7, 12), (1, 3)])
def test_bilinear_matrix_is_torch_interpolate(out_size, in_size):
    x = torch.randn(2, 3, in_size, in_size + 2, dtype=torch.float64)
    rows = bilinear_matrix(out_size, in_size).double()
    cols = bilinear_matrix(out_size + 5, in_size + 2).double()
    expected = F.interpolate(x, size=(out_size, out_size + 5), mode="bilinear", align_corners=False)
    torch.testing.assert_close(rows @ x @ cols.T, expected)
    torch.testing.assert_close(rows.sum(dim=1), torch.ones(out_size, dtype=torch.float64))


def test_row_chunks_tile_the_height_and_respect_window_edges():
    chunks = _row_chunks(20, [0, 12, 8, 20], max_rows=5)
    assert chunks == [(0, 5), (5, 8), (8, 12), (12, 17), (17, 20)]


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    backbone = VisionTransformer(img_size=32, patch_size=8, embed_dim=24, depth=2, num_heads=2)
    features = DenseFeatures(backbone, [1])
    head = BNConvHead(features.out_channels, 5)
    with torch.no_grad():
        head.bn.running_mean.normal_()
        head.conv.weight.normal_()
        head.conv.bias.normal_()
    return DensePredictor(features, head).eval()


def test_dense_predictor_low_resolution_reproduces_forward(predictor):
    images = torch.randn(2, 3, 29, 43)  # sides not multiples of the patch: padded and cropped back
    with torch.no_grad():
        outputs, rows, cols = predictor.low_resolution(images)
        resized = torch.einsum("yh,bkhw,xw->bkyx", rows, outputs, cols)
        torch.testing.assert_close(resized, predictor(images))
    assert isinstance(predictor, SeparablePredictor)


@pytest.mark.parametrize(("crop", "stride"), [(24, 16), ((16, 24), (9, 11)), (64, 32)])
def test_separable_sliding_window_equals_the_window_average(predictor, crop, stride):
    images = torch.randn(2, 3, 37, 51)
    generic = lambda windows: predictor(windows)  # noqa: E731 (hides low_resolution: the reference path)
    with torch.no_grad():
        reference = slide_inference(generic, images, crop, stride)
        fast = slide_inference(predictor, images, crop, stride)
        torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
        crop2 = (crop, crop) if isinstance(crop, int) else crop
        stride2 = (stride, stride) if isinstance(stride, int) else stride
        for chunk_elements in (1, 1 << 20):  # one row at a time, or all at once
            labels = separable_slide_inference(predictor, images, crop2, stride2, True, chunk_elements)
            assert torch.equal(labels, reference.argmax(dim=1))
        torch.testing.assert_close(infer(predictor, images), predictor(images), rtol=1e-5, atol=1e-5)


def test_labels_output_is_the_argmax_of_every_tta_setting(predictor):
    images = torch.randn(1, 3, 30, 40)
    generic = lambda windows: predictor(windows)  # noqa: E731
    with torch.no_grad():
        for options in ({}, {"flip": True}, {"scales": (1.0, 1.25)}, {"short_side": 40}):
            expected = tta_inference(generic, images, "slide", 24, 16, **options).argmax(dim=1)
            assert torch.equal(tta_inference(predictor, images, "slide", 24, 16, output="labels", **options), expected)


def test_separable_path_aggregates_in_float32_under_autocast(predictor):
    # Lightning evaluates under torch.autocast with bf16-mixed: the window averages stay float32.
    images = torch.randn(2, 3, 30, 41)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = slide_inference(predictor, images, 24, 16)
        labels = tta_inference(predictor, images, "slide", 24, 16, output="labels")
    assert logits.dtype == torch.float32 and labels.dtype == torch.long
    assert torch.equal(labels, logits.argmax(dim=1))
