import os

from splatforge_core.workflow import run_stage


def _call(m):
    gt = snakemake.params.ground_truth
    truth = m.demo_ground_truth(gt, snakemake.input.manifest) if gt and os.path.exists(gt) else None
    return m.main(os.path.join(snakemake.input.sparse, "0"), snakemake.input.views, snakemake.output.aligned,
                  snakemake.output.report, snakemake.params.options, ground_truth=truth)


run_stage(snakemake, "splatforge_core.sfm.align", _call)
