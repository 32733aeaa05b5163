from splatforge_core.cluster import train_job_options
from splatforge_core.train import trainer
from splatforge_core.workflow import run_stage

# role: "scene" (rule train), "coarse" / "cluster" (rules/cluster.smk); init: the coarse pass's
# state a cluster continues (none without a coarse pass); state: written by the coarse pass
role = snakemake.params.get("role") or "scene"
init = snakemake.input.get("init") or None
state = snakemake.output.get("state") or None
options = train_job_options(role, snakemake.params.options, snakemake.params.get("cluster"), snakemake.input.views)
run_stage(snakemake, trainer,
          lambda m: m.main(snakemake.input.aligned, snakemake.input.images, snakemake.input.views,
                           snakemake.params.out_dir, snakemake.output.splat,
                           {"num_threads": snakemake.threads, **options}, init_from=init, state_path=state))
