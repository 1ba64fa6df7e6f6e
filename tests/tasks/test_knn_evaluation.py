from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from clsvit_lightning.cli import run
from clsvit_lightning.evaluation.knn import knn_classify, weighted_vote
from clsvit_lightning.models import VisionTransformer
from clsvit_lightning.tasks.knn_evaluation import KNNEvaluation
from clsvit_lightning.tasks.supervised import DeiT3Supervised
from tests.tasks.test_supervised import write_image_folder

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def collate(samples):
    return {"image": torch.stack([s[0] for s in samples]), "label": torch.stack([s[1] for s in samples])}


class TinyBankAndQueries(LightningDataModule):
    """A memory bank (``feature_dataloader("train")``) and queries (``val_dataloader``) of noise images."""

    def __init__(self, bank_size=30, num_queries=13, num_classes=4, batch_size=4):
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.splits = {}
        for split, length in (("train", bank_size), ("val", num_queries)):
            labels = torch.randint(0, num_classes, (length,), generator=generator)
            images = torch.randn(length, 3, 32, 32, generator=generator)
            images[:, 0] += labels[:, None, None].float()  # some class signal
            self.splits[split] = TensorDataset(images, labels)
        self.num_classes, self.batch_size = num_classes, batch_size

    def feature_dataloader(self, split="train"):
        return DataLoader(self.splits[split], batch_size=self.batch_size, collate_fn=collate)

    def val_dataloader(self):
        return self.feature_dataloader("val")


def tiny_backbone():
    # No LayerScale: with a 1e-5 init the [CLS] of an untrained model barely depends on the image (ties).
    return VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, specialization="paper", layerscale_init=None
    )


def test_validate_matches_brute_force_knn_on_directly_computed_features(tmp_path):
    data = TinyBankAndQueries()
    module = KNNEvaluation(tiny_backbone(), ks=(1, 3, 10, 200), temperature=0.07)
    trainer = Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    metrics = trainer.validate(module, data)[0]
    with torch.no_grad():
        bank_images, bank_labels = data.splits["train"].tensors
        query_images, query_labels = data.splits["val"].tensors
        bank, queries = module.backbone(bank_images), module.backbone(query_images)
    expected = knn_classify(bank, bank_labels, queries, query_labels, (1, 3, 10, 200), 0.07, num_classes=4)
    assert [r.k for r in module.results] == [1, 3, 10]  # 200 > the 30 bank images: skipped
    for result in expected:
        for name, value in result.as_dict("knn").items():
            assert metrics[name] == pytest.approx(value, abs=1e-4), name
    assert not module.backbone.training


