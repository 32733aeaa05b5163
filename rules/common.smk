# Helpers shared by every rule file.
#
# Paths: every artefact of a scene lives under work/{scene}/ and the finals under results/.
# Rules name them only through W() (work files) and R() (results) below, so that a later issue
# can split one scene into spatial clusters by inserting a {cluster} level
# (work/{scene}/clusters/{cluster}/...) for the SfM and training rules and merging them again
# before export, by changing these helpers instead of every rule.

import os

from splatforge_core.config import scene_section

SCENES = sorted(config["scenes"])

wildcard_constraints:
    scene="[A-Za-z0-9_.-]+",


#: Where the demo capture is made (rule demo); not a scene, so no {scene} wildcard.
DEMO_DIR = "work/demo"


def scene_dir(scene):
    """The work folder of one (concrete) scene, e.g. work/lund."""
    return f"work/{scene}"


def W(path):
    """Wildcard pattern of a scene's work file: W("views.json") == "work/{scene}/views.json"."""
    return f"{scene_dir('{scene}')}/{path}"


def R(suffix):
    """Wildcard pattern of a scene's final output: R(".ply") == "results/{scene}.ply"."""
    return f"results/{{scene}}{suffix}"


def scene_input(wildcards):
    """The scene's input photo folder: config `input` overrides the default scene's."""
    if config.get("input") and wildcards.scene == config.get("default_scene", "scene"):
        return config["input"]
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
