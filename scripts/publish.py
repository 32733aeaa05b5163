import shutil

from splatforge_core.io import atomic_path
from splatforge_core.workflow import run_stage


def _publish(_module):
    with atomic_path(snakemake.output.splat) as tmp:
        shutil.copyfile(snakemake.input.splat, tmp)


run_stage(snakemake, "splatforge_core.io", _publish)
