"""Scale-out (`mmedge.scale`): ordered resumable JSON Lines, the local executor, and Ray.

The Ray tests start a real two-node cluster on this machine (`ray start --head`
plus a second `ray start --address`), run the CLI against it as a user would,
kill a worker process by PID mid-run and kill the driver mid-run, and compare
every output with the single-process run byte for byte.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmedge.cli import ray_argv, run
from mmedge.data import shapes
from mmedge.errors import InputError, MissingDependencyError
from mmedge.scale import Job, run_job
from mmedge.scale.inputs import expand_images
from mmedge.scale.results import InOrder, JobHeader, ResultFile, sidecar

N_IMAGES = 200


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxruntime")
    from mmedge.export.registry import ExportRequest, export

    out = tmp_path_factory.mktemp("scale-art")
    (path,) = export(ExportRequest("captioner", ["onnx"], config="demo", out=out)).artifacts
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("scale-images")
    for seed in shapes.split("test")[:N_IMAGES]:
        Image.fromarray(shapes.make_scene(seed).image).save(d / f"{seed}.png")
    return d


@pytest.fixture(scope="module")
def reference(artifact: Path, images: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Single-process captions of every image, by path (what the Ray runs must reproduce)."""
    out = tmp_path_factory.mktemp("scale-ref") / "ref.jsonl"
    assert run(["caption", str(images), "-a", str(artifact), "--out", str(out)]) == 0
    recs = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [r["index"] for r in recs] == list(range(N_IMAGES))
    return {r["image"]: {k: v for k, v in r.items() if k != "index"} for r in recs}


