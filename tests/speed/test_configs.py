"""The speed overlays parse on top of the DINOv2 recipe and build what they promise."""

from pathlib import Path

import pytest
import yaml

from clsvit_lightning.cli import run
from clsvit_lightning.distributed.fsdp import BlockFSDPStrategy

OVERLAYS = sorted(Path("configs/pretrain/speed").glob("*.yaml"))


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda path: path.stem)
def test_overlay_parses_over_the_recipe(overlay, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(["fit", "--config", "configs/pretrain/dinov2.yaml", "--config", str(overlay), "--print_config"])
    assert exit_info.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    expected = yaml.safe_load(overlay.read_text())
    if "compile" in expected.get("model", {}).get("init_args", {}):
        assert config["model"]["init_args"]["compile"] is True
    if "strategy" in expected.get("trainer", {}):
        assert config["trainer"]["strategy"]["class_path"] == "clsvit_lightning.distributed.fsdp.BlockFSDPStrategy"


def test_strategy_from_the_cli_gets_the_block_policies():
    # The CLI passes FSDPStrategy's unset arguments explicitly, as None.
    strategy = BlockFSDPStrategy(
        sharding_strategy="FULL_SHARD", activation_checkpointing=True, auto_wrap_policy=None,
        activation_checkpointing_policy=None,
    )  # fmt: skip
    assert strategy.kwargs["auto_wrap_policy"] is not None
    assert strategy._activation_checkpointing_kwargs
