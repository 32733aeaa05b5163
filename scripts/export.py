from splatforge_core.workflow import run_stage


def _call(m):
    options = dict(snakemake.params.options)
    if options.get("crop_box", "auto") == "auto":
        # Mesh only what SfM reconstructed: the padded robust extent of the aligned model.
        options["crop_box"] = m.crop_box_from_model(snakemake.input.aligned)
    return m.main(snakemake.input.splat, snakemake.params.prefix,
                  report_path=snakemake.output.report, options=options)


run_stage(snakemake, "splatforge_core.export", _call)
