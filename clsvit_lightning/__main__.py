"""``python -m clsvit_lightning ...`` runs the ``clsvit`` command (what sbatch scripts call under srun)."""

from clsvit_lightning.cli import main

main()
