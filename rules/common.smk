# Helpers shared by every rule file.
#
# Paths: every artefact of a scene lives under work/{scene}/ and the finals under results/.
# Rules name them only through W() (work files), C() (a cluster's work files) and R()
# (results) below.
#
# Clusters (issue #12, rules/cluster.smk): a scene is either one block or clustered, decided
# when Snakemake starts (scene_is_clustered: config section `cluster` and the number of input
# photos), never in between:
# * one block (the default for scenes of up to cluster.max_panoramas photos): exactly the jobs
#   and files of a workflow without clusters: sfm_map -> W("sparse"), sfm_align -> W("aligned"),
#   train -> W("splat/splat.ply"). No clusters.json, no cluster job.
# * clustered: checkpoint `cluster` writes W("clusters.json"); each cluster {cluster} (c0, c1,
#   ...) gets a filtered copy of the matched database and its own map, align and train jobs,
#   the same rules' code (`use rule ... as ..._cluster`) on C() paths
#   (work/{scene}/clusters/{cluster}/...); sfm_merge and splat_merge then write the merged
#   model and splat to the one-block paths W("aligned"), W("alignment.json"),
#   W("splat/splat.ply"), W("splat/metrics.json"), so export, compress, report and publish
#   read the same files whichever way the scene ran. The merge rules only match clustered
#   scenes (wildcard constraint) and win over sfm_align/train there (ruleorder). Each cluster
#   trains on its model moved by the merge's chain alignment (C("placed")), so the splats share
#   the merged model's frame.
# extract, pairs and match stay scene-wide (W("colmap/database.db")).

import os
import re

from snakemake.exceptions import WorkflowError

from splatforge_core.cluster import is_clustered
from splatforge_core.config import scene_section

SCENES = sorted(config["scenes"])

wildcard_constraints:
    scene="[A-Za-z0-9_-]+",
    cluster="[A-Za-z0-9_-]+",


#: Where the demo capture is made (rule demo); not a scene, so no {scene} wildcard.
DEMO_DIR = "work/demo"


def scene_dir(scene):
    """The work folder of one (concrete) scene, e.g. work/lund."""
    return f"work/{scene}"


def W(path):
    """Wildcard pattern of a scene's work file: W("views.json") == "work/{scene}/views.json"."""
    return f"{scene_dir('{scene}')}/{path}"


def C(path):
    """Wildcard pattern of a cluster's work file:
    C("sparse") == "work/{scene}/clusters/{cluster}/sparse"."""
    return f"{scene_dir('{scene}')}/clusters/{{cluster}}/{path}"


def R(suffix):
    """Wildcard pattern of a scene's final output: R(".ply") == "results/{scene}.ply"."""
    return f"results/{{scene}}{suffix}"


def scene_input(wildcards):
    """The scene's input photo folder (`--config input=PATH` was made a scene of its own at start)."""
    if wildcards.scene not in config["scenes"]:
        raise WorkflowError(
            f"results/{wildcards.scene}.*: there is no scene {wildcards.scene!r} (configured: {', '.join(SCENES)}); "
            f"add it under scenes: in config.yaml or a --configfile (input: PATH), or run "
            f"`snakemake --cores all --config input=PATH` to make a scene of a photo folder")
    if ADOPTED_SCENE and wildcards.scene != ADOPTED_SCENE:
        # e.g. the old `snakemake results/scene.ply --config input=PATH` would run the demo instead
        raise WorkflowError(
            f"results/{wildcards.scene}.*: with --config input=... the photos are scene {ADOPTED_SCENE!r}: ask for "
            f"results/{ADOPTED_SCENE}.ply (or give no target); scene {wildcards.scene!r} is "
            f"{config['scenes'][wildcards.scene]['input']}")
    return config["scenes"][wildcards.scene]["input"]


def stage_options(scene, section):
    """Options of one stage for one scene: the global section with the scene's overrides on top
    (splatforge_core.config.scene_section, the merge validate_config checked at start)."""
    return scene_section(config, scene, section)


def demo_ground_truth_path(wildcards):
    """ground_truth.json of the demo capture when the scene's input is the demo, else ''."""
    inp = os.path.normpath(scene_input(wildcards))
    gt = os.path.join(os.path.dirname(inp), "ground_truth.json")
    return gt if inp == os.path.normpath(f"{DEMO_DIR}/capture/images") else ""


def _scene_input_of(scene):
    """scene_input() for a scene name (no wildcards object; '' for an unknown scene)."""
    return (config["scenes"].get(scene) or {}).get("input", "")


