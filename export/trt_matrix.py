"""What each TensorRT release can build: the one table behind `plan_build` and build_engines.sh.

Data, not code: `plan_build` (the Python builder) reads `release()`, and the Jetson bundle's
`build_engines.sh` embeds `script_table()`, the same rows as a bash array, so the two cannot
disagree. Rows come from NVIDIA's documents, not from guesses:

- DLA: TensorRT 10.7 was the last 10.x release with DLA; 11.0-11.3 have none; 11.4.0 has DLA on
  Windows on ARM only; 11.4.1 brings it back on Jetson AGX Orin with JetPack 7.2.2 or later
  (strongly typed networks; not on Jetson Thor, which has no DLA). Sources: TensorRT 11.4.1
  release notes and "Working with DLA" (11.3.0, 11.4.0, 11.4.1), "Migrating TensorRT from 10.x
  to 11.x on Jetson/JetPack" (docs.nvidia.com/deeplearning/tensorrt).
- Boards: Jetson AGX Orin and Orin NX have 2 DLA cores, Orin Nano none (fused off); the script
  counts the board's cores itself (`DLA_COUNT` overrides).
- Precision: TensorRT 11 removed weak typing (`--fp16`, `--int8`, `--calib` are gone from
  trtexec 11.1's samples/common/sampleOptions.cpp; `--stronglyTyped` is a no-op there), so fp16
  comes from an fp16 graph and int8 from the Q/DQ graph.
- trtexec: `--versionCompatible` from 8.6 (needed both to build and to load such engines: it
  sets `setEngineHostCodeAllowed`), `--skipInference` from 8.6 (`--buildOnly` in 8.5),
  `--loadInputs=name:file,...` since 8.5 (files of exactly the binding's size).
- INT64 engine I/O from TensorRT 9 (`DataType::kINT64`); 8.x parsers cast INT64 inputs to INT32.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmedge.errors import ExportError

AGX_ORIN = "AGX Orin"  # the `dla` value of releases that have DLA on Jetson AGX Orin only
DLA_JETPACK = "JetPack 7.2.2"  # ... with this JetPack or later
MIN_VERSION = (8, 5, 0)


@dataclass(frozen=True)
class Release:
    """TensorRT releases [first, until) and what the bundle builds with them."""

    first: tuple[int, int, int]
    until: tuple[int, int, int] | None  # exclusive; None: every later release
    dla: str  # "yes" | "no" | AGX_ORIN
    fp16: str  # "flag" (--fp16 / BuilderFlag.FP16 on the fp32 graph) | "typed" (strongly typed fp16 graph)
    int8: str  # "flags" (--int8 --fp16: Q/DQ graph, or fp32 graph + calibration cache) | "typed" (Q/DQ only)
    int64_io: bool  # engines keep INT64 inputs (else the parser casts them to INT32)
    version_compatible: bool  # --versionCompatible / BuilderFlag.VERSION_COMPATIBLE
    build_only: str  # trtexec's flag to build without running: --buildOnly | --skipInference

    def label(self) -> str:
        lo = ".".join(map(str, self.first))
        if self.until is None:
            return f">= {lo}"
        return f"{lo} - <{'.'.join(map(str, self.until))}"


MATRIX: tuple[Release, ...] = (
    Release((8, 5, 0), (8, 6, 0), "yes", "flag", "flags", False, False, "--buildOnly"),  # JetPack 5.1
    Release((8, 6, 0), (9, 0, 0), "yes", "flag", "flags", False, True, "--skipInference"),  # JetPack 6.0 DP
    Release((9, 0, 0), (10, 8, 0), "yes", "flag", "flags", True, True, "--skipInference"),  # 10.3: JetPack 6.1/6.2
    Release((10, 8, 0), (11, 0, 0), "no", "flag", "flags", True, True, "--skipInference"),  # 10.7: last DLA 10.x
    Release((11, 0, 0), (11, 4, 1), "no", "typed", "typed", True, True, "--skipInference"),
    Release((11, 4, 1), None, AGX_ORIN, "typed", "typed", True, True, "--skipInference"),
)


def _triple(version: str | tuple[int, ...]) -> tuple[int, int, int]:
    if isinstance(version, str):
        from mmedge.runtime.backends.tensorrt import version_tuple

        parts = version_tuple(version)
    else:
        parts = tuple(version)
    parts = (tuple(parts) + (0, 0, 0))[:3]
    return parts[0], parts[1], parts[2]


def release(version: str | tuple[int, ...]) -> Release:
    """The matrix row of a TensorRT version ("10.3", "8.5.2.2", (11, 4, 1))."""
    v = _triple(version)
    for r in MATRIX:
        if r.first <= v and (r.until is None or v < r.until):
            return r
    raise ExportError(f"TensorRT {version} is too old (mmedge needs >= 8.5: JetPack 5.1 or later)")


def dla_problem(version: str, board: str | None = None) -> str | None:
    """Why this TensorRT (on this board model, when known) cannot build for DLA; None if it can."""
    r = release(version)
    if r.dla == "no":
        return (f"TensorRT {version} does not support DLA (NVIDIA's support matrix: DLA up to 10.7, then from "
                f"11.4.1 on Jetson {AGX_ORIN} with {DLA_JETPACK}+)")
    if r.dla == AGX_ORIN and board is not None and AGX_ORIN not in board:
        return f"TensorRT {version} supports DLA on Jetson {AGX_ORIN} only ({DLA_JETPACK}+), not on {board!r}"
    return None


def _key(v: tuple[int, int, int] | None) -> int:
    return 999_999_999 if v is None else v[0] * 1_000_000 + v[1] * 1_000 + v[2]


def script_table() -> str:
    """MATRIX as bash array entries for build_engines.sh: first|until|dla|fp16|int8|int64|vc|build-only,
    versions as MAJOR*1000000 + MINOR*1000 + PATCH."""
    return "\n".join(
        f'  "{_key(r.first)}|{_key(r.until)}|{r.dla}|{r.fp16}|{r.int8}|{int(r.int64_io)}|'
        f'{int(r.version_compatible)}|{r.build_only}"  # {r.label()}' for r in MATRIX)


def markdown_table() -> str:
    """The matrix as a Markdown table (bundle README)."""
    rows = ["| TensorRT | DLA | fp16 | int8 | INT64 inputs | version-compatible |",
            "| --- | --- | --- | --- | --- | --- |"]
    what = {"flag": "`--fp16` on the fp32 graph", "typed": "fp16 graph, strongly typed",
            "flags": "`--int8 --fp16`: Q/DQ graph, or fp32 graph + `--calib` cache",
            "typed8": "Q/DQ graph, strongly typed"}
    for r in MATRIX:
        dla = {"yes": "yes", "no": "no"}.get(r.dla, f"Jetson {r.dla}, {DLA_JETPACK}+")
        rows.append(f"| {r.label()} | {dla} | {what[r.fp16]} | {what['typed8' if r.int8 == 'typed' else 'flags']} | "
                    f"{'yes' if r.int64_io else 'cast to INT32'} | {'yes' if r.version_compatible else 'no'} |")
    return "\n".join(rows)
