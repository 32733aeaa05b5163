from splatforge_core.workflow import run_stage


def _call(m):
    options = dict(snakemake.params.options)
    options.setdefault("workers", snakemake.threads)
    return m.main(snakemake.input.manifest, snakemake.output.images, snakemake.output.views, options,
                  masks_dir=snakemake.output.masks)


run_stage(snakemake, "splatforge_core.project", _call)
