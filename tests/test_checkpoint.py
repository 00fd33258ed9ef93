"""Loading sgrvinod's tutorial checkpoints (whole pickled modules) without running pickled code.

A fake tutorial `models` module and a fake `torchvision.models.resnet` are put in
sys.modules only while the checkpoint is written, then removed: the loader must
work without them, as it does for users.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
import warnings
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmedge.errors import CheckpointError
from mmedge.models.captioner import CONFIGS
from mmedge.models.checkpoint import (
    PickledObject,
    captioner_from_checkpoint,
    load_captioner,
    load_tutorial_checkpoint,
    restricted_pickle,
)
from mmedge.runtime.vocab import Vocabulary

ENC_SIZE = 3  # pooled grid; the trunk gives 4x4 for 128x128 images, so the bins overlap
VOCAB = 17
IMAGE = 128
CFG = replace(CONFIGS["tiny"], encoded_size=ENC_SIZE, vocab_size=VOCAB, image_size=IMAGE)


# ------------------------------------------------------------------ the tutorial's code
def _fake_tutorial_modules() -> dict[str, types.ModuleType]:
    """`models` (the tutorial's models.py) and a torchvision whose resnet has the same layout."""
    tv, tvm, tvr = (types.ModuleType(n) for n in ("torchvision", "torchvision.models", "torchvision.models.resnet"))
    tv.models, tvm.resnet = tvm, tvr
    models = types.ModuleType("models")

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * self.expansion)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample
            self.stride = stride

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            if self.downsample is not None:
                identity = self.downsample(x)
            return self.relu(out + identity)

    class ResNet(nn.Module):  # torchvision's layout, widths from the tiny config
        def __init__(self, layers, widths, stem):
            super().__init__()
            self.inplanes = stem
            self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(stem)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.layer1 = self._make_layer(widths[0], layers[0])
            self.layer2 = self._make_layer(widths[1], layers[1], stride=2)
            self.layer3 = self._make_layer(widths[2], layers[2], stride=2)
            self.layer4 = self._make_layer(widths[3], layers[3], stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(widths[3] * 4, 10)

        def _make_layer(self, planes, blocks, stride=1):
            downsample = None
            if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, kernel_size=1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes * Bottleneck.expansion),
                )
            mods = [Bottleneck(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * Bottleneck.expansion
            mods += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*mods)

    def resnet_tiny():
        bb = CFG.backbone
        return ResNet(bb.layers, bb.widths, bb.stem_width)

    class Encoder(nn.Module):
        def __init__(self, encoded_image_size=14):
            super().__init__()
            self.enc_image_size = encoded_image_size
            resnet = tvr.resnet_tiny()
            modules = list(resnet.children())[:-2]
            self.resnet = nn.Sequential(*modules)
            self.adaptive_pool = nn.AdaptiveAvgPool2d((encoded_image_size, encoded_image_size))

        def forward(self, images):
            out = self.resnet(images)
            out = self.adaptive_pool(out)
            return out.permute(0, 2, 3, 1)

    class Attention(nn.Module):
        def __init__(self, encoder_dim, decoder_dim, attention_dim):
            super().__init__()
            self.encoder_att = nn.Linear(encoder_dim, attention_dim)
            self.decoder_att = nn.Linear(decoder_dim, attention_dim)
            self.full_att = nn.Linear(attention_dim, 1)
            self.relu = nn.ReLU()
            self.softmax = nn.Softmax(dim=1)

        def forward(self, encoder_out, decoder_hidden):
            att1 = self.encoder_att(encoder_out)
            att2 = self.decoder_att(decoder_hidden)
            att = self.full_att(self.relu(att1 + att2.unsqueeze(1))).squeeze(2)
            alpha = self.softmax(att)
            return (encoder_out * alpha.unsqueeze(2)).sum(dim=1), alpha

    class DecoderWithAttention(nn.Module):
        def __init__(self, attention_dim, embed_dim, decoder_dim, vocab_size, encoder_dim=2048, dropout=0.5):
            super().__init__()
            self.encoder_dim = encoder_dim
            self.attention_dim = attention_dim
            self.embed_dim = embed_dim
            self.decoder_dim = decoder_dim
            self.vocab_size = vocab_size
            self.dropout = dropout
            self.attention = Attention(encoder_dim, decoder_dim, attention_dim)
            self.embedding = nn.Embedding(vocab_size, embed_dim)
            self.dropout = nn.Dropout(p=self.dropout)
            self.decode_step = nn.LSTMCell(embed_dim + encoder_dim, decoder_dim, bias=True)
            self.init_h = nn.Linear(encoder_dim, decoder_dim)
            self.init_c = nn.Linear(encoder_dim, decoder_dim)
            self.f_beta = nn.Linear(decoder_dim, encoder_dim)
            self.sigmoid = nn.Sigmoid()
            self.fc = nn.Linear(decoder_dim, vocab_size)
            self.embedding.weight.data.uniform_(-0.1, 0.1)
            self.fc.bias.data.fill_(0)
            self.fc.weight.data.uniform_(-0.1, 0.1)

        def init_hidden_state(self, encoder_out):
            mean_encoder_out = encoder_out.mean(dim=1)
            return self.init_h(mean_encoder_out), self.init_c(mean_encoder_out)

        def one_step(self, encoder_out, prev_words, h, c):
            """The body of the tutorial's decoding loop (caption.py's beam search step)."""
            embeddings = self.embedding(prev_words)
            awe, alpha = self.attention(encoder_out, h)
            gate = self.sigmoid(self.f_beta(h))
            awe = gate * awe
            h, c = self.decode_step(torch.cat([embeddings, awe], dim=1), (h, c))
            return F.log_softmax(self.fc(h), dim=1), h, c, alpha

    for module, classes in ((tvr, (Bottleneck, ResNet)), (models, (Encoder, Attention, DecoderWithAttention))):
        for cls in classes:
            cls.__module__, cls.__qualname__ = module.__name__, cls.__name__
            setattr(module, cls.__name__, cls)
    tvr.resnet_tiny = resnet_tiny
    return {m.__name__: m for m in (tv, tvm, tvr, models)}


def _randomise(encoder: nn.Module, decoder: nn.Module, gen: torch.Generator) -> tuple:
    """Non-trivial BN statistics and one Adam step each, as after training (optimizers get state)."""
    for m in encoder.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            m.num_batches_tracked.fill_(7)
    fine_tuned = [p for c in list(encoder.resnet.children())[5:] for p in c.parameters()]  # Encoder.fine_tune
    enc_opt = torch.optim.Adam(fine_tuned, lr=1e-2)
    dec_opt = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    for opt in (enc_opt, dec_opt):
        for group in opt.param_groups:
            for p in group["params"]:
                p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
        opt.zero_grad()
    return enc_opt, dec_opt


def _save_json(path: Path, vocab: Vocabulary) -> Path:
    path.write_text(json.dumps(dict(vocab.word_map)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory):
    """Write a tutorial checkpoint with the fake modules present; they are gone afterwards."""
    root = tmp_path_factory.mktemp("tutorial")
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    fakes = _fake_tutorial_modules()
    with pytest.MonkeyPatch.context() as mp:
        for name, module in fakes.items():
            mp.setitem(sys.modules, name, module)
        models = fakes["models"]
        encoder = models.Encoder(ENC_SIZE)
        decoder = models.DecoderWithAttention(CFG.attention_dim, CFG.embed_dim, CFG.decoder_dim, VOCAB,
                                              CFG.encoder_dim, dropout=0.3)
        enc_opt, dec_opt = _randomise(encoder, decoder, gen)
        encoder.eval(), decoder.eval()

        vocab = Vocabulary.synthetic(VOCAB)
        images = torch.randn(2, 3, IMAGE, IMAGE, generator=gen)
        words = [torch.tensor([vocab.start, vocab.start]), torch.tensor([5, 11])]
        with torch.no_grad():
            enc_out = encoder(images)
            flat = enc_out.reshape(2, -1, enc_out.shape[-1])
            h, c = decoder.init_hidden_state(flat)
            steps = []
            for w in words:
                log_probs, h, c, alpha = decoder.one_step(flat, w, h, c)
                steps.append((log_probs, h, c, alpha))

        state = {"epoch": 11, "epochs_since_improvement": 2, "bleu-4": 0.2345,
                 "encoder": encoder, "decoder": decoder, "encoder_optimizer": enc_opt, "decoder_optimizer": dec_opt}
        ckpt = root / "BEST_checkpoint_coco_5_cap_per_img_5_min_word_freq.pth.tar"
        torch.save(state, ckpt)
        legacy = root / "legacy.pth.tar"
        with warnings.catch_warnings():  # "Couldn't retrieve source code for container ..."
            warnings.simplefilter("ignore")
            torch.save(state, legacy, _use_new_zipfile_serialization=False)
    assert sys.modules.get("models") is not models and sys.modules.get("torchvision.models.resnet") is not fakes[
        "torchvision.models.resnet"]
    return types.SimpleNamespace(
        root=root, ckpt=ckpt, legacy=legacy, word_map=_save_json(root / "WORDMAP_coco.json", vocab), vocab=vocab,
        encoder_sd=encoder.state_dict(), decoder_sd=decoder.state_dict(),
        images=images, words=words, enc_out=enc_out, steps=steps,
    )


def _assert_same_outputs(model, t) -> None:
    close = dict(atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        feats = model.encode(t.images)
        torch.testing.assert_close(feats, t.enc_out.reshape(feats.shape), **close)
        h, c, att1 = model.decoder.init_state(feats)
        for w, (ref_lp, ref_h, ref_c, ref_alpha) in zip(t.words, t.steps):
            log_probs, h, c, alpha = model.decoder.step(feats, att1, w, h, c)
            torch.testing.assert_close(log_probs, ref_lp, **close)
            torch.testing.assert_close(h, ref_h, **close)
            torch.testing.assert_close(c, ref_c, **close)
            torch.testing.assert_close(alpha, ref_alpha, **close)


# ------------------------------------------------------------------ loading real tutorial files
@pytest.mark.parametrize("which", ["ckpt", "legacy"])
def test_pickled_modules_load_without_the_tutorial_code(tutorial, which):
    assert "models" not in sys.modules or not hasattr(sys.modules["models"], "DecoderWithAttention")
    ckpt = load_tutorial_checkpoint(getattr(tutorial, which))
    assert (ckpt.epoch, ckpt.epochs_since_improvement, ckpt.bleu4) == (11, 2, pytest.approx(0.2345))
    assert (ckpt.encoded_size, ckpt.dropout) == (ENC_SIZE, pytest.approx(0.3))
    assert (ckpt.encoder_class, ckpt.decoder_class) == ("models.Encoder", "models.DecoderWithAttention")
    assert list(ckpt.encoder_state) == list(tutorial.encoder_sd)
    assert list(ckpt.decoder_state) == list(tutorial.decoder_sd)
    for ours, ref in ((ckpt.encoder_state, tutorial.encoder_sd), (ckpt.decoder_state, tutorial.decoder_sd)):
        for k, v in ref.items():
            assert torch.equal(ours[k], v), k
            assert not ours[k].requires_grad and type(ours[k]) is torch.Tensor

    model = captioner_from_checkpoint(ckpt, tutorial.vocab)
    assert model.config.backbone == CFG.backbone
    assert (model.config.encoded_size, model.config.vocab_size, model.config.embed_dim,
            model.config.attention_dim, model.config.decoder_dim) == (ENC_SIZE, VOCAB, CFG.embed_dim,
                                                                      CFG.attention_dim, CFG.decoder_dim)
    assert not model.training
    _assert_same_outputs(model, tutorial)


def test_load_captioner_with_word_map(tutorial):
    model = load_captioner(tutorial.ckpt, tutorial.word_map)
    assert model.vocab.word_map == tutorial.vocab.word_map
    _assert_same_outputs(model, tutorial)


def test_state_dict_checkpoint_loads(tutorial, tmp_path):
    path = tmp_path / "sd.pth.tar"
    torch.save({"epoch": 3, "encoder": tutorial.encoder_sd, "decoder": tutorial.decoder_sd}, path)
    ckpt = load_tutorial_checkpoint(path)
    assert ckpt.encoded_size is None and ckpt.encoder_class is None and ckpt.bleu4 is None
    model = captioner_from_checkpoint(ckpt, tutorial.vocab, encoded_size=ENC_SIZE)
    _assert_same_outputs(model, tutorial)
    # without the override the tutorial's 14x14 grid is assumed
    assert captioner_from_checkpoint(ckpt, tutorial.vocab).config.encoded_size == 14


def test_data_parallel_prefix_is_stripped(tutorial, tmp_path):
    path = tmp_path / "dp.pth"
    torch.save({"encoder": {f"module.{k}": v for k, v in tutorial.encoder_sd.items()},
                "decoder": tutorial.decoder_sd}, path)
    assert list(load_tutorial_checkpoint(path).encoder_state) == list(tutorial.encoder_sd)


def _gpu_data_parallel(module: nn.Module) -> nn.DataParallel:
    """nn.DataParallel(module) with the attributes it has when made on a CUDA machine (as forks save it)."""
    dp = nn.DataParallel(module)  # on a CPU-only machine it records just .module and device_ids = []
    dp.dim, dp.device_ids, dp.output_device, dp.src_device_obj = 0, [0, 1], 0, torch.device("cuda", 0)
    return dp


@pytest.mark.parametrize("wrapped", [("decoder",), ("encoder", "decoder")])
def test_data_parallel_module_is_unwrapped(tmp_path, wrapped):
    """A fork's checkpoint: the whole pickled decoder (or both) inside nn.DataParallel, zip and legacy."""
    fakes = _fake_tutorial_modules()
    gen = torch.Generator().manual_seed(1)
    with pytest.MonkeyPatch.context() as mp:
        for name, module in fakes.items():
            mp.setitem(sys.modules, name, module)
        models = fakes["models"]
        encoder = models.Encoder(ENC_SIZE)
        decoder = models.DecoderWithAttention(CFG.attention_dim, CFG.embed_dim, CFG.decoder_dim, VOCAB,
                                              CFG.encoder_dim, dropout=0.2)
        enc_opt, dec_opt = _randomise(encoder, decoder, gen)
        encoder.eval(), decoder.eval()
        state = {"epoch": 4, "encoder": encoder, "decoder": decoder,
                 "encoder_optimizer": enc_opt, "decoder_optimizer": dec_opt}
        for entry in wrapped:
            state[entry] = _gpu_data_parallel(state[entry])
        paths = [tmp_path / "fork.pth.tar", tmp_path / "fork-legacy.pth.tar"]
        torch.save(state, paths[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.save(state, paths[1], _use_new_zipfile_serialization=False)
    vocab = Vocabulary.synthetic(VOCAB)
    images = torch.randn(2, 3, IMAGE, IMAGE, generator=gen)
    with torch.no_grad():
        ref = encoder(images)
        flat = ref.reshape(2, -1, ref.shape[-1])
        h, c = decoder.init_hidden_state(flat)
        ref_lp = decoder.one_step(flat, torch.tensor([vocab.start] * 2), h, c)[0]
    for path in paths:
        ckpt = load_tutorial_checkpoint(path)
        dp = "torch.nn.parallel.data_parallel.DataParallel"
        assert ckpt.wrappers == {entry: dp for entry in wrapped}
        assert (ckpt.encoder_class, ckpt.decoder_class) == ("models.Encoder", "models.DecoderWithAttention")
        assert (ckpt.encoded_size, ckpt.dropout, ckpt.epoch) == (ENC_SIZE, pytest.approx(0.2), 4)
        for ours, module in ((ckpt.encoder_state, encoder), (ckpt.decoder_state, decoder)):
            ref_sd = module.state_dict()
            assert list(ours) == list(ref_sd) and all(torch.equal(ours[k], v) for k, v in ref_sd.items())
        model = captioner_from_checkpoint(ckpt, vocab)
        with torch.no_grad():
            feats = model.encode(images)
            torch.testing.assert_close(feats, ref.reshape(feats.shape), atol=1e-6, rtol=1e-6)
            h, c, att1 = model.decoder.init_state(feats)
            log_probs = model.decoder.step(feats, att1, torch.tensor([vocab.start] * 2), h, c)[0]
        torch.testing.assert_close(log_probs, ref_lp, atol=1e-6, rtol=1e-6)


def test_distributed_data_parallel_module_is_unwrapped(tmp_path):
    """DistributedDataParallel pickles more (torch.device, config records): still only `.module` is used."""
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or dist.is_initialized():
        pytest.skip("torch.distributed unavailable or already initialised")
    inner = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        path = tmp_path / "ddp.pth"
        torch.save({"encoder": {"w": torch.zeros(1)}, "decoder": nn.parallel.DistributedDataParallel(inner)}, path)
    finally:
        dist.destroy_process_group()
    ckpt = load_tutorial_checkpoint(path)
    assert ckpt.wrappers == {"decoder": "torch.nn.parallel.distributed.DistributedDataParallel"}
    assert ckpt.decoder_class == "torch.nn.modules.container.Sequential"
    assert list(ckpt.decoder_state) == list(inner.state_dict())


def test_walk_matches_state_dict(tmp_path):
    """None buffers / modules and persistent=False buffers are left out, as state_dict() does."""
    lin = nn.Linear(2, 3)
    lin.register_buffer("scratch", torch.zeros(2), persistent=False)
    lin.register_buffer("kept", torch.ones(1))
    seq = nn.Sequential(nn.BatchNorm1d(3, track_running_stats=False), lin, nn.Dropout())
    seq.add_module("absent", None)
    path = tmp_path / "walk.pth"
    torch.save({"encoder": seq, "decoder": nn.Linear(1, 1)}, path)
    ckpt = load_tutorial_checkpoint(path)
    assert list(ckpt.encoder_state) == list(seq.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.kept"]
    assert all(torch.equal(ckpt.encoder_state[k], v) for k, v in seq.state_dict().items())
    assert ckpt.encoder_class == "torch.nn.modules.container.Sequential"


# ------------------------------------------------------------------ refusing code
class _Payload:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("func, names", [
    (os.system, ("os.system", "posix.system", "nt.system")),
    (eval, ("builtins.eval",)),
    (subprocess.call, ("subprocess.call",)),
])
def test_malicious_pickle_is_refused_and_never_runs(tutorial, tmp_path, func, names):
    marker = tmp_path / "pwned"
    args = {os.system: (f"touch {marker}",), eval: (f"open({str(marker)!r}, 'w').close()",),
            subprocess.call: (["touch", str(marker)],)}[func]
    path = tmp_path / "evil.pth.tar"
    torch.save({"epoch": 1, "encoder": tutorial.encoder_sd, "decoder": tutorial.decoder_sd,
                "bleu-4": _Payload(func, *args)}, path)
    with pytest.raises(CheckpointError) as info:
        load_tutorial_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg and "refusing to unpickle" in msg and "\n" not in msg
    assert any(repr(n) in msg for n in names), msg
    assert not marker.exists()


def test_unknown_class_and_non_tutorial_names_are_refused(tmp_path, monkeypatch):
    mod = types.ModuleType("mmedge_test_evil")

    class Gadget:
        pass

    Gadget.__module__, Gadget.__qualname__ = "mmedge_test_evil", "Gadget"
    mod.Gadget = Gadget
    monkeypatch.setitem(sys.modules, "mmedge_test_evil", mod)
    path = tmp_path / "gadget.pth"
    torch.save({"encoder": {"w": torch.zeros(1)}, "decoder": Gadget()}, path)
    with pytest.raises(CheckpointError, match="refusing to unpickle 'mmedge_test_evil.Gadget'"):
        load_tutorial_checkpoint(path)

    models = types.ModuleType("models")  # right module, name outside the allow-list
    models.Gadget = Gadget
    Gadget.__module__ = "models"
    monkeypatch.setitem(sys.modules, "models", models)
    torch.save({"encoder": {"w": torch.zeros(1)}, "decoder": Gadget()}, path)
    with pytest.raises(CheckpointError, match="refusing to unpickle 'models.Gadget'"):
        load_tutorial_checkpoint(path)


def test_stand_ins_are_inert(tutorial):
    ckpt_state = torch.load(tutorial.ckpt, map_location="cpu", weights_only=False, pickle_module=restricted_pickle)
    enc = ckpt_state["encoder"]
    assert isinstance(enc, PickledObject) and not isinstance(enc, nn.Module)
    assert enc.qualified_name == "models.Encoder" and not callable(enc)
    opt = ckpt_state["decoder_optimizer"]
    assert opt.qualified_name == "torch.optim.adam.Adam" and set(opt.pickle_state) >= {"state", "param_groups"}


# ------------------------------------------------------------------ user errors
def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_tutorial_checkpoint(tmp_path / "nope.pth.tar")
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint") as info:
        load_tutorial_checkpoint(text)
    assert str(text) in str(info.value)


def test_torchscript_archive_is_refused(tmp_path):
    """torch.load would hand a TorchScript zip (it has constants.pkl) to torch.jit.load."""
    path = tmp_path / "scripted.pt"
    with zipfile.ZipFile(path, "w") as z:
        for name in ("data.pkl", "constants.pkl", "code/__torch__.py", "version"):
            z.writestr(f"scripted/{name}", b"0")
    with pytest.raises(CheckpointError, match="TorchScript archive"):
        load_tutorial_checkpoint(path)


@pytest.mark.parametrize("which, keep", [("ckpt", 0.5), ("ckpt", 0.98), ("legacy", 0.5), ("legacy", 0.98)])
def test_truncated_file(tutorial, tmp_path, which, keep):
    data = getattr(tutorial, which).read_bytes()
    path = tmp_path / "truncated.pth.tar"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError) as info:
        load_tutorial_checkpoint(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg, msg


def test_missing_decoder_entry_and_wrong_types(tutorial, tmp_path):
    path = tmp_path / "x.pth"
    torch.save({"epoch": 1, "encoder": tutorial.encoder_sd}, path)
    with pytest.raises(CheckpointError, match="no 'decoder' entry"):
        load_tutorial_checkpoint(path)
    torch.save({"encoder": tutorial.encoder_sd, "decoder": [1, 2]}, path)
    with pytest.raises(CheckpointError, match="'decoder' is a list"):
        load_tutorial_checkpoint(path)
    torch.save({"encoder": tutorial.encoder_sd, "decoder": {"fc.weight": 3}}, path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_tutorial_checkpoint(path)
    torch.save({"epoch": "eleven", "encoder": tutorial.encoder_sd, "decoder": tutorial.decoder_sd}, path)
    with pytest.raises(CheckpointError, match="'epoch' is a str"):
        load_tutorial_checkpoint(path)
    torch.save(tutorial.decoder_sd["fc.weight"], path)
    with pytest.raises(CheckpointError, match="expected the tutorial's dict"):
        load_tutorial_checkpoint(path)


def test_wrong_architecture(tutorial, tmp_path):
    path = tmp_path / "arch.pth"
    dec = dict(tutorial.decoder_sd)
    del dec["decode_step.bias_hh"]
    dec["extra.weight"] = torch.zeros(2)
    torch.save({"encoder": tutorial.encoder_sd, "decoder": dec}, path)
    with pytest.raises(CheckpointError) as info:
        captioner_from_checkpoint(load_tutorial_checkpoint(path), tutorial.vocab)
    msg = str(info.value)
    assert "wrong architecture for the decoder" in msg and "decode_step.bias_hh" in msg and "extra.weight" in msg

    dec = dict(tutorial.decoder_sd)
    dec["f_beta.weight"] = torch.zeros(5, 5)
    torch.save({"encoder": tutorial.encoder_sd, "decoder": dec}, path)
    with pytest.raises(CheckpointError, match=r"shape mismatch f_beta.weight \(5, 5\)"):
        captioner_from_checkpoint(load_tutorial_checkpoint(path), tutorial.vocab)

    enc = {k: v for k, v in tutorial.encoder_sd.items() if not k.startswith("resnet.7.")}
    torch.save({"encoder": enc, "decoder": tutorial.decoder_sd}, path)
    with pytest.raises(CheckpointError, match=r"wrong architecture: encoder stage 'resnet.7'"):
        captioner_from_checkpoint(load_tutorial_checkpoint(path), tutorial.vocab)


def test_vocab_size_mismatch(tutorial, tmp_path):
    wm = _save_json(tmp_path / "WORDMAP_other.json", Vocabulary.synthetic(VOCAB + 4))
    with pytest.raises(CheckpointError) as info:
        load_captioner(tutorial.ckpt, wm)
    msg = str(info.value)
    assert str(tutorial.ckpt) in msg and str(wm) in msg and f"{VOCAB} words" in msg and f"has {VOCAB + 4}" in msg


def test_bad_word_map_is_a_checkpoint_error(tutorial, tmp_path):
    with pytest.raises(CheckpointError, match="word map not found"):
        load_captioner(tutorial.ckpt, tmp_path / "missing.json")


def test_cli_exports_a_tutorial_checkpoint_with_parity(tutorial, tmp_path):
    """`mmedge export captioner --checkpoint --word-map` -> an artifact that passes parity."""
    from typer.testing import CliRunner

    from mmedge.cli import app
    from mmedge.runtime import load

    runner = CliRunner()
    res = runner.invoke(app, ["export", "captioner", "--checkpoint", str(tutorial.ckpt), "--word-map",
                              str(tutorial.word_map), "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    art = Path(json.loads(res.stdout)["artifacts"][0])
    assert art.name == "captioner-checkpoint-onnx-fp32"
    cap = load(art)
    assert cap.vocab.word_map == tutorial.vocab.word_map
    res = runner.invoke(app, ["parity", "--artifact", str(art), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["ok"] is True
