"""Hostile tutorial checkpoints and word maps (issue 16): refused with one line, nothing written, memory bounded.

The hostile files are assembled by hand from pickle opcodes (protocol 2, as torch.save
writes them) in both torch.save layouts: the zip archive (`archive/data.pkl` +
`archive/data/<key>`) and the legacy stream (header pickles, the object pickle, the
storage key list, then each storage's element count and bytes). Every case goes through
the CLI (`mmedge export captioner --checkpoint X --word-map Y --out DIR`) and asserts
exit code 2, exactly one stderr line `mmedge: error: ...` naming the file, and no --out.
Bombs run in a child process under RLIMIT_AS (its own import footprint + 1 GiB) and
report their peak RSS growth.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import types
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from torch import nn

from mmedge.cli import run
from mmedge.models import checkpoint as ck
from mmedge.models.captioner import CONFIGS, CaptionModel
from mmedge.models.checkpoint import load_tutorial_checkpoint

EXIT_USAGE = 2


# ------------------------------------------------------------------ a pickle assembler (protocol 2)
def G(module: str, name: str) -> bytes:  # GLOBAL
    return b"c" + f"{module}\n{name}\n".encode()


def S(text: str) -> bytes:  # BINUNICODE
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def I(n: int) -> bytes:  # BININT, or LONG1 beyond 32 bits
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def T(*items: bytes) -> bytes:  # MARK ... TUPLE
    return b"(" + b"".join(items) + b"t"


def D(pairs: dict[str, bytes]) -> bytes:  # EMPTY_DICT MARK k v ... SETITEMS
    return b"}(" + b"".join(S(k) + v for k, v in pairs.items()) + b"u"


PROTO, STOP, NONE, FALSE, EMPTY_TUPLE = b"\x80\x02", b".", b"N", b"\x89", b")"
REDUCE, BUILD, BINPERSID, POP = b"R", b"b", b"Q", b"0"


def storage_ref(key: str, numel: int, dtype: str = "FloatStorage", *, legacy: bool = False) -> bytes:
    fields = [S("storage"), G("torch", dtype), S(key), S("cpu"), I(numel)] + ([NONE] if legacy else [])
    return T(*fields) + BINPERSID


def tensor(key: str, numel: int, shape: tuple, stride: tuple, offset: int = 0, *, legacy: bool = False) -> bytes:
    """_rebuild_tensor_v2(storage, offset, shape, stride, False, OrderedDict())."""
    return (G("torch._utils", "_rebuild_tensor_v2")
            + T(storage_ref(key, numel, legacy=legacy), I(offset), T(*map(I, shape)), T(*map(I, stride)), FALSE,
                G("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE)
            + REDUCE)


def write_zip(path: Path, pickled: bytes, storages: dict[str, bytes], *, compress: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compress) as z:
        z.writestr("archive/data.pkl", pickled)
        z.writestr("archive/byteorder", b"little")
        for key, data in storages.items():
            z.writestr(f"archive/data/{key}", data)
        z.writestr("archive/version", b"3\n")
    return path


def legacy_bytes(pickled: bytes, keys: list[str], storages: list[tuple[int, bytes]], tail: bytes = b"") -> bytes:
    """Magic number, protocol 1001, sys_info, the object pickle, the key list, then (numel, bytes) records."""
    import pickle

    head = b"".join(pickle.dumps(x, protocol=2) for x in (
        0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                        "type_sizes": {"short": 2, "int": 4, "long": 4}}))
    body = pickle.dumps(keys, protocol=2) + b"".join(struct.pack("<q", n) + data for n, data in storages)
    return head + pickled + body + tail


def floats(values) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


# ------------------------------------------------------------------ a good checkpoint to compare against
@pytest.fixture(scope="module")
def good(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    torch.manual_seed(0)
    model = CaptionModel(CONFIGS["tiny"]).eval()
    enc, dec = model.encoder.state_dict(), model.decoder.state_dict()
    ckpt = root / "BEST_checkpoint_tiny.pth.tar"
    torch.save({"epoch": 3, "encoder": enc, "decoder": dec}, ckpt)
    legacy = root / "legacy.pth.tar"
    torch.save({"epoch": 3, "encoder": enc, "decoder": dec}, legacy, _use_new_zipfile_serialization=False)
    word_map = root / "WORDMAP_tiny.json"
    word_map.write_text(json.dumps(dict(model.vocab.word_map)), encoding="utf-8")
    return types.SimpleNamespace(root=root, ckpt=ckpt, legacy=legacy, word_map=word_map, enc=enc, dec=dec)


def assert_refused(capsys, tmp_path: Path, ckpt: Path, word_map: Path, *, named: Path, says: str = "") -> str:
    out = tmp_path / "out"
    rc = run(["export", "captioner", "--checkpoint", str(ckpt), "--word-map", str(word_map), "--out", str(out)])
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert rc == EXIT_USAGE, err
    assert len(lines) == 1 and lines[0].startswith("mmedge: error: "), err
    assert str(named) in lines[0], lines[0]
    assert says in lines[0], lines[0]
    assert "Traceback" not in err and not out.exists()
    return lines[0]


def assert_good_load(good) -> None:
    """A correct checkpoint loaded after a refused one comes back exactly (nothing shared was modified)."""
    for path in (good.ckpt, good.legacy):
        ckpt = load_tutorial_checkpoint(path)
        for ours, ref in ((ckpt.encoder_state, good.enc), (ckpt.decoder_state, good.dec)):
            assert list(ours) == list(ref)
            for k, v in ref.items():
                assert torch.equal(ours[k], v), (path, k)


def test_good_checkpoints_load(good):
    """The baseline every refusal below is measured against (the CLI export itself: test_checkpoint.py)."""
    assert_good_load(good)
    for path in (good.ckpt, good.legacy):
        model = ck.load_captioner(path, good.word_map)
        assert all(torch.equal(model.decoder.state_dict()[k], v) for k, v in good.dec.items())


# ------------------------------------------------------------------ 1. nothing a pickle says may modify shared objects
_NEG_DEFAULTS = T(NONE, D({"__defaults__": T(FALSE, NONE, D({"neg": b"\x88"}))}))  # (None, slotstate)
_POISON = {
    # BUILD on the allow-listed function: later tensors would come back negated
    "build-function-defaults": G("torch._utils", "_rebuild_tensor_v2") + _NEG_DEFAULTS + BUILD + POP,
    "build-parameter-defaults": G("torch._utils", "_rebuild_parameter")
    + T(NONE, D({"__defaults__": T(b"\x88", NONE)})) + BUILD + POP,
    # BUILD on a stand-in class (not an instance) and on the container classes
    "build-stand-in-class": G("models", "Encoder") + T(NONE, D({"qualified_name": S("os.system")})) + BUILD + POP,
    "build-ordereddict-class": G("collections", "OrderedDict") + D({"x": I(1)}) + BUILD + POP,
    # SETITEM / APPEND / ADDITEMS on globals
    "setitem-dict-class": G("builtins", "dict") + S("k") + I(1) + b"s" + POP,
    "setitems-function": G("torch", "device") + b"(" + S("k") + I(1) + b"u" + POP,
    "append-set-class": G("builtins", "set") + I(1) + b"a" + POP,
    "appends-function": G("torch._utils", "_rebuild_tensor_v2") + b"(" + I(1) + b"e" + POP,
    "additems-set-class": G("builtins", "set") + b"(" + I(1) + b"\x90" + POP,
    # BUILD on a tensor: Tensor.__setstate__ would set_() it to any shape, past every check
    "build-tensor-set_": tensor("0", 4, (4,), (1,)) + T(storage_ref("0", 4), I(0), T(I(10**6), I(10**6)),
                                                        T(I(0), I(0))) + BUILD + POP,
    # calls with hostile arguments
    "defaultdict-factory": G("collections", "defaultdict") + T(G("torch._utils", "_rebuild_tensor_v2")) + REDUCE + POP,
    "call-storage-type": G("torch", "FloatStorage") + T(I(10**9)) + REDUCE + POP,
    "newobj-function": G("torch", "device") + EMPTY_TUPLE + b"\x81" + POP,
}


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("case", sorted(_POISON))
def test_pickle_cannot_modify_shared_objects(good, tmp_path, capsys, case, fmt):
    """The mutation, then a forbidden global: refused, and the next load in this process is exact."""
    before = (ck._rebuild_tensor_v2.__defaults__, ck._rebuild_parameter.__defaults__,
              torch._utils._rebuild_tensor_v2.__defaults__)
    body = _POISON[case] + G("os", "system") + POP + D({"encoder": I(0), "decoder": I(0)})
    legacy = fmt == "legacy"
    if legacy:
        body = body.replace(T(S("storage"), G("torch", "FloatStorage"), S("0"), S("cpu"), I(4)),
                            T(S("storage"), G("torch", "FloatStorage"), S("0"), S("cpu"), I(4), NONE))
        path = tmp_path / "poison.pth.tar"
        path.write_bytes(legacy_bytes(PROTO + body + STOP, ["0"], [(4, floats([1, 2, 3, 4]))]))
    else:
        path = write_zip(tmp_path / "poison.pth.tar", PROTO + body + STOP, {"0": floats([1, 2, 3, 4])})
    assert_refused(capsys, tmp_path, path, good.word_map, named=path, says="refusing")
    assert (ck._rebuild_tensor_v2.__defaults__, ck._rebuild_parameter.__defaults__,
            torch._utils._rebuild_tensor_v2.__defaults__) == before
    assert_good_load(good)


def test_stand_in_classes_are_not_shared_between_loads():
    import io

    pickled = PROTO + G("models", "Encoder") + EMPTY_TUPLE + b"\x81" + STOP
    a, b = (ck.restricted_pickle.load(io.BytesIO(pickled)) for _ in range(2))
    assert isinstance(a, ck.PickledObject) and a.qualified_name == "models.Encoder"
    assert type(a) is not type(b)


# ------------------------------------------------------------------ 2. tensors must lie inside their storage
def _sd_pickle(dec_weight: bytes, *, legacy: bool = False) -> bytes:
    return PROTO + D({"encoder": D({"w": tensor("0", 4, (4,), (1,), legacy=legacy)}),
                      "decoder": D({"embedding.weight": dec_weight})}) + STOP


_BAD_TENSORS = {
    "stride-0-huge": ((10**6, 10**6), (0, 0), 0),
    "stride-0-one-dim": ((4_000_000_000, 16), (0, 1), 0),
    "shape-beyond-storage": ((1000, 1000), (1000, 1), 0),
    "offset-beyond-storage": ((2,), (1,), 10**12),
    "negative-stride": ((4,), (-1,), 3),
    "negative-shape": ((-4, 4), (4, 1), 0),
    "too-many-dims": ((1,) * 40, (1,) * 40, 0),
    "huge-index": ((2**70,), (1,), 0),
    "overlapping-expansion": ((16, 16), (1, 1), 0),
}


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("case", sorted(_BAD_TENSORS))
def test_tensor_outside_its_storage_is_refused(good, tmp_path, capsys, case, fmt):
    shape, stride, offset = _BAD_TENSORS[case]
    legacy = fmt == "legacy"
    weight = tensor("1", 32, shape, stride, offset, legacy=legacy)
    data = {"0": floats([0.0] * 4), "1": floats([0.5] * 32)}
    path = tmp_path / "bad-tensor.pth.tar"
    if legacy:
        path.write_bytes(legacy_bytes(_sd_pickle(weight, legacy=True), ["0", "1"],
                                      [(4, data["0"]), (32, data["1"])]))
    else:
        write_zip(path, _sd_pickle(weight), data)
    assert_refused(capsys, tmp_path, path, good.word_map, named=path)


def test_aliased_tensors_cannot_claim_more_than_is_stored(good, tmp_path, capsys):
    """200 tensors all viewing one 64 KiB storage: 12.5 MiB of weights from 64 KiB of data."""
    n = 16384
    path = write_zip(tmp_path / "alias.pth.tar", PROTO + D({
        "encoder": D({f"w{i}": tensor("0", n, (n,), (1,)) for i in range(200)}),
        "decoder": D({"x": tensor("0", n, (n,), (1,))})}) + STOP, {"0": bytes(4 * n)})
    assert_refused(capsys, tmp_path, path, good.word_map, named=path, says="alias")


def test_huge_pooled_grid_is_refused(good, tmp_path, capsys, monkeypatch):
    """A pickled Encoder whose enc_image_size would size a 10^6 x 10^6 pooling grid."""
    models = types.ModuleType("models")

    class Encoder(nn.Module):
        def __init__(self, resnet):
            super().__init__()
            self.enc_image_size = 10**6
            self.resnet = resnet

    Encoder.__module__, Encoder.__qualname__ = "models", "Encoder"
    models.Encoder = Encoder
    path = tmp_path / "grid.pth.tar"
    with monkeypatch.context() as mp:
        mp.setitem(sys.modules, "models", models)
        torch.save({"encoder": Encoder(nn.Sequential(nn.Conv2d(3, 8, 7))), "decoder": good.dec}, path)
    assert_refused(capsys, tmp_path, path, good.word_map, named=path, says="enc_image_size")


# ------------------------------------------------------------------ 3. legacy storages: all present, fully read
def _legacy_two(keys: list[str], storages: list[tuple[int, bytes]], tail: bytes = b"") -> bytes:
    pickled = PROTO + D({"encoder": D({"a": tensor("0", 4, (4,), (1,), legacy=True)}),
                         "decoder": D({"b": tensor("1", 4, (4,), (1,), legacy=True)})}) + STOP
    return legacy_bytes(pickled, keys, storages, tail)


_FOUR = floats([1, 2, 3, 4])
_LEGACY_BAD = {
    "storage-never-written": (["0"], [(4, _FOUR)], b"\0" * 24),  # 1 of 2 written (+ padding so sizes fit)
    "key-list-empty": ([], [], b"\0" * 48),
    "storage-written-twice": (["0", "0"], [(4, _FOUR), (4, _FOUR)], b""),
    "element-count-mismatch": (["0", "1"], [(4, _FOUR), (3, _FOUR[:12])], b"\0" * 4),
    "undeclared-key": (["0", "9"], [(4, _FOUR), (4, _FOUR)], b""),
    "short-data": (["0", "1"], [(4, _FOUR), (4, _FOUR[:8])], b""),
    "trailing-data": (["0", "1"], [(4, _FOUR), (4, _FOUR)], b"junk"),
}


@pytest.mark.parametrize("case", sorted(_LEGACY_BAD))
def test_legacy_storages_must_all_be_written(good, tmp_path, capsys, case):
    keys, storages, tail = _LEGACY_BAD[case]
    path = tmp_path / "legacy-bad.pth.tar"
    path.write_bytes(_legacy_two(keys, storages, tail))
    assert_refused(capsys, tmp_path, path, good.word_map, named=path)


def test_legacy_well_formed_two_storages_load(tmp_path):
    path = tmp_path / "ok.pth.tar"
    path.write_bytes(_legacy_two(["0", "1"], [(4, _FOUR), (4, floats([5, 6, 7, 8]))]))
    ckpt = load_tutorial_checkpoint(path)
    assert ckpt.encoder_state["a"].tolist() == [1, 2, 3, 4] and ckpt.decoder_state["b"].tolist() == [5, 6, 7, 8]


def test_legacy_from_a_real_save_missing_a_storage(good, tmp_path, capsys):
    """torch.save's own legacy file with its last storage record cut off and the key list shortened."""
    import io
    import pickle
    import pickletools

    data = good.legacy.read_bytes()
    f = io.BytesIO(data)
    for _ in range(3):
        pickle.load(f)

    for _ in pickletools.genops(f):  # skip the object pickle, running nothing
        pass
    pos = f.tell()
    keys = pickle.load(f)
    rest = f.read()
    path = tmp_path / "cut.pth.tar"
    path.write_bytes(data[:pos] + pickle.dumps(keys[:-1], protocol=2) + rest)  # same bytes, one key fewer
    assert_refused(capsys, tmp_path, path, good.word_map, named=path)