def _records(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def _check_exactly_once(path: Path, inputs: list[str], reference: dict[str, dict]) -> None:
    recs = _records(path)
    assert [r["index"] for r in recs] == list(range(len(inputs)))  # each input once, in input order
    for r in recs:
        assert r["image"] == inputs[r["index"]]
        assert {k: v for k, v in r.items() if k != "index"} == reference[r["image"]]


# ------------------------------------------------------------------ inputs and the results file

def test_expand_images_dirs_lists_and_errors(tmp_path: Path) -> None:
    (tmp_path / "b" / "c").mkdir(parents=True)
    for name in ("b/2.png", "b/c/1.JPG", "a.png", "b/notes.md"):
        (tmp_path / name).write_bytes(b"x")
    assert expand_images([tmp_path / "b"]) == [str(tmp_path / "b/2.png"), str(tmp_path / "b/c/1.JPG")]
    lst = tmp_path / "b" / "list.txt"
    lst.write_text("# photos\n2.png\n\n/abs/x.png\n")
    assert expand_images([lst, tmp_path / "a.png"]) == [str(tmp_path / "b/2.png"), "/abs/x.png",
                                                        str(tmp_path / "a.png")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        expand_images([tmp_path / "empty"])
    (tmp_path / "e.txt").write_text("# nothing\n\n")
    with pytest.raises(InputError, match="image list is empty"):
        expand_images([tmp_path / "e.txt"])
    # a missing top-level input is a usage error; a missing file named by a list is the reader's
    with pytest.raises(InputError, match=r"photos: image not found \(no such file or folder"):
        expand_images([tmp_path / "photos"])
    lst.write_text("gone.png\n")
    assert expand_images([lst]) == [str(tmp_path / "b" / "gone.png")]


def test_in_order_releases_contiguous_records_once() -> None:
    order = InOrder(6, done={0, 3})
    assert order.add([{"index": 4}, {"index": 5}]) == []  # 1 and 2 still missing
    assert [r["index"] for r in order.add([{"index": 2}, {"index": 3}, {"index": 1}])] == [1, 2, 4, 5]
    assert order.complete
    assert order.add([{"index": 1}]) == []  # a retried shard's duplicate is not released again


def _header(**kw) -> JobHeader:
    return JobHeader(**{"kind": "caption", "artifact_digest": "a", "backend": "", "options": {"beam": 3},
                        "inputs": 4, "inputs_digest": "d", **kw})


def test_result_file_resume_cuts_a_partial_line(tmp_path: Path) -> None:
    out, inputs = tmp_path / "r.jsonl", ["a", "b", "c", "d"]
    f = ResultFile(out, _header(), inputs, "image")
    assert f.open() == {}
    f.append([{"index": 0, "image": "a"}, {"index": 1, "image": "b"}])
    f.close()
    with open(out, "a") as fh:
        fh.write('{"index": 2, "ima')  # a driver killed mid-write
    f = ResultFile(out, _header(), inputs, "image")
    assert sorted(f.open()) == [0, 1]
    assert out.read_text().endswith('"ima')  # nothing changes before the first new result
    f.append([{"index": 2, "image": "c"}])
    f.close()
    assert [r["index"] for r in _records(out)] == [0, 1, 2]


@pytest.mark.parametrize("change, match", [
    ({"options": {"beam": 5}}, "different job.*options"),
    ({"artifact_digest": "other"}, "different job.*artifact changed"),
])
def test_result_file_refuses_another_jobs_file(tmp_path: Path, change: dict, match: str) -> None:
    out = tmp_path / "r.jsonl"
    f = ResultFile(out, _header(), ["a"] * 4, "image")
    f.open()
    f.append([{"index": 0, "image": "a"}])
    f.close()
    with pytest.raises(InputError, match=match):
        ResultFile(out, _header(**change), ["a"] * 4, "image").open()
    f = ResultFile(out, _header(**change), ["a"] * 4, "image")
    assert f.open(overwrite=True) == {}  # --overwrite starts over, at the first new result
    assert out.read_text() != ""
    f.append([{"index": 3, "image": "a"}])
    f.close()
    assert _records(out) == [{"index": 3, "image": "a"}]
    assert json.loads(sidecar(out).read_text())["artifact_digest"] == _header(**change).artifact_digest


@pytest.mark.parametrize("content, match", [
    ('{"index": 0, "image": "a"}\nnot json\n{"index": 2, "image": "c"}\n', "line 2 is not a result"),
    ('{"index": 0, "image": "zzz"}\n', "not this job's input"),
    ('{"index": 0, "image": "a"}\n{"index": 0, "image": "a"}\n', "appears twice"),
])
def test_result_file_refuses_damaged_files(tmp_path: Path, content: str, match: str) -> None:
    out = tmp_path / "r.jsonl"
    f = ResultFile(out, _header(), ["a", "b", "c", "d"], "image")
    f.open()
    f.append([{"index": 0, "image": "a"}])
    f.close()
    out.write_text(content)
    with pytest.raises(InputError, match=match):
        ResultFile(out, _header(), ["a", "b", "c", "d"], "image").open()


def test_result_file_without_sidecar_is_not_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "mine.jsonl"
    out.write_text('{"index": 0, "image": "a"}\n')
    with pytest.raises(InputError, match="not written by this command"):
        ResultFile(out, _header(), ["a"], "image").open()
    assert out.read_text() == '{"index": 0, "image": "a"}\n'


def test_shipped_artifact_unpacks_once_per_node_and_refuses_traversal(artifact: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import tarfile
    import tempfile

    from mmedge.runtime import load
    from mmedge.scale.driver import manifest_digest
    from mmedge.scale.ray_executor import pack_artifact, unpack_artifact

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    blob, digest = pack_artifact(artifact), manifest_digest(artifact)
    first = unpack_artifact(blob, digest)
    cache = tmp_path / f"mmedge-ray-artifacts-{os.getuid()}"  # private to this user (0700)
    assert first == cache / digest
    assert unpack_artifact(b"not even a tar", digest) == first  # the node's copy is reused, blob unread
    assert load(first).manifest.model == "captioner"  # every file's sha256 checked
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tar:
        info = tarfile.TarInfo("../pwned")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(InputError, match="refusing member '../pwned'"):
        unpack_artifact(evil.getvalue(), "other")
    assert not (tmp_path / "pwned").exists()
    assert [p.name for p in cache.iterdir()] == [digest]  # no leftovers


def test_ray_argv_optional_address() -> None:
    assert ray_argv(["caption", "--ray", "photos/", "-a", "x"]) == ["caption", "--ray=local", "photos/", "-a", "x"]
    assert ray_argv(["eval", "--ray", "10.0.0.1:6379"]) == ["eval", "--ray=10.0.0.1:6379"]
    assert ray_argv(["eval", "--ray", "auto", "--ray"]) == ["eval", "--ray=auto", "--ray=local"]
    assert ray_argv(["eval", "--ray", "ray://head:10001"]) == ["eval", "--ray=ray://head:10001"]
    assert ray_argv(["caption", "--", "--ray"]) == ["caption", "--", "--ray"]


# ------------------------------------------------------------------ the local executor

def test_local_run_equals_pipeline_and_isolates_bad_images(artifact: Path, images: Path, tmp_path: Path) -> None:
    from mmedge.runtime import load

    paths = sorted(str(p) for p in images.glob("*.png"))[:20]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    inputs = paths[:7] + [str(bad)] + paths[7:]
    records, stats = run_job(Job("caption", str(artifact), options={"beam": 3}), inputs, shard_size=6)
    expected = load(artifact).caption(paths, beam=3)
    good = [r for r in records if "error" not in r]
    assert [r["caption"] for r in good] == [e.caption for e in expected]
    assert [r["tokens"] for r in good] == [e.tokens for e in expected]
    np.testing.assert_allclose([r["score"] for r in good], [e.score for e in expected], rtol=1e-5)
    assert records[7]["image"] == str(bad) and "broken.png" in records[7]["error"]
    assert (stats.total, stats.computed, stats.errors) == (21, 21, 1)


def test_cli_caption_out_resumes_to_the_same_file(artifact: Path, images: Path, reference: dict,
                                                  tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "c.jsonl"
    args = ["caption", str(images), "-a", str(artifact), "--out", str(out), "--shard-size", "8"]
    assert run(args) == 0
    full = out.read_text()
    lines = full.splitlines(keepends=True)
    out.write_text("".join(lines[:37]) + lines[37][:25])  # an interrupted run: 37 lines and a fragment
    capsys.readouterr()
    assert run(args) == 0
    assert "resuming" in (err := capsys.readouterr().err) and "37 of 200 inputs already done" in err
    assert out.read_text() == full
    _check_exactly_once(out, expand_images([images]), reference)
    assert run(args[:-2] + ["--beam", "1"]) == 2  # another job's options: refused, file kept
    assert "different job" in capsys.readouterr().err and out.read_text() == full


def test_sharded_eval_equals_single_process(artifact: Path) -> None:
    from mmedge.calibration.eval_caption import evaluate_captioner
    from mmedge.runtime import load
    from mmedge.scale.evaluate import evaluate_sharded

    single = evaluate_captioner(load(artifact), limit=70, beam=3, progress=False)
    sharded, stats = evaluate_sharded("captioner", artifact, limit=70, beam=3)
    assert sharded.metrics == single.metrics and single.metrics["bleu4"] > 0.5
    assert sharded.details["examples"] == single.details["examples"] and stats.computed == 70


def test_ray_missing_says_what_to_install(artifact: Path, images: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    from mmedge.scale.ray_executor import require_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError, match=r"mmedge\[ray\]"):
        require_ray()
    out = tmp_path / "x.jsonl"
    assert run(["caption", str(images), "-a", str(artifact), "--ray", "--out", str(out)]) == 2
    assert "pip install 'mmedge[ray]'" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------ a real two-node Ray cluster

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    """`ray start --head` + a second `ray start --address`: two nodes of one CPU each, on loopback.

    Returns (address, environment for drivers). Recent Ray enables token authentication for
    `ray start --head`; every process gets the same throwaway token.
    """
    import secrets

    pytest.importorskip("ray")
    ray_cli = [sys.executable, "-m", "ray.scripts.scripts"]  # `ray`, run by this interpreter: so are the workers
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--object-store-memory=150000000",
              "--disable-usage-stats"]
    temp = Path(f"/tmp/mmrt{port}")  # short: Ray's socket paths must fit 107 characters
    try:
        subprocess.run([*ray_cli, "start", "--head", f"--port={port}", "--include-dashboard=false",
                        f"--temp-dir={temp}", *common], check=True, env=env, capture_output=True, timeout=120)
        subprocess.run([*ray_cli, "start", f"--address={address}", *common], check=True, env=env,
                       capture_output=True, timeout=120)
        probe = subprocess.run([sys.executable, "-c", "import ray; ray.init(address='%s', logging_level='ERROR');"
                                "print(sum(n['Alive'] for n in ray.nodes()), ray.cluster_resources()['CPU'])"
                                % address], env=env, capture_output=True, text=True, timeout=120)
        assert probe.stdout.split() == ["2", "2.0"], probe.stdout + probe.stderr
        yield address, env
    finally:
        subprocess.run([*ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mmedge", *args]



def _ready_pids(proc: subprocess.Popen) -> tuple[list[int], str]:
    """The worker PIDs the driver reports ("ray: 2 workers ready (pid 1 on host, pid 2 on host)")."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "workers ready" in line:
            return [int(x) for x in re.findall(r"pid (\d+)", line)], "".join(seen)
    raise AssertionError("the driver never reported its workers:\n" + "".join(seen))


def _wait_for_lines(out: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if out.exists() and out.read_text().count("\n") >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {n} lines: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.02)
    raise AssertionError(f"no {n} lines in {out} after {timeout} s")


@pytest.fixture
def long_list(images: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """1,600 inputs (the 200 images, 8 times): long enough to interrupt mid-run."""
    lst = tmp_path / "library.txt"
    lst.write_text("".join(f"{p}\n" for p in sorted(images.glob("*.png"))) * 8)
    return lst, expand_images([lst])


@pytest.mark.slow
def test_ray_caption_matches_single_process(cluster: tuple, artifact: Path, images: Path, reference: dict,
                                            tmp_path: Path) -> None:
    address, env = cluster
    out = tmp_path / "ray.jsonl"
    p = subprocess.run(_cli("caption", str(images), "-a", str(artifact), "--ray", address, "--out", str(out),
                            "--ship-artifact"), capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    assert "2 workers ready" in p.stderr and "200 images" in p.stdout
    _check_exactly_once(out, expand_images([images]), reference)


@pytest.mark.slow
def test_ray_eval_matches_single_process(cluster: tuple, artifact: Path) -> None:
    from mmedge.calibration.eval_caption import evaluate_captioner
    from mmedge.runtime import load

    address, env = cluster
    p = subprocess.run(_cli("eval", "captioner", "-a", str(artifact), "--beam", "3", "--limit", "160", "--split", "test",
                            "--ray", address, "--json"), capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    (doc,) = json.loads(p.stdout)["results"]
    single = evaluate_captioner(load(artifact), limit=160, beam=3, progress=False)
    assert doc["metrics"] == pytest.approx(single.metrics, abs=0) and doc["samples"] == 160
    assert doc["details"]["run"]["workers"] == 2


@pytest.mark.slow
def test_ray_killed_worker_is_retried_exactly_once(cluster: tuple, artifact: Path, long_list: tuple,
                                                   reference: dict, tmp_path: Path) -> None:
    lst, inputs = long_list
    out = tmp_path / "killed.jsonl"
    address, env = cluster
    proc = subprocess.Popen(_cli("caption", str(lst), "-a", str(artifact), "--ray", address, "--out", str(out),
                                 "--shard-size", "8"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        victims, head = _ready_pids(proc)
        assert len(victims) == 2, head
        _wait_for_lines(out, 40, proc)
        os.kill(victims[0], signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=300)
        stderr = head + stderr
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "died" in stderr and "retrying" in stderr, stderr
    assert out.read_text().count("\n") < 2 * len(inputs)
    _check_exactly_once(out, inputs, reference)
    assert re.search(r"\d+ shards? retried", stdout), stdout


@pytest.mark.slow
def test_ray_resume_after_ctrl_c_and_a_killed_driver(cluster: tuple, artifact: Path, long_list: tuple,
                                               reference: dict, tmp_path: Path) -> None:
    lst, inputs = long_list
    out = tmp_path / "resume.jsonl"
    address, env = cluster
    args = _cli("caption", str(lst), "-a", str(artifact), "--ray", address, "--out", str(out), "--shard-size", "8")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:  # Ctrl-C: a clean stop within seconds, every line whole
        _wait_for_lines(out, 100, proc)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "rerun the same command to resume" in stderr, stderr
    assert out.read_text().endswith("\n")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:  # then the driver killed outright
        _wait_for_lines(out, 300, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    done = out.read_text().count("\n")
    assert 300 <= done < len(inputs)
    p = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    assert f"{done} of {len(inputs)} inputs already done" in p.stderr
    _check_exactly_once(out, inputs, reference)
