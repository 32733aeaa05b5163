from splatforge_core.codec import bundle
from splatforge_core.workflow import run_stage

run_stage(snakemake, bundle,
          lambda m: m.pack_scene(snakemake.params.workdir, snakemake.output.bundle,
                                 max_side=m.trained_max_side(snakemake.input.metrics, snakemake.params.max_side),
                                 scaffold=snakemake.params.scaffold or None))
