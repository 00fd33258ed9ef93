"""How many images a Captioner reads, encodes and decodes at once.

Batching pays in the decoder: every `decoder_step` call reads the step's
weights once for all rows (live beams of every image in the batch), so more
images per call amortise the weights and the per-call overhead, and give each
core enough rows to split the matrix products. It costs memory that grows
linearly with the batch (preprocessed images, the encoder's activations,
feature grids copied per beam, attention maps per hypothesis), and delays the
first streamed result. `auto_batch_size()` takes enough rows to keep the cores
busy and no more images than a fraction of the available memory holds.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from mmedge.runtime.manifest import Manifest, TensorSpec
from mmedge.runtime.roles import DECODER_INIT, DECODER_STEP, ENCODER

ROWS_PER_CORE = 32  # decoder rows (images x beams) per core per decoder_step call
MIN_BATCH = 8  # images: below this the weights' reads per step dominate
MAX_BATCH = 256  # images: bounds the wait for the first streamed result
MEMORY_FRACTION = 0.25  # of the available memory one batch may take (the rest: model, arena, other processes)
ENCODER_WORK_FACTOR = 16  # encoder activations per image, in multiples of its input tensor (ResNet-101: ~10)
FALLBACK_MEMORY = 1 << 30  # bytes assumed when the OS tells nothing
F32 = 4
# the tutorial's full captioner: used for a dimension a manifest leaves dynamic (rounded up)
FALLBACK_DIMS = {"side": 256, "pixels": 196, "encoder_dim": 2048, "attention_dim": 512, "decoder_dim": 512,
                 "vocab": 10000}


@dataclass(frozen=True)
class Machine:
    """What a batch may use: available memory (bytes) and the CPUs this process may run on."""

    available_bytes: int
    cores: int


def _meminfo_available(path: Path) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom(root: Path) -> int | None:
    """A container's memory limit minus its use (cgroup v2): MemAvailable there shows the host's."""
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((root / "memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


def available_memory(meminfo: Path = Path("/proc/meminfo"), cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """Bytes this process can still allocate without swapping: /proc/meminfo's MemAvailable (else
    sysconf's available pages), bounded by a cgroup v2 limit; FALLBACK_MEMORY when nothing answers."""
    found = [m for m in (_meminfo_available(meminfo), _cgroup_headroom(cgroup)) if m is not None]
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            return FALLBACK_MEMORY
    return min(found)


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def this_machine() -> Machine:
    return Machine(available_memory(), usable_cores())


def _positive(x: object) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) and x > 0 else None


@dataclass(frozen=True)
class CaptionerSizes:
    """The dimensions of a captioner that set its memory per image, read from the manifest."""

    side: int  # encoder input: [B, 3, side, side]
    pixels: int  # P: feature grid cells
    encoder_dim: int  # C
    attention_dim: int  # A
    decoder_dim: int  # D
    vocab: int  # V

    @classmethod
    def from_manifest(cls, m: Manifest) -> "CaptionerSizes":
        def dim(graph: str, tensor: str, axis: int) -> int | None:
            spec: TensorSpec | None = next((t for t in [*m.graph(graph).inputs, *m.graph(graph).outputs]
                                            if t.name == tensor), None)
            if spec is None or axis >= len(spec.shape):
                return None
            return _positive(spec.shape[axis])

        side = dim(ENCODER, "image", 3) or _positive(m.preprocessing.get("image_size"))
        grid = [dim(ENCODER, "features", a) for a in (1, 2)]
        pixels = dim(DECODER_INIT, "att1", 1) or (grid[0] * grid[1] if all(grid) else None)
        vocab = dim(DECODER_STEP, "log_probs", 1) or (len(m.vocabulary) if m.vocabulary else None)
        found = {"side": side, "pixels": pixels, "encoder_dim": dim(DECODER_INIT, "features", 2),
                 "attention_dim": dim(DECODER_INIT, "att1", 2), "decoder_dim": dim(DECODER_INIT, "h", 1),
                 "vocab": vocab}
        return cls(**{k: v or FALLBACK_DIMS[k] for k, v in found.items()})

    def bytes_per_image(self, beam: int, max_len: int) -> int:
        """Peak bytes one image adds to a batch, all float32: its input tensor and the encoder's
        activations (an ONNX Runtime arena keeps them after encoding, so they add up with the
        rest), its feature grid + attention projection, a copy of both per live beam (twice while
        the rows are re-bound), the step's per-row work and the attention maps of every hypothesis."""
        image = 3 * self.side * self.side * F32
        grid = self.pixels * (self.encoder_dim + self.attention_dim) * F32
        step_row = (2 * self.pixels * self.attention_dim + self.encoder_dim + self.vocab
                    + 4 * self.decoder_dim + self.pixels) * F32
        maps = 2 * beam * max_len * self.pixels * F32  # live and complete hypotheses
        return image * (1 + ENCODER_WORK_FACTOR) + grid + beam * (2 * grid + step_row) + maps


def auto_batch_size(sizes: CaptionerSizes, beam: int, max_len: int, machine: Machine | None = None) -> int:
    """Images per batch: ROWS_PER_CORE decoder rows per core (within MIN_BATCH..MAX_BATCH images),
    lowered to what MEMORY_FRACTION of the available memory holds; at least 1."""
    machine = machine or this_machine()
    want = min(MAX_BATCH, max(MIN_BATCH, math.ceil(ROWS_PER_CORE * machine.cores / beam)))
    fits = int(MEMORY_FRACTION * machine.available_bytes) // sizes.bytes_per_image(beam, max_len)
    return max(1, min(want, fits))
