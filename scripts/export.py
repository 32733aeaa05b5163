import numba

from splatforge_core import export
from splatforge_core.workflow import run_stage

# The texture bake's numba kernels would start one thread per CPU of the machine: keep them to the
# rule's threads (the cores a cluster job was given). Poisson keeps its own `threads` option.
numba.set_num_threads(max(1, min(snakemake.threads, numba.config.NUMBA_NUM_THREADS)))

# crop_box defaults to "auto" in the workflow: the stage bounds the mesh by the aligned SfM model.
run_stage(snakemake, export,
          lambda m: m.main(snakemake.input.splat, snakemake.params.prefix, report_path=snakemake.output.report,
                           options={"crop_box": "auto", **snakemake.params.options}, crop_model=snakemake.input.aligned))
