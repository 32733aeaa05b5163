from splatforge_core import export
from splatforge_core.workflow import run_stage

# crop_box defaults to "auto" in the workflow: the stage bounds the mesh by the aligned SfM model.
run_stage(snakemake, export,
          lambda m: m.main(snakemake.input.splat, snakemake.params.prefix, report_path=snakemake.output.report,
                           options={"crop_box": "auto", **snakemake.params.options}, crop_model=snakemake.input.aligned))
