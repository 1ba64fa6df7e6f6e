"""``clsvit``: one help that lists every command, a version, shipped configs by name, no optimizer flags."""

import pytest

import clsvit_lightning
from clsvit_lightning.cli import LIGHTNING_COMMANDS, PROJECT_COMMANDS, run
from clsvit_lightning.config_files import CONFIG_ROOT, config_names, resolve_config, resolve_config_args


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h"]])
def test_help_lists_every_command_with_one_line(argv, capsys):
    run(argv)
    text = capsys.readouterr().out
    for name in [*LIGHTNING_COMMANDS, *PROJECT_COMMANDS]:
        (line,) = [line for line in text.splitlines() if line.startswith(f"  {name} ")]
        assert len(line.split(maxsplit=1)[1]) > 10  # a real description
    assert "config" in PROJECT_COMMANDS and "predict" in LIGHTNING_COMMANDS


def test_version(capsys):
    run(["--version"])
    assert capsys.readouterr().out.startswith(f"clsvit_lightning {clsvit_lightning.__version__} (torch ")


def test_unknown_command_is_an_error_with_the_command_list():
    with pytest.raises(SystemExit, match=r"unknown command 'fitt'[\s\S]*summary"):
        run(["fitt"])


def test_optimizer_flags_are_not_offered(capsys):
    # The tasks build their own optimizer; LightningCLI's --optimizer crashed with KeyError before.
    with pytest.raises(SystemExit):
        run(["fit", "--config", "pretrain/dinov2", "--optimizer", "Adam"])
    assert "--optimizer" in capsys.readouterr().err


def test_shipped_configs_resolve_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert "pretrain/dinov2" in config_names() and "dense/ade20k_linear" in config_names()
    for name in ("pretrain/dinov2", "pretrain/dinov2.yaml", "configs/pretrain/dinov2.yaml"):
        assert resolve_config(name) == str(CONFIG_ROOT / "pretrain/dinov2.yaml")
    own = tmp_path / "mine.yaml"
    own.write_text("seed_everything: 3\n")
    assert resolve_config(str(own)) == str(own)  # a user's file wins
    with pytest.raises(FileNotFoundError, match=r"'pretrain/dinov9' is neither a file nor a shipped config"):
        resolve_config("pretrain/dinov9")
    argv = ["fit", "--config", "pretrain/dinov2", "--config={trainer: {max_steps: 1}}", "--trainer.max_steps", "2"]
    assert resolve_config_args(argv) == [
        "fit", "--config", str(CONFIG_ROOT / "pretrain/dinov2.yaml"), "--config={trainer: {max_steps: 1}}",
        "--trainer.max_steps", "2",
    ]  # fmt: skip
    sweep = ["sweep", "--base_config", "pretrain/dinov2", "pretrain/tiny_synthetic", "--out", "o"]
    assert resolve_config_args(sweep)[2:4] == [
        str(CONFIG_ROOT / f"pretrain/{n}.yaml") for n in ("dinov2", "tiny_synthetic")
    ]
    with pytest.raises(SystemExit, match="neither a file nor a shipped config"):
        run(["fit", "--config", "pretrain/nope"])
    with pytest.raises(SystemExit, match="0"):
        run(["fit", "--config", "pretrain/dinov2", "--config", "pretrain/tiny_synthetic", "--print_config"])
    assert "DINOv2Pretraining" in capsys.readouterr().out


def test_config_command(capsys):
    run(["config", "list"])
    assert "pretrain/dinov2" in capsys.readouterr().out.split()
    run(["config", "show", "pretrain/tiny_synthetic"])
    assert capsys.readouterr().out == (CONFIG_ROOT / "pretrain/tiny_synthetic.yaml").read_text() + "\n"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("backbone.init_args.specialization", "final_norm:maybe", "'final_norm' takes true or false"),
        ("backbone.init_args.specialization", "norm1:all;norm1:0-3", "names 'norm1' twice"),
        ("base_lr", "-0.1", "DINOv2Pretraining: base_lr must be > 0, got -0.1"),
        ("teacher_momentum", "1.5", "DINOv2Pretraining: teacher_momentum must be in [0, 1], got 1.5"),
    ],
)
def test_a_bad_value_on_the_command_line_is_one_short_message(option, value, message):
    # jsonargparse wraps errors raised while it builds the model (a traceback and a config dump).
    argv = ["fit", "--config", "pretrain/dinov2", "--config", "pretrain/tiny_synthetic"]
    with pytest.raises(SystemExit) as exit_:
        run([*argv, f"--model.init_args.{option}", value])
    text = str(exit_.value.code)
    assert text.startswith("clsvit fit: ") and message in text
    assert "\n" not in text and "Namespace" not in text and exit_.value.__cause__ is None
