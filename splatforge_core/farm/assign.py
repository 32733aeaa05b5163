"""Job -> worker assignment: a small pulp LP (binary assignment) minimising the makespan, the
largest over workers of (the worker's current remaining time + the cost of the jobs given to it /
its speed). One ready job or one free worker: the first free worker (fastest first), no LP.
"""

from __future__ import annotations

import warnings

import pulp


def assign(jobs: dict[str, float], workers: dict[str, float], busy_s: dict[str, float] | None = None,
           slots: dict[str, int] | None = None) -> dict[str, str]:
    """Map job ids to worker ids.

    Args:
        jobs: job id -> estimated cost (arbitrary work units, > 0).
        workers: free worker id -> measured speed (work units per second, > 0).
        busy_s: worker id -> seconds of work already queued on it (default 0).
        slots: worker id -> most jobs it may take now (default 1: one job at a time per GPU).
    Returns:
        job id -> worker id for the jobs started now (at most sum(slots) of them; the rest wait).
    """
    busy_s = busy_s or {}
    slots = slots or {w: 1 for w in workers}
    if not jobs or not workers:
        return {}
    order = sorted(workers, key=lambda w: -workers[w])
    if len(jobs) == 1 or len(workers) == 1:
        out, free = {}, [w for w in order for _ in range(slots.get(w, 1))]
        for j in sorted(jobs, key=lambda j: -jobs[j]):
            if not free:
                break
            out[j] = free.pop(0)
        return out
    prob = pulp.LpProblem("farm_makespan", pulp.LpMinimize)
    var = getattr(prob, "add_variable", None)  # PuLP >= 3.3; LpVariable() before (deprecated there)

    def new_var(name, **kw):
        return var(name, **kw) if var else pulp.LpVariable(name, **kw)

    x = {(j, w): new_var(f"x_{i}_{k}", cat="Binary") for i, j in enumerate(jobs) for k, w in enumerate(workers)}
    t = new_var("makespan", lowBound=0)
    prob += t
    n_start = min(len(jobs), sum(slots.get(w, 1) for w in workers))
    prob += pulp.lpSum(x.values()) == n_start
    for j in jobs:
        prob += pulp.lpSum(x[j, w] for w in workers) <= 1
    for w in workers:
        prob += pulp.lpSum(x[j, w] for j in jobs) <= slots.get(w, 1)
        prob += busy_s.get(w, 0.0) + pulp.lpSum(x[j, w] * jobs[j] / workers[w] for j in jobs) <= t
    # started jobs should be the big ones: a tiny tie-break reward on started cost
    prob.setObjective(t - 1e-6 * pulp.lpSum(x[j, w] * jobs[j] for j in jobs for w in workers))
    with warnings.catch_warnings():  # PuLP 3.3 deprecates its bundled CBC (still shipped, still what works offline)
        warnings.simplefilter("ignore", DeprecationWarning)
        prob.solve(pulp.PULP_CBC_CMD(msg=False, timeLimit=5))
    return {j: w for (j, w), v in x.items() if v.value() is not None and v.value() > 0.5}