# ------------------------------------------------------------------ 4. word maps and checkpoints that are not files
def _fifo(tmp_path: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    return fifo


@pytest.mark.parametrize("case", ["dev-zero", "fifo", "folder", "huge", "deep-json", "not-utf8", "dev-null"])
@pytest.mark.parametrize("which", ["word-map", "checkpoint"])
def test_not_a_regular_file(good, tmp_path, capsys, case, which):
    if case in ("deep-json", "not-utf8") and which == "checkpoint":
        pytest.skip("word map content only")
    if case == "dev-zero":
        bad = Path("/dev/zero")
    elif case == "dev-null":
        bad = Path("/dev/null")
    elif case == "fifo":
        bad = _fifo(tmp_path)
    elif case == "folder":
        bad = tmp_path / "a-folder"
        bad.mkdir()
    elif case == "huge":  # sparse: over the limit without using the disk
        bad = tmp_path / "huge.bin"
        with open(bad, "wb") as f:
            f.truncate((ck.MAX_WORD_MAP_BYTES if which == "word-map" else ck.MAX_CHECKPOINT_BYTES) + 1)
    elif case == "deep-json":
        bad = tmp_path / "deep.json"
        bad.write_text("[" * 200_000 + "]" * 200_000)
    else:
        bad = tmp_path / "latin1.json"
        bad.write_bytes(b'{"caf\xe9": 0}')
    if not bad.exists():
        pytest.skip(f"{bad} does not exist here")
    ckpt, wm = (good.ckpt, bad) if which == "word-map" else (bad, good.word_map)
    assert_refused(capsys, tmp_path, ckpt, wm, named=bad)


# ------------------------------------------------------------------ 5. bombs: in a child under RLIMIT_AS
_CHILD = textwrap.dedent("""
    import contextlib, io, json, resource, sys
    import torch
    from mmedge.cli import run
    from mmedge.models import checkpoint  # noqa: F401 - imported before the cap
    def vm_kib():
        for line in open("/proc/self/status"):
            if line.startswith("VmSize:"):
                return int(line.split()[1])
    cap = (vm_kib() + (1 << 20)) * 1024  # what is mapped now + 1 GiB
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    word_map, out = sys.argv[1], sys.argv[2]
    results = []
    for i, ckpt in enumerate(sys.argv[3:]):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                rc = run(["export", "captioner", "--checkpoint", ckpt, "--word-map", word_map, "--out", f"{out}{i}"])
            except BaseException as e:
                rc = f"raised {type(e).__name__}: {e}"
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        results.append({"ckpt": ckpt, "rc": rc, "err": err.getvalue(), "grew_kib": after - before})
    print(json.dumps(results))
""")


def _raw_zip(path: Path, members: list[tuple[str, int, int, bytes, int]]) -> Path:
    """A zip written by hand: (name, method, crc, data as stored, uncompressed size) per member."""
    out, central = bytearray(), bytearray()
    for name, method, crc, data, usize in members:
        raw = name.encode()
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, method, 0, 33, crc, len(data), usize,
                               len(raw), 0, 0, 0, 0, 0, len(out)) + raw
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, method, 0, 33, crc, len(data), usize, len(raw), 0)
        out += raw + data
    eocd = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(out), 0)
    path.write_bytes(bytes(out + central) + eocd)
    return path


