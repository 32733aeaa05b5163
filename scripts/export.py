from splatforge_core.workflow import run_stage

run_stage(snakemake, "splatforge_core.export",
          lambda m: m.main(snakemake.input.splat,
                           {"glb": snakemake.output.glb, "obj": snakemake.output.obj, "fbx": snakemake.output.fbx},
                           snakemake.output.report, snakemake.params.options))
