from splatforge_core.workflow import run_stage

run_stage(snakemake, "splatforge_core.ingest",
          lambda m: m.main(snakemake.input.photos, snakemake.output.manifest, snakemake.params.options))