def _deflate_repeated(chunk: bytes, times: int) -> tuple[bytes, int, int]:
    """chunk * times as raw deflate, made in milliseconds: one fully flushed block repeated -> (data, crc, size)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)  # byte-aligned, no history: it can be repeated
    crc = 0
    for _ in range(times):
        crc = zlib.crc32(chunk, crc)
    return block * times + b"\x03\x00", crc, len(chunk) * times  # + an empty final block


def _bomb_zip_deflated(path: Path, nbytes: int) -> Path:
    """A real zip bomb: one storage of `nbytes` zeros, deflated (~1000x)."""
    numel = nbytes // 4
    pickled = PROTO + D({"encoder": D({"w": tensor("0", numel, (numel,), (1,))}),
                         "decoder": D({"embedding.weight": tensor("0", numel, (numel // 64, 64), (64, 1))})}) + STOP
    data, crc, size = _deflate_repeated(bytes(1 << 24), nbytes >> 24)
    return _raw_zip(path, [("archive/data.pkl", 0, zlib.crc32(pickled), pickled, len(pickled)),
                           ("archive/data/0", 8, crc, data, size)])


def _bomb_zip_lying_size(path: Path) -> Path:
    """A small deflated member whose central directory declares 4 GiB uncompressed."""
    write_zip(path, PROTO + D({"encoder": I(0), "decoder": I(0)}) + STOP, {"0": bytes(1 << 16)},
              compress=zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    at = data.index(b"PK\x01\x02")  # the first central-directory entry
    while True:
        name_len = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46:at + 46 + name_len] == b"archive/data/0":
            struct.pack_into("<I", data, at + 24, 0xFFFFFFF0)
            break
        at = data.index(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))
    return path


def _bomb_zip_overlap(path: Path, copies: int = 64) -> Path:
    """Many central-directory entries for one stored 4 MiB member (non-recursive overlap bomb)."""
    nbytes = 4 << 20
    pickled = PROTO + D({"encoder": D({f"w{i}": tensor(str(i), nbytes // 4, (nbytes // 4,), (1,))
                                       for i in range(copies)}), "decoder": I(0)}) + STOP
    write_zip(path, pickled, {"0": bytes(nbytes)})
    data = bytearray(path.read_bytes())
    cd = data.index(b"PK\x01\x02")
    end = data.index(b"PK\x05\x06")
    entries, at = [], cd
    while at < end:
        n, m, k = struct.unpack_from("<HHH", data, at + 28)
        entries.append(bytes(data[at:at + 46 + n + m + k]))
        at += 46 + n + m + k
    member = next(e for e in entries if e[46:46 + 14] == b"archive/data/0")
    extra = []
    for i in range(1, copies):  # the same local header and data, under another name
        name = f"archive/data/{i}".encode()
        extra.append(member[:28] + struct.pack("<H", len(name)) + member[30:46] + name + member[46 + 14:])
    new_cd = b"".join(entries) + b"".join(extra)
    eocd = bytearray(data[end:end + 22])
    total = len(entries) + len(extra)
    struct.pack_into("<HHII", eocd, 8, total, total, len(new_cd), cd)
    path.write_bytes(bytes(data[:cd]) + new_cd + bytes(eocd))
    return path


def _bomb_legacy_declared(path: Path) -> Path:
    """A 1 KiB legacy stream declaring a 6.5 GB storage (torch allocates it before reading)."""
    numel = 1_625_000_000
    pickled = PROTO + D({"encoder": D({"w": tensor("0", numel, (numel,), (1,), legacy=True)}),
                         "decoder": D({"embedding.weight": tensor("0", numel, (numel // 512, 512), (512, 1),
                                                                  legacy=True)})}) + STOP
    path.write_bytes(legacy_bytes(pickled, ["0"], [(numel, b"\0" * 64)]))
    return path


def _bomb_stride0(path: Path) -> Path:
    """Stride-0 tensors claiming the tutorial's shapes x 10^4 on one-element storages (178 KB in the report)."""
    def huge(shape):
        return tensor("0", 1, shape, (0,) * len(shape))

    pickled = PROTO + D({"encoder": D({"resnet.0.weight": huge((64_000, 3, 7, 7))}),
                         "decoder": D({"embedding.weight": huge((94_900_000, 512)),
                                       "attention.encoder_att.weight": huge((512, 2048)),
                                       "init_h.weight": huge((512_000, 2048))})}) + STOP
    return write_zip(path, pickled, {"0": floats([1.0])})