def test_neighbours_are_searched_in_fp32_under_mixed_precision():
    module = KNNEvaluation(tiny_backbone(), ks=(5,))
    module.trainer = Trainer(accelerator="cpu", devices=1, logger=False)
    module.ks = [5]
    generator = torch.Generator().manual_seed(0)
    module.bank_features = F.normalize(torch.randn(50, 32, generator=generator), dim=1)
    module.bank_labels = torch.arange(50) % 4
    queries = F.normalize(torch.randn(6, 32, generator=generator), dim=1)
    expected = (queries @ module.bank_features.T).topk(5, dim=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        similarities, labels = module.nearest_neighbours(queries)
        weighted_vote(similarities, labels, 4, 0.07)  # bf16 weights would not scatter into the fp32 votes
    assert similarities.dtype == torch.float32
    torch.testing.assert_close(similarities, expected.values, rtol=0, atol=0)
    assert torch.equal(labels, module.bank_labels[expected.indices])


def test_bad_options_name_themselves():
    with pytest.raises(ValueError, match="ks must be a non-empty list"):
        KNNEvaluation(tiny_backbone(), ks=())
    with pytest.raises(ValueError, match="temperature must be > 0"):
        KNNEvaluation(tiny_backbone(), temperature=0.0)


def test_two_ranks_with_a_sharded_bank_give_the_single_process_result(tmp_path):
    # 30 bank images over 2 ranks (15 each); 13 queries: the sampler pads rank 1 with one repeat.
    data = TinyBankAndQueries()
    module = KNNEvaluation(tiny_backbone(), ks=(1, 3, 20), temperature=0.07)
    with torch.no_grad():
        bank_images, bank_labels = data.splits["train"].tensors
        query_images, query_labels = data.splits["val"].tensors
        bank, queries = module.backbone(bank_images), module.backbone(query_images)
    expected = knn_classify(bank, bank_labels, queries, query_labels, (1, 3, 20), 0.07, num_classes=4)
    trainer = Trainer(
        default_root_dir=tmp_path, accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    metrics = trainer.validate(module, data, verbose=False)[0]
    for result in expected:
        for name, value in result.as_dict("knn").items():
            assert metrics[name] == pytest.approx(value, abs=1e-4), name


def test_knn_of_a_supervised_checkpoint_through_the_cli(tmp_path):
    root = write_image_folder(tmp_path / "imagenet", per_class=(5, 2))
    backbone = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    supervised = DeiT3Supervised(backbone, num_classes=3)
    torch.save({"state_dict": supervised.state_dict()}, tmp_path / "supervised.ckpt")
    cli = run(
        [
            "validate",
            "--config", str(CONFIGS / "classification/knn.yaml"),
            "--model.init_args.backbone.init_args.img_size", "32",
            "--model.init_args.backbone.init_args.patch_size", "8",
            "--model.init_args.backbone.init_args.embed_dim", "32",
            "--model.init_args.backbone.init_args.depth", "2",
            "--model.init_args.backbone.init_args.num_heads", "2",
            "--model.init_args.pretrained", str(tmp_path / "supervised.ckpt"),
            "--model.init_args.ks", "[10, 20]",
            "--data.init_args.root", str(root),
            "--data.init_args.batch_size", "4",
            "--data.init_args.num_workers", "0",
            "--data.init_args.crop_size", "32",
            "--data.init_args.resize_size", "36",
            "--trainer.accelerator", "cpu",  # the shipped precision (bf16-mixed) on CPU
            "--trainer.enable_progress_bar", "false",
        ]
    )  # fmt: skip
    assert [r.k for r in cli.model.results] == [10]  # 15 bank images: k=20 skipped
    for key, value in backbone.state_dict().items():
        assert torch.equal(cli.model.backbone.state_dict()[key], value), key
    assert 0 <= cli.trainer.callback_metrics["knn/k10_top1"] <= 100


def test_ks_larger_than_the_bank_are_skipped_with_one_warning_naming_them(tmp_path):
    module = KNNEvaluation(tiny_backbone(), ks=(1, 3, 100, 200), temperature=0.07)
    trainer = Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    data = TinyBankAndQueries()
    with pytest.warns(UserWarning, match=r"ks \[100, 200\] exceed the memory bank size 30 and are skipped") as seen:
        trainer.validate(module, data)
        trainer.validate(module, data)  # a second evaluation: not said again
    assert len([w for w in seen if "exceed the memory bank" in str(w.message)]) == 1
    assert [r.k for r in module.results] == [1, 3]


def test_knn_without_pretrained_weights_warns_that_the_backbone_is_random():
    with pytest.warns(UserWarning, match="KNNEvaluation: pretrained is null, so the backbone is randomly initialised"):
        KNNEvaluation(tiny_backbone())


def test_a_bad_pretrained_file_through_the_cli_is_one_line_naming_it(tmp_path):
    empty = tmp_path / "teacher.pth"
    empty.write_bytes(b"")
    with pytest.raises(SystemExit) as exit_:
        run(
            [
                "validate",
                "--config",
                str(CONFIGS / "classification/knn.yaml"),
                "--model.init_args.pretrained",
                str(empty),
            ]
        )
    assert str(exit_.value.code) == f"clsvit validate: {empty} is an empty file; expected a torch checkpoint"
