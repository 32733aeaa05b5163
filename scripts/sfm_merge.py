from splatforge_core.sfm import merge
from splatforge_core.cluster import cluster_names
from splatforge_core.workflow import run_stage


def _by_cluster(files):
    """Cluster name -> file: the rule lists the clusters' files in clusters.json's order."""
    return dict(zip(cluster_names(snakemake.input.clusters), files, strict=True))


run_stage(snakemake, merge,
          lambda m: m.main(snakemake.input.clusters, _by_cluster(snakemake.input.aligned),
                           _by_cluster(snakemake.input.reports), snakemake.input.views, snakemake.output.aligned,
                           snakemake.output.report, snakemake.output.merge))
