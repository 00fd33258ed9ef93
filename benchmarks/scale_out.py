#!/usr/bin/env python
"""Scale-out throughput: captioning a folder of images with 1 vs N Ray workers, side by side.

Every run captions the same generated images (the demo shapes scenes) with
the same artifact through `mmedge.scale.run_job`: in this process first (the
single-process reference, 1 thread), then on Ray with each worker count in
`--workers` (one pipeline and one intra-op thread per worker). All runs must
produce identical records or the script fails. Throughput counts the shards
only; starting the workers and loading the artifact is reported separately.

On this project's 2-core machine the ceiling for 2 workers is 2x one worker,
minus what the driver, Ray's raylet and the OS take from the same two cores.
On a real cluster, start Ray on the nodes (`ray start --head` on one,
`ray start --address HEAD:6379` on the others), put the artifact and images on
shared storage (or pass `--ship-artifact`), and run

    python benchmarks/scale_out.py --address HEAD:6379 --workers 1,8,32 --images 5000 \
        --artifact /shared/captioner-demo-onnx-fp32 --images-dir /shared/photos

    python benchmarks/scale_out.py                      # local Ray, demo captioner, 1 vs 2 workers
    python benchmarks/scale_out.py --json scale.json    # also write the figures
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_images(dest: Path, n: int) -> list[str]:
    from PIL import Image

    from mmedge.data import shapes

    seeds = (shapes.split("test") + shapes.split("val"))[:n]
    paths = []
    for seed in seeds:
        p = dest / f"{seed}.png"
        Image.fromarray(shapes.make_scene(seed).image).save(p)
        paths.append(str(p))
    return paths


def export_demo(dest: Path, config: str) -> Path:
    from mmedge.export.registry import ExportRequest, export

    (path,) = export(ExportRequest("captioner", ["onnx"], config=config, out=dest)).artifacts
    return path


def machine_load(seconds: float = 1.0) -> float | None:
    """CPUs kept busy by other processes while this one sleeps (before any run)."""
    from mmedge.runtime.profiler import cpu_snapshot, other_cpu_load

    a = cpu_snapshot()
    time.sleep(seconds)
    return other_cpu_load(a, cpu_snapshot())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--address", default=None, help="Ray cluster to join (default: start a local Ray instance)")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts to compare (default 1,2)")
    p.add_argument("--images", type=int, default=400, help="number of images to caption (default 400)")
    p.add_argument("--images-dir", type=Path, default=None, help="caption these images instead of generated ones")
    p.add_argument("--artifact", type=Path, default=None, help="captioner artifact (default: export the demo "
                   "captioner to ONNX in a temporary folder)")
    p.add_argument("--config", default="demo", help="captioner config to export without --artifact")
    p.add_argument("--beam", type=int, default=3)
    p.add_argument("--shard-size", type=int, default=16)
    p.add_argument("--ship-artifact", action="store_true", help="send the artifact through Ray's object store")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",") if w.strip()]

    import ray

    from mmedge.scale import Job, run_job
    from mmedge.scale.inputs import expand_images

    with tempfile.TemporaryDirectory(prefix="mmedge-scale-") as tmp:
        tmpd = Path(tmp)
        artifact = args.artifact or export_demo(tmpd, args.config)
        if args.images_dir is not None:
            paths = expand_images([args.images_dir])[: args.images]
        else:
            (tmpd / "images").mkdir()
            log(f"generating {args.images} images")
            paths = make_images(tmpd / "images", args.images)
        load = machine_load()
        job = Job("caption", str(artifact), threads=1, options={"beam": args.beam, "max_len": 50})
        rows: list[dict[str, Any]] = []

        log("in-process reference (1 thread)")
        ref, stats = run_job(job, paths, shard_size=args.shard_size, log=log)
        rows.append({"run": "in-process, 1 thread", "workers": 1, **stats.to_json()})

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(address=args.address, logging_level=logging.WARNING, log_to_driver=False,
                 include_dashboard=False)
        cpus = ray.cluster_resources().get("CPU", 0)
        try:
            for n in counts:
                log(f"ray, {n} worker(s)")
                got, stats = run_job(job, paths, executor="ray", shard_size=args.shard_size, log=log, workers=n,
                                     ship_artifact=args.ship_artifact)
                if got != ref:
                    raise SystemExit(f"ray with {n} workers gave different captions than the in-process run")
                rows.append({"run": f"ray, {n} worker(s)", "workers": n, **stats.to_json()})
        finally:
            ray.shutdown()

    base = next((r for r in rows if r["run"].startswith("ray") and r["workers"] == 1), rows[0])
    for r in rows:
        r["speedup_vs_1_ray_worker"] = round(r["per_second"] / base["per_second"], 2) if base["per_second"] else None
    print(f"captioner {args.config if args.artifact is None else artifact}, {len(paths)} images, beam {args.beam}, "
          f"shards of {args.shard_size}; cluster CPUs {cpus:g}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs on this machine")
    if load is not None and load > 0.3:
        print(f"warning: other processes kept {load:.1f} CPUs busy before the runs; the figures are noisy")
    print(f"{'run':<24} {'images/s':>9} {'vs 1 worker':>12} {'startup s':>10} {'retries':>8}")
    for r in rows:
        print(f"{r['run']:<24} {r['per_second']:>9.1f} {r['speedup_vs_1_ray_worker']:>11.2f}x "
              f"{r['startup_seconds']:>10.1f} {r['retries']:>8}")
    if args.json is not None:
        args.json.write_text(json.dumps({"images": len(paths), "beam": args.beam, "shard_size": args.shard_size,
                                         "cluster_cpus": cpus, "other_load_before": load, "rows": rows},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
