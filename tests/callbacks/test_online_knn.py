"""OnlineKNN: k-NN accuracy of the module's evaluated backbone, against a direct computation."""

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer

from clsvit_lightning.callbacks import OnlineKNN
from clsvit_lightning.cli import run
from clsvit_lightning.data.datasets.imagenet import ImageFolderDataset
from clsvit_lightning.data.transforms.classification import classification_transform
from clsvit_lightning.data.transforms.collate import collate_labelled
from clsvit_lightning.evaluation.knn import knn_classify
from clsvit_lightning.models import VisionTransformer


class Holder(LightningModule):
    """A module with a backbone to evaluate and a trivial training step."""

    def __init__(self):
        super().__init__()
        self.teacher_backbone = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.weight - 1).square().sum()

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(2, 1), batch_size=1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("knn")
    run(["synth", "--out", str(out), "--kind", "imagenet", "--num_train", "24", "--num_val", "8",
         "--num_classes", "3", "--size_range", "[32, 40]"])  # fmt: skip
    return out / "imagenet"


def test_online_knn_matches_knn_on_directly_extracted_features(tmp_path, root):
    module = Holder()
    callback = OnlineKNN(str(root), every_n_epochs=2, k=5, crop_size=32, resize_size=32, batch_size=7)
    trainer = Trainer(default_root_dir=tmp_path, max_epochs=2, callbacks=[callback], logger=False,
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)  # fmt: skip
    trainer.fit(module)
    assert set(callback.last_results) == {"online_knn/k5_top1", "online_knn/k5_top5", "online_knn/k5_mean_per_class"}
    transform = classification_transform("eval", 32, 32)
    train = ImageFolderDataset(root, "train", transform)
    val = ImageFolderDataset(root, "val", transform, classes=train.classes)

    def features(dataset):
        batch = collate_labelled([dataset[i] for i in range(len(dataset))])
        with torch.no_grad():
            return module.teacher_backbone.eval()(batch["image"]), batch["label"]

    (expected,) = knn_classify(*features(train), *features(val), ks=(5,), num_classes=3)
    assert callback.last_results["online_knn/k5_top1"] == pytest.approx(expected.top1)
    assert trainer.callback_metrics["online_knn/k5_top1"] == pytest.approx(expected.top1)


def test_online_knn_checks_its_options(root):
    with pytest.raises(ValueError, match="every_n_epochs must be >= 1"):
        OnlineKNN(str(root), every_n_epochs=0)
    callback = OnlineKNN(str(root), backbone_attribute="student_backbone", crop_size=32, resize_size=32)
    with pytest.raises(ValueError, match="has no attribute 'student_backbone'"):
        callback.setup(None, Holder(), "fit")


def test_an_epoch_cut_short_by_a_requeue_is_evaluated_after_the_restart_not_now(tmp_path):
    from types import SimpleNamespace

    from clsvit_lightning.callbacks.slurm_requeue import StepBoundaryRequeue

    requeue = StepBoundaryRequeue(only_under_slurm=False)
    callback = OnlineKNN(str(tmp_path), every_n_epochs=1)
    trainer = SimpleNamespace(current_epoch=0, callbacks=[requeue, callback])
    requeue.saved_path = tmp_path / "hpc_ckpt_1.ckpt"  # this fit saved for a requeue and stopped
    callback.on_train_epoch_end(trainer, pl_module=None)  # returns before touching the module
    requeue.saved_path = None
    with pytest.raises(AttributeError):  # due, and it would evaluate now
        callback.on_train_epoch_end(trainer, pl_module=None)


def test_root_follows_the_data_module_and_the_last_epoch_is_always_evaluated(root):
    from types import SimpleNamespace

    from clsvit_lightning.callbacks.online_knn import _last_epoch

    callback = OnlineKNN(crop_size=32, resize_size=32)  # root: null in the recipes
    callback.setup(SimpleNamespace(datamodule=SimpleNamespace(root=str(root))), Holder(), "fit")
    assert callback.root == root and callback.num_classes == 3
    with pytest.raises(ValueError, match="no root given"):
        OnlineKNN().setup(SimpleNamespace(datamodule=None), Holder(), "fit")
    state = {"max_epochs": 3, "max_steps": -1, "global_step": 5}
    assert _last_epoch(SimpleNamespace(current_epoch=2, **state))
    assert not _last_epoch(SimpleNamespace(current_epoch=1, **state))
    assert _last_epoch(SimpleNamespace(current_epoch=0, max_epochs=-1, max_steps=4, global_step=4))
