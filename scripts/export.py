from splatforge_core.workflow import run_stage

run_stage(snakemake, "splatforge_core.export",
          lambda m: m.main(snakemake.input.splat, snakemake.params.prefix,
                           report_path=snakemake.output.report, options=snakemake.params.options))
