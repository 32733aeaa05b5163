# results/{scene}.ply is the canonical output and the last file of a scene to appear: it is
# published (atomically copied from work/{scene}/splat/splat.ply) only once the meshes, the
# compressed PLY and the run report exist, so `snakemake results/scene.ply` runs every stage.

from splatforge_core.workflow import heal_published

#: Every other deliverable of a scene under results/ (suffixes of R()): publish waits for all.
DELIVERABLES = ["_mesh.glb", "_mesh.obj", "_mesh.mtl", "_mesh.png", "_mesh.fbx",
                ".compressed.ply", ".compressed.json", "_report", "_viewer"]

# A deliverable deleted after the scene was published is made again by the same command
# (Snakemake alone would say "Nothing to be done" while results/{scene}.ply exists).
for _scene in sorted(set(SCENES) | {config.get("default_scene", "scene")}):
    heal_published(R(".ply").format(scene=_scene), [R(s).format(scene=_scene) for s in DELIVERABLES])


rule publish:
    input:
        splat=W("splat/splat.ply"),
        deliverables=[R(s) for s in DELIVERABLES],
    output:
        splat=R(".ply"),
    benchmark:
        W("benchmarks/publish.tsv")
    log:
        W("logs/publish.log"),
    conda:
        "../envs/splatforge.yaml"
    script:
        "../scripts/publish.py"
