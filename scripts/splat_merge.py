from splatforge_core import splat_merge
from splatforge_core.cluster import cluster_names
from splatforge_core.workflow import run_stage


def _by_cluster(files):
    """Cluster name -> file: the rule lists the clusters' files in clusters.json's order."""
    return dict(zip(cluster_names(snakemake.input.clusters), files, strict=True))


run_stage(snakemake, splat_merge,
          lambda m: m.main(snakemake.input.clusters, _by_cluster(snakemake.input.splats),
                           _by_cluster(snakemake.input.metrics), snakemake.input.views, snakemake.output.splat,
                           snakemake.output.metrics, snakemake.output.merge, aligned_dir=snakemake.input.aligned,
                           images_dir=snakemake.input.images, train_options=snakemake.params.train,
                           coarse_metrics_path=snakemake.input.get("coarse") or None))