def input_image_count(scene):
    """About how many photos a scene has, known before any job runs: the demo's configured
    panoramas for the demo capture, else the .jpg/.jpeg files in the input folder (0 when the
    folder does not exist yet)."""
    inp = os.path.normpath(_scene_input_of(scene))
    if inp == os.path.normpath(f"{DEMO_DIR}/capture/images"):
        return int((config.get("demo") or {}).get("n_panoramas", 12))
    try:
        return sum(1 for e in os.scandir(inp) if e.is_file() and e.name.lower().endswith((".jpg", ".jpeg"))
                   and not e.name.startswith("."))
    except OSError:
        return 0


def scene_is_clustered(scene):
    """Whether a scene runs per cluster (splatforge_core.cluster.is_clustered on its `cluster`
    options and input_image_count); False reads no folder unless the options ask for it."""
    opts = stage_options(scene, "cluster")
    if int(opts.get("n_clusters", 0) or 0) > 1:
        return True
    if int(opts.get("n_clusters", 0) or 0) == 1:
        return False
    return is_clustered(opts, input_image_count(scene))


#: Scenes of config.yaml that run per cluster (decided once, at start).
CLUSTERED_SCENES = [s for s in SCENES if scene_is_clustered(s)]


def scene_regex(names):
    """A wildcard constraint matching exactly these scene names (nothing when empty)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


def cluster_names(wildcards):
    """Cluster names of a clustered scene, from the `cluster` checkpoint's clusters.json."""
    from splatforge_core.cluster import cluster_names as names_in

    return names_in(checkpoints.cluster.get(scene=wildcards.scene).output.clusters)


def per_cluster(path):
    """Input function: that file C(path) of every cluster of a clustered scene, in the order of
    clusters.json (the merge scripts pair them with the names read from it)."""

    def files(wildcards):
        return [C(path).format(scene=wildcards.scene, cluster=c) for c in cluster_names(wildcards)]

    return files


def coarse_pass_file(path):
    """Input function: work/{scene}/coarse/<path> when the scene's cluster.coarse_fraction is > 0,
    else nothing. train_cluster continues the coarse pass's state.pt (without a coarse pass a cluster
    starts from its own SfM points); splat_merge counts its metrics.json."""

    def files(wildcards):
        from splatforge_core.cluster import has_coarse_pass

        if has_coarse_pass(stage_options(wildcards.scene, "cluster")):
            return W(f"coarse/{path}").format(scene=wildcards.scene)
        return []

    return files


def cluster_threads(n):
    """``threads:`` of a parallel rule: every core given with --cores on a local run (Snakemake caps
    a rule's threads at --cores), and ``n`` on a cluster, where there is no --cores and ``n`` is what
    the job asks for (sbatch --cpus-per-task; the job's Snakemake runs with the same ``n``).
    ``--set-threads RULE=N`` (or ``set-threads:`` in a profile) overrides both."""

    def threads(wildcards):
        cores = workflow.resource_settings.cores
        if workflow.local_exec and not workflow.remote_exec and cores is not None:
            return cores
        return n

    return threads


# -- bundles (rules/bundle.smk, rules/compress.smk) --


def preset_needs_bundle(scene):
    """Whether the scene's compress.preset takes a bundle (unknown presets: no; the config check
    at start has refused them already)."""
    from splatforge_core.codec.presets import PRESETS

    preset = PRESETS.get(stage_options(scene, "compress").get("preset", "qat-3dgs"))
    return bool(preset is not None and preset.needs_bundle)


def bundle_scaffold_dir(wildcards):
    """work/{scene}/splat/scaffold (the Scaffold-GS model that train.model: scaffold writes) when the
    scene's compress.preset takes a Scaffold-GS bundle (qat-bundle: codec Preset.bundle_kind), else ''
    (the 3DGS splat is packed)."""
    from splatforge_core.codec.presets import PRESETS

    preset = PRESETS.get(stage_options(wildcards.scene, "compress").get("preset", "qat-3dgs"))
    if preset is None or getattr(preset, "bundle_kind", "3dgs") != "scaffold":
        return ""
    return W("splat/scaffold").format(scene=wildcards.scene)


def bundle_fallback_max_side(wildcards):
    """Longer image side of the bundle when the splat's metrics.json does not say what the trainer
    used (a merged splat of a clustered scene): the train options' size for the device it ran on."""
    from splatforge_core.train.options import TrainOptions

    train = TrainOptions.from_dict(stage_options(wildcards.scene, "train"))
    return train.max_side if config.get("use_gpu", False) else train.cpu_max_side


def compress_inputs(wildcards):
    """The splat; plus work/{scene}/bundle.tar when the scene's compress.preset needs a bundle."""
    files = {"splat": W("splat/splat.ply").format(scene=wildcards.scene)}
    if preset_needs_bundle(wildcards.scene):
        files["bundle"] = W("bundle.tar").format(scene=wildcards.scene)
    return files
