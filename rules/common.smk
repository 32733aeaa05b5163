# Helpers shared by every rule file.
#
# Paths: every artefact of a scene lives under work/{scene}/ and the finals under results/.
# Rules name them only through W() (work files) and R() (results) below, so that a later issue
# can split one scene into spatial clusters by inserting a {cluster} level
# (work/{scene}/clusters/{cluster}/...) for the SfM and training rules and merging them again
# before export, by changing these helpers instead of every rule.

import os

from snakemake.exceptions import WorkflowError

from splatforge_core.config import scene_section

SCENES = sorted(config["scenes"])

wildcard_constraints:
    scene="[A-Za-z0-9_-]+",


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
