"""Which executor runs a sharded job, from the command's --ray, --workers and --ship-artifact.

`run_job` takes `executor="local"` or `executor="ray"` with an address, a worker count and
whether the artifact travels through Ray's object store; this turns the options as given into
those arguments, and refuses the Ray-only ones without Ray. Ray itself is looked for here,
before any work, so a missing package is one line naming the extra.
"""

from __future__ import annotations

from typing import Any

from mmedge.errors import MmedgeError

LOCAL_RAY = "local"  # `--ray` with no address (or `--ray local`): start a local Ray instance / join RAY_ADDRESS


def executor_options(ray: str | None, workers: int | None, ship_artifact: bool) -> dict[str, Any]:
    """run_job's executor arguments: `ray` is None (this process), LOCAL_RAY or a cluster address."""
    if ray is None:
        if workers is not None or ship_artifact:
            raise MmedgeError("--workers and --ship-artifact need --ray")
        return {"executor": "local"}
    from mmedge.scale.ray_executor import require_ray

    require_ray()  # says what to install before any work
    return {"executor": "ray", "address": None if ray == LOCAL_RAY else ray, "workers": workers,
            "ship_artifact": ship_artifact}
