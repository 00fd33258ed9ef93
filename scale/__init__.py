"""Scale-out: shard a captioning or evaluation job over workers, write ordered, resumable JSON Lines.

mmedge does not schedule work itself. `driver.run_job` cuts the inputs into
fixed shards, hands them to an executor (`local`: this process; `ray`: one
actor per worker on a Ray cluster, see `ray_executor`), and writes the results
in input order to a JSON Lines file that a rerun resumes. The per-shard work
(`work.py`) is the same function in every executor, so a sharded run gives the
results of the single-process one.
"""

from mmedge.scale.driver import Job, RunStats, run_job

__all__ = ["Job", "RunStats", "run_job"]
