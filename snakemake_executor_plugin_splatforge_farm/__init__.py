"""Snakemake executor plugin ``splatforge-farm`` (issue #14): rules named in ``farm_rules`` (the
GPU rules ``train`` and ``train_cluster`` by default) run on LAN farm workers (``splatforge
worker``), every other rule runs on this machine as a local Snakemake sub-process. The logic (the
CurveZMQ coordinator, transfers, assignment) lives in :mod:`splatforge_core.farm`.

Use it through ``profiles/lan`` (``snakemake --profile profiles/lan ...``), or
``--executor splatforge-farm --splatforge-farm-keys DIR``. Snakemake 9 has no command-line or
profile switch for ``localrules`` (only the Snakefile's ``localrules:`` directive), so keeping the
non-GPU rules local is done here: the executor runs them itself on the coordinator machine.

Resuming: a farm job's checkpoint folder is ``checkpoints/`` beside its first declared output
(``--splatforge-farm-checkpoints``, default ``{outdir}/checkpoints``: ``work/{scene}/splat/checkpoints``
for ``train``, the folder the trainer saves ``ckpt_*.pt`` in; empty: none). The worker sends it back
every ``--splatforge-farm-checkpoint-interval`` seconds when it changed and the coordinator keeps it
in this working directory; when Snakemake is restarted with the same command after the coordinator
died, it reruns the incomplete job (``rerun-incomplete`` in ``profiles/lan``) and the folder goes
to the worker with the job's inputs, so training resumes from the last checkpoint received.
"""

import logging
import os
import subprocess
from dataclasses import dataclass, field
from typing import AsyncGenerator, List, Optional

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.settings import CommonSettings, ExecutorSettingsBase

from splatforge_core.errors import SplatForgeError
from splatforge_core.farm.coordinator import Coordinator, JobSpec
from splatforge_core.farm.protocol import BEACON_PORT


@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    keys: Optional[str] = field(default=None, metadata={
        "help": "farm keys folder (made by `splatforge farm keys DIR`): coordinator.key_secret and workers/*.key",
        "env_var": False, "required": True})
    host: str = field(default="*", metadata={"help": "interface the coordinator binds (default: all)", "env_var": False})
    port: int = field(default=5555, metadata={"help": "coordinator TCP port (0: a free one, found by workers via beacon)",
                                              "env_var": False})
    beacon_port: int = field(default=BEACON_PORT, metadata={"help": "UDP beacon port (0: no beacons)", "env_var": False})
    beacon_address: str = field(default="255.255.255.255", metadata={"help": "beacon broadcast address", "env_var": False})
    farm_rules: str = field(default="train,train_coarse,train_cluster", metadata={
        "help": "comma-separated rules sent to workers; all others run locally", "env_var": False})
    heartbeat: float = field(default=1.0, metadata={"help": "seconds between heartbeats", "env_var": False})
    timeout: float = field(default=20.0, metadata={"help": "seconds of worker silence before its job is offered again",
                                                  "env_var": False})
    max_attempts: int = field(default=3, metadata={"help": "offers of one job before it fails", "env_var": False})
    checkpoints: str = field(default="{outdir}/checkpoints", metadata={
        "help": "checkpoint folder of a farm job, synced back while it runs and shipped when it is rerun "
                "({outdir}: folder of the job's first output; empty: none)", "env_var": False})
    checkpoint_interval: float = field(default=60.0, metadata={
        "help": "seconds between checks of a running job's checkpoint folder (sent back when it changed)", "env_var": False})


common_settings = CommonSettings(
    non_local_exec=True,
    implies_no_shared_fs=False,  # the coordinator's folder holds every file; the plugin moves them
    job_deploy_sources=False,
    pass_default_storage_provider_args=True,
    pass_default_resources_args=True,
    pass_envvar_declarations_to_cmd=True,
    auto_deploy_default_storage_provider=False,
    init_seconds_before_status_checks=0,
)

#: ints over this would break the farm protocol's JSON integer range; threads are capped by workers anyway
_MAX_CORES = 4096


class _ToSnakemakeLog(logging.Handler):
    """The coordinator's log records (``splatforge.farm``, INFO and up) into Snakemake's log, so a
    run shows which worker took which job, checkpoints received and workers lost or refused."""

    def __init__(self, logger):
        super().__init__(logging.INFO)
        self.target = logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if record.levelno >= logging.WARNING:  # the interface has info/error/debug only
                self.target.error(f"{record.levelname}: {msg}")
            else:
                self.target.info(msg)
        except Exception:
            self.handleError(record)


