from splatforge_core import report
from splatforge_core.workflow import run_stage

run_stage(snakemake, report,
          lambda m: m.main(snakemake.params.scene_dir, snakemake.output.report,
                           {"compress_report": snakemake.input.compressed, "export_report": snakemake.input.export}))
