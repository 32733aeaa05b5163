"""LAN farm (issue #14): GPU rules of a Snakemake run executed by other Splat Forge installs.

The machine that runs Snakemake is the *coordinator* (a ZeroMQ ROUTER, CurveZMQ server, in the
executor plugin ``snakemake_executor_plugin_splatforge_farm``); every other machine runs
``splatforge worker`` (a DEALER, CurveZMQ client). No shared file system: the coordinator ships
each job's input files and the workflow sources as a tar archive in chunks, the worker runs
Snakemake for exactly that job's outputs in a private folder and ships outputs, log and benchmark
file back the same way.

Modules:

* :mod:`.protocol`: message schema (JSON header frame + optional payload frame), validation,
  size limits, version and source hashes.
* :mod:`.archive`: packing, chunking with sha256, reassembly and safe extraction.
* :mod:`.keys`: CurveZMQ certificates (``splatforge farm keys DIR``).
* :mod:`.beacon`: UDP discovery beacons (port 5557 by default).
* :mod:`.assign`: job -> worker assignment (pulp LP minimising the makespan).
* :mod:`.coordinator`: the coordinator thread (jobs, offers, results, checkpoints).
* :mod:`.worker`: ``splatforge worker`` (one job slot per GPU or ``--slots N``; a running job's
  checkpoints go back to the coordinator, so a restarted run resumes training).
* :mod:`.cli`: ``splatforge farm keys|status``.
"""