class Executor(RemoteExecutor):
    def __post_init__(self):
        s: ExecutorSettings = self.workflow.executor_settings
        if not s.keys:
            raise WorkflowError("splatforge-farm: --splatforge-farm-keys DIR is required (make it with `splatforge farm keys DIR`)")
        self.farm_rules = {r.strip() for r in s.farm_rules.split(",") if r.strip()}
        farm_log = logging.getLogger("splatforge.farm")
        if farm_log.getEffectiveLevel() > logging.INFO:
            farm_log.setLevel(logging.INFO)
        self._log_handler = _ToSnakemakeLog(self.logger)
        farm_log.addHandler(self._log_handler)
        self.coordinator = Coordinator(os.getcwd(), s.keys, host=s.host, port=s.port,
                                       workflow_root=os.path.dirname(os.path.abspath(self.workflow.main_snakefile)),
                                       heartbeat_s=s.heartbeat, timeout_s=s.timeout, max_attempts=s.max_attempts,
                                       beacon_port=s.beacon_port or None, beacon_addr=s.beacon_address,
                                       checkpoint_s=s.checkpoint_interval)
        self.checkpoints = s.checkpoints or ""
        try:
            port = self.coordinator.start()
        except SplatForgeError as e:
            raise WorkflowError(str(e))
        self.logger.info(f"splatforge-farm: coordinator on port {port}; rules {sorted(self.farm_rules)} go to workers")

    def _config(self) -> dict:
        import json

        cfg = getattr(self.workflow, "config", None) or {}
        return json.loads(json.dumps(dict(cfg), default=str))

    def run_job(self, job: JobExecutorInterface):
        if job.is_group():
            raise WorkflowError("splatforge-farm: group jobs are not supported")
        if job.rule.name not in self.farm_rules:
            cmd = self.format_job_exec(job)
            proc = subprocess.Popen(cmd, shell=True)
            self.report_job_submission(SubmittedJobInfo(job, external_jobid=f"local-{proc.pid}", aux={"proc": proc}))
            return
        extra = list(job.log) + ([str(job.benchmark)] if job.benchmark else [])
        spec = JobSpec(rule=job.rule.name, targets=[str(f) for f in job.output], inputs=[str(f) for f in job.input],
                       extra=[str(f) for f in extra], cores=max(1, min(int(job.threads), _MAX_CORES)),
                       cost=float(job.resources.get("farm_cost", 1) or 1), config=self._config(),
                       checkpoints=self._checkpoint_dir(job))
        try:
            jid = self.coordinator.submit(spec)
        except SplatForgeError as e:
            raise WorkflowError(str(e))
        self.report_job_submission(SubmittedJobInfo(job, external_jobid=f"farm-{jid}", aux={"farm": jid}))

    def _checkpoint_dir(self, job: JobExecutorInterface) -> str:
        """The job's checkpoint folder (relative POSIX path; "" when the setting is empty)."""
        if not self.checkpoints:
            return ""
        outdir = os.path.dirname(str(next(iter(job.output))))
        return os.path.normpath(self.checkpoints.replace("{outdir}", outdir or ".")).replace(os.sep, "/")

    async def check_active_jobs(self, active_jobs: List[SubmittedJobInfo]) -> AsyncGenerator[SubmittedJobInfo, None]:
        for info in active_jobs:
            aux = info.aux or {}
            if "proc" in aux:
                rc = aux["proc"].poll()
                if rc is None:
                    yield info
                elif rc == 0:
                    self.report_job_success(info)
                else:
                    self.report_job_error(info, msg=f"local job exited with code {rc}")
                continue
            async with self.status_rate_limiter:
                state, message = self.coordinator.state(aux["farm"])
            if state == "done":
                self.report_job_success(info)
            elif state == "failed":
                self.report_job_error(info, msg=f"farm job {aux['farm']}: {message}")
            else:
                yield info

    def cancel_jobs(self, active_jobs: List[SubmittedJobInfo]):
        for info in active_jobs:
            aux = info.aux or {}
            if "proc" in aux and aux["proc"].poll() is None:
                aux["proc"].terminate()
            elif "farm" in aux:
                self.coordinator.cancel(aux["farm"])

    def shutdown(self):
        super().shutdown()
        self.coordinator.stop()
        logging.getLogger("splatforge.farm").removeHandler(self._log_handler)
