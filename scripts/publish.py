import shutil

from splatforge_core import io
from splatforge_core.workflow import run_stage


def _publish(m):
    with m.atomic_path(snakemake.output.splat) as tmp:
        shutil.copyfile(snakemake.input.splat, tmp)


run_stage(snakemake, io, _publish)
