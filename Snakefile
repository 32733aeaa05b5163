# Splat Forge: GPS-tagged photos or 360 panoramas -> geo-referenced 3D Gaussian splat,
# textured mesh and compressed PLY.
#
#   snakemake --cores 24 results/scene.ply
#
# One rules/<stage>.smk per stage; all logic lives in the splatforge_core package and
# the scripts/ called by the rules are thin. See README.md and docs/formats.md.

import os

from snakemake.utils import min_version, validate
from snakemake.logging import logger

from splatforge_core.config import adopt_input, validate_config

min_version("8.0")


# The repository's config.yaml is the default; --configfile / --config override it.
configfile: os.path.join(workflow.basedir, "config.yaml")


validate(config, "schemas/config.schema.yaml")
# `--config input=PATH` makes the photo folder a scene of its own (named after the folder) and the
# default scene, with the global settings only; `snakemake --cores all --config input=PATH`
# then writes results/<name>.ply.
ADOPTED_SCENE = adopt_input(config)
if ADOPTED_SCENE:
    logger.info(f"input: scene {ADOPTED_SCENE!r} -> results/{ADOPTED_SCENE}.ply")
# The schema checks the top-level structure; every stage section (and every scene's override
# merged on top) is checked against its options dataclass here, so a typo or a wrong type stops
# the run now, naming the key, instead of after SfM has run.
validate_config(config)


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/ingest.smk"
include: "rules/project.smk"
include: "rules/sfm.smk"
include: "rules/train.smk"
include: "rules/cluster.smk"
include: "rules/export.smk"
include: "rules/bundle.smk"
include: "rules/compress.smk"
include: "rules/report.smk"
include: "rules/viewer.smk"
include: "rules/video.smk"
include: "rules/publish.smk"


# Small, quick rules run in the Snakemake process itself, also on a cluster (profiles/slurm), instead
# of waiting in the queue: each takes < 3 s and < 700 MB (benchmarks/results/e2e.md; demo renders
# the demo capture in 6-14 s).
localrules:
    all,
    demo,
    ingest,
    sfm_pairs,
    sfm_align,
    report,
    publish,


# `snakemake` with no target runs the default scene (the demo); name others explicitly,
# e.g. `snakemake --cores all results/lund.ply`.
rule all:
    input:
        expand(R(".ply"), scene=[config.get("default_scene", "scene")]),
    default_target: True
