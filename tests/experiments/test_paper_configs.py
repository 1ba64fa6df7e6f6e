"""Every config combination of experiments/paper/rows.yaml parses through the real CLI, as it would on SLURM."""

import pytest
import yaml

from clsvit_lightning.cli import run
from tests.experiments.conftest import REPO, load_script

ROWS = load_script("experiments/paper/rows.py")
SPEC = ROWS.load()


def print_config(capsys, command: str, configs: list[str]) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        run([command, *sum((["--config", path] for path in configs), []), "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def backbone_of(config: dict) -> dict:
    return config["model"]["init_args"]["backbone"]["init_args"]


def expected_specialization(run_name: str) -> tuple[str, int]:
    """The specialization and register count the run's last backbone overlay asks for."""
    overlay = yaml.safe_load((REPO / SPEC["runs"][run_name]["backbone"][-1]).read_text())
    args = overlay["model"]["init_args"]["backbone"]["init_args"]
    return args["specialization"], args["num_registers"]


@pytest.mark.parametrize("run_name", sorted(SPEC["runs"]))
def test_pretraining_run_parses_with_the_rows_specialization(capsys, run_name):
    config = print_config(capsys, "fit", ROWS.pretrain_configs(SPEC, run_name))
    specialization, registers = expected_specialization(run_name)
    assert backbone_of(config)["specialization"] == specialization
    assert backbone_of(config)["num_registers"] == registers


@pytest.mark.parametrize("evaluation", sorted(SPEC["evaluations"]))
def test_every_evaluation_parses_for_a_specialized_run(capsys, evaluation):
    run_name = "dinov2_vits16_paper_reg4_patch"  # the overlay that changes the most backbone fields
    protocol = SPEC["evaluations"][evaluation]
    config = print_config(capsys, protocol["command"], ROWS.evaluation_configs(SPEC, run_name, evaluation))
    backbone = backbone_of(config)
    assert (backbone["specialization"], backbone["num_registers"]) == expected_specialization(run_name)
    assert (backbone["embed_dim"], backbone["depth"], backbone["patch_size"]) == (384, 12, 16)


@pytest.mark.parametrize("run_name", ["dinov2_vitl14_paper", "deit3_vitl16_vanilla", "dinov2_vitb16_paper"])
def test_evaluation_backbone_matches_the_pretrained_architecture(capsys, run_name):
    pretrain = backbone_of(print_config(capsys, "fit", ROWS.pretrain_configs(SPEC, run_name)))
    evaluate = backbone_of(print_config(capsys, "validate", ROWS.evaluation_configs(SPEC, run_name, "knn")))
    for key in ("patch_size", "embed_dim", "depth", "num_heads", "num_registers", "specialization"):
        assert evaluate[key] == pretrain[key], key
    assert (evaluate["layerscale_init"] is None) == (pretrain["layerscale_init"] is None)


def test_every_row_names_a_run_a_table_and_an_evaluation_set():
    assert {row["run"] for row in SPEC["rows"]} == set(SPEC["runs"])  # no orphan run, no missing run
    for row in SPEC["rows"]:
        assert row["table"] in ROWS.TABLES and row["evaluations"] in SPEC["evaluation_sets"]
        assert row["paper"], "say 'not found' rather than leaving the paper's figure empty"
    for paths in [r["pretrain"] + r["backbone"] for r in SPEC["runs"].values()]:
        assert all((REPO / path).is_file() for path in paths), paths


def test_readme_tables_are_the_generated_ones():
    readme = (REPO / "experiments/paper/README.md").read_text()
    assert ROWS.runs_markdown(SPEC) in readme
    assert ROWS.evaluations_markdown(SPEC, "dinov2_vits16_norms") in readme


def test_commands_name_the_launchers_and_overlays():
    pretrain = ROWS.pretrain_command(SPEC, "dinov2_vits16_norms")
    assert pretrain.startswith("CLSVIT_ROOT=outputs/paper/dinov2_vits16_norms sbatch experiments/slurm/pretrain.sbatch")
    assert "configs/pretrain/vits16_vanilla.yaml --config experiments/paper/specs/norms.yaml" in pretrain
    assert "experiments/paper/slurm/supervised.sbatch" in ROWS.pretrain_command(SPEC, "deit3_vitb16_paper")
    ms = ROWS.evaluation_command(SPEC, "dinov2_vits16_norms", "ade20k_ms")
    assert "dense_eval.sbatch configs/dense/ade20k_linear.yaml $CKPT --config configs/dense/ade20k_ms.yaml" in ms
    assert ROWS.evaluation_command(SPEC, "dinov2_vits16_norms", "knn").startswith("srun --gpus=1 clsvit validate")
