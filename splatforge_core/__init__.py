"""Splat Forge core: every stage's logic lives here; Snakemake rules and scripts stay thin.

One module per pipeline stage (in the style of hloc), each with a plain
``main(...)`` function that a rule script, the CLI or a test can call.
"""

__version__ = "0.1.0"