def _bomb_pickle(path: Path) -> Path:
    """data.pkl itself deflated from 256 MiB (EMPTY_LIST, then NONE APPEND forever)."""
    data, crc, size = _deflate_repeated(b"Na" * (1 << 22), 32)
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = head.compress(PROTO + b"]") + head.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(b"Na" * (1 << 22), zlib.crc32(PROTO + b"]"))
    for _ in range(31):
        crc = zlib.crc32(b"Na" * (1 << 22), crc)
    return _raw_zip(path, [("archive/data.pkl", 8, crc, first + data, size + 3)])


def test_bombs_stay_bounded(good, tmp_path):
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to size the address-space cap")
    bombs = [
        _bomb_zip_deflated(tmp_path / "deflated.pth.tar", 1200 << 20),
        _bomb_zip_lying_size(tmp_path / "lying.pth.tar"),
        _bomb_zip_overlap(tmp_path / "overlap.pth.tar"),
        _bomb_legacy_declared(tmp_path / "declared.pth.tar"),
        _bomb_stride0(tmp_path / "stride0.pth.tar"),
        _bomb_pickle(tmp_path / "pickle.pth.tar"),
    ]
    assert all(b.stat().st_size < 8 << 20 for b in bombs), [b.stat().st_size for b in bombs]
    res = subprocess.run([sys.executable, "-c", _CHILD, str(good.word_map), str(tmp_path / "out"), *map(str, bombs)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads(res.stdout.strip().splitlines()[-1])
    for r in results:
        lines = r["err"].splitlines()
        assert r["rc"] == EXIT_USAGE, r
        assert len(lines) == 1 and lines[0].startswith("mmedge: error: ") and r["ckpt"] in lines[0], r
        assert r["grew_kib"] < 200 << 10, r  # < 200 MiB of peak RSS for files of a few MB
    assert not any((tmp_path / f"out{i}").exists() for i in range(len(bombs)))


def test_limits_are_documented():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for name in ("MAX_CHECKPOINT_BYTES", "MAX_COMPRESSION_RATIO", "MAX_WORD_MAP_BYTES", "uninitialised"):
        assert name in readme, name
