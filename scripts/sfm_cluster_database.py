from splatforge_core.cluster import read_clusters
from splatforge_core.sfm import merge
from splatforge_core.workflow import run_stage


def _filter(m):
    cl = {c["name"]: c for c in read_clusters(snakemake.input.clusters)["clusters"]}
    return m.filter_database(snakemake.input.database, snakemake.output.database, cl[snakemake.wildcards.cluster]["images"])


run_stage(snakemake, merge, _filter)
