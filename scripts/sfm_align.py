import os

from splatforge_core.sfm import align
from splatforge_core.workflow import run_stage

run_stage(snakemake, align,
          lambda m: m.main(os.path.join(snakemake.input.sparse, "0"), snakemake.input.views, snakemake.output.aligned,
                           snakemake.output.report, snakemake.params.options,
                           ground_truth_path=snakemake.params.ground_truth, manifest_path=snakemake.input.manifest))
