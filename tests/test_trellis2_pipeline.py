"""The trellis2 path end to end on CPU with a tiny random checkpoint in the exact hub layout.

``propforge make-tiny-checkpoint`` writes it (once per module); the tests run image -> GLB through
the same API the CLI and server use, check the validator, progress, seeds, cancellation, the
cascade's token budget, and that broken checkpoints fail with messages naming the problem.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_cutout
from propforge.errors import Cancelled, ModelLoadError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    from propforge_server.cli import main

    root = tmp_path_factory.mktemp("trellis2") / "tiny"
    assert main(["make-tiny-checkpoint", str(root)]) == 0
    return root


@pytest.fixture(scope="module")
def generator(tiny_root: Path):
    from propforge.generators import load_generator
    return load_generator("trellis2", model=str(tiny_root))


def broken_copy(tiny_root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_root, dst)
    return dst


# ----------------------------------------------------------------------------------- layout

def test_tiny_checkpoint_has_the_hub_layout(tiny_root: Path) -> None:
    doc = json.loads((tiny_root / "pipeline.json").read_text())
    assert doc["name"] == "Trellis2ImageTo3DPipeline"
    for key, stem in doc["args"]["models"].items():
        assert (tiny_root / f"{stem}.json").is_file() and (tiny_root / f"{stem}.safetensors").is_file(), key
    assert doc["args"]["models"]["sparse_structure_decoder"].startswith("microsoft/TRELLIS-image-large/")
    dino = tiny_root / doc["args"]["image_cond_model"]["args"]["model_name"]
    assert (dino / "config.json").is_file() and (dino / "model.safetensors").is_file()
    from safetensors import safe_open
    with safe_open(str(tiny_root / "ckpts/ss_flow_img_dit_1_3B_64_bf16.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}      # flows ship all-bf16


def test_make_tiny_checkpoint_refuses_a_non_empty_folder(tmp_path: Path, capsys) -> None:
    from propforge_server.cli import main

    (tmp_path / "x.txt").write_text("keep me")
    assert main(["make-tiny-checkpoint", str(tmp_path)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "x.txt").read_text() == "keep me"


# ------------------------------------------------------------------------------- end to end

def test_image_to_valid_glb_with_progress(tiny_root: Path, generator, assert_valid_glb) -> None:
    from propforge.api import generate_glb
    from propforge.options import GenerateOptions

    events = []
    res = generate_glb(make_cutout(96), GenerateOptions(backend="trellis2", model=str(tiny_root),
                                                        pipeline_type="512", seed=7),
                       progress=events.append, generator=generator)
    assert res.backend == "trellis2"
    assert_valid_glb(res.glb)
    stages = [e.stage for e in events]
    for stage in ("prepare", "condition", "structure", "shape", "texture", "decode", "write"):
        assert stage in stages, f"no progress for {stage}"
    steps = [(e.step, e.total) for e in events if e.stage == "structure" and e.step]
    assert steps == [(i, 3) for i in range(1, 4)], steps           # one event per sampler step
    fr = [e.fraction for e in events]
    assert fr == sorted(fr) and fr[-1] == pytest.approx(1.0)


def test_seed_reproduces_and_changes_the_asset(generator) -> None:
    img = make_cutout(80, "L")
    a = generator.generate(img, seed=11, pipeline_type="512").ovoxel
    b = generator.generate(img, seed=11, pipeline_type="512").ovoxel
    c = generator.generate(img, seed=12, pipeline_type="512").ovoxel
    assert a.resolution == 512 and a.num_voxels > 0
    np.testing.assert_array_equal(a.coords, b.coords)
    np.testing.assert_array_equal(a.attrs, b.attrs)
    assert a.coords.shape != c.coords.shape or not np.array_equal(a.attrs, c.attrs)


def test_cascade_respects_the_token_budget(generator) -> None:
    """1536 cascade with a budget of 1 token walks 1536 -> 1024 and decodes at the reduced R."""
    gen = generator.generate(make_cutout(64), seed=3, pipeline_type="1536_cascade", max_num_tokens=1)
    tried = gen.extras["cascade_tried"]
    assert [r for r, _ in tried] == [1536, 1408, 1280, 1152, 1024]
    assert gen.ovoxel.resolution == 1024 and gen.extras["resolution"] == 1024
    assert gen.ovoxel.coords.max() < 1024
    assert gen.extras["shape_tokens"] == tried[-1][1]


def test_cancel_between_sampler_steps(generator) -> None:
    seen = []

    def cancel(ev) -> None:
        seen.append((ev.stage, ev.step))
        if ev.stage == "structure" and ev.step == 1:
            raise Cancelled("stop")
    with pytest.raises(Cancelled):
        generator.generate(make_cutout(64), seed=1, pipeline_type="512", progress=cancel)
    assert ("structure", 1) in seen
    assert not any(stage in ("shape", "texture", "decode") for stage, _ in seen)


def test_image_without_alpha_needs_the_background_remover(generator, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    opaque = Image.new("RGB", (64, 64), (200, 30, 30))
    with pytest.raises(ModelLoadError, match="(?s)background remover.*RGBA cut-out"):
        generator.generate(opaque, seed=0, pipeline_type="512")


# ----------------------------------------------------------------------------- loading errors

def test_missing_weights_file_is_named(tiny_root: Path, tmp_path: Path) -> None:
    from propforge.trellis2.backend import Trellis2Generator

    root = broken_copy(tiny_root, tmp_path)
    (root / "ckpts/tex_dec_next_dc_f16c32_fp16.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"tex_dec_next_dc_f16c32_fp16\.safetensors"):
        Trellis2Generator(model=str(root))


def _rewrite(stem: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(f"{stem}.safetensors")
    edit(state)
    save_file(state, f"{stem}.safetensors")


def test_wrong_key_is_named(tiny_root: Path, tmp_path: Path) -> None:
    from propforge.trellis2.loading import load_model_stem

    stem = broken_copy(tiny_root, tmp_path) / "ckpts/slat_flow_img2shape_dit_1_3B_512_bf16"
    _rewrite(stem, lambda s: s.__setitem__("blocks.1.mlp.fc1.weight", s.pop("blocks.1.mlp.mlp.0.weight")))
    with pytest.raises(ModelLoadError) as err:
        load_model_stem(stem)
    msg = str(err.value)
    assert "missing keys (1): blocks.1.mlp.mlp.0.weight" in msg
    assert "unexpected keys (1): blocks.1.mlp.fc1.weight" in msg


def test_wrong_shape_is_named(tiny_root: Path, tmp_path: Path) -> None:
    from propforge.trellis2.loading import load_model_stem

    stem = broken_copy(tiny_root, tmp_path) / "ckpts/shape_dec_next_dc_f16c32_fp16"
    _rewrite(stem, lambda s: s.__setitem__("blocks.0.0.conv.weight", s["blocks.0.0.conv.weight"][:16].contiguous()))
    with pytest.raises(ModelLoadError, match=r"wrong shapes \(1\): blocks\.0\.0\.conv\.weight: file \(16, 3, 3, 3, 32\)"
                                             r" vs model \(32, 3, 3, 3, 32\)"):
        load_model_stem(stem)


def test_rope_table_may_be_stored(tiny_root: Path, tmp_path: Path) -> None:
    """Upstream recomputes the SS flow's rope_phases buffer; a file that stores it still loads."""
    from propforge.trellis2.loading import load_model_stem

    stem = broken_copy(tiny_root, tmp_path) / "ckpts/ss_flow_img_dit_1_3B_64_bf16"
    _rewrite(stem, lambda s: s.__setitem__("rope_phases", torch.zeros(4096, 8)))
    assert load_model_stem(stem).config.resolution == json.loads(Path(f"{stem}.json").read_text())["args"]["resolution"]


def test_unknown_class_and_bad_args(tiny_root: Path, tmp_path: Path) -> None:
    from propforge.trellis2.loading import load_model_stem

    root = broken_copy(tiny_root, tmp_path)
    stem = root / "ckpts/tex_dec_next_dc_f16c32_fp16"
    cfg = json.loads(Path(f"{stem}.json").read_text())
    Path(f"{stem}.json").write_text(json.dumps({**cfg, "name": "SparseUnetVaeDecoderV2"}))
    with pytest.raises(ModelLoadError, match="unknown model class 'SparseUnetVaeDecoderV2'"):
        load_model_stem(stem)
    Path(f"{stem}.json").write_text(json.dumps({**cfg, "args": {**cfg["args"], "window_size": 8}}))
    with pytest.raises(ModelLoadError, match="unsupported SC-VAE args"):
        load_model_stem(stem)


@pytest.mark.parametrize("edit,message", [
    (lambda d: d.__setitem__("name", "Trellis2TexturingPipeline"), "pipeline name is 'Trellis2TexturingPipeline'"),
    (lambda d: d["args"]["models"].pop("shape_slat_decoder"), "'models' lacks shape_slat_decoder"),
    (lambda d: d["args"]["tex_slat_sampler"].__setitem__("name", "DDIM"), "tex_slat_sampler.name must be"),
    (lambda d: d["args"]["shape_slat_normalization"]["std"].pop(), "shape_slat_normalization must hold"),
    (lambda d: d["args"]["image_cond_model"].__setitem__("name", "DinoV2FeatureExtractor"),
     "image_cond_model.name must be 'DinoV3FeatureExtractor'"),
])
def test_pipeline_json_checks(tiny_root: Path, tmp_path: Path, edit, message: str) -> None:
    from propforge.trellis2.backend import Trellis2Generator

    root = broken_copy(tiny_root, tmp_path)
    doc = json.loads((root / "pipeline.json").read_text())
    edit(doc)
    (root / "pipeline.json").write_text(json.dumps(doc))
    with pytest.raises(ModelLoadError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Trellis2Generator(model=str(root))


def test_inconsistent_checkpoints_are_caught(tiny_root: Path, tmp_path: Path) -> None:
    """A texture flow whose input is not 32 noise + 32 shape channels is rejected when loaded."""
    from propforge.trellis2.tiny import build_random, save_stem

    root = broken_copy(tiny_root, tmp_path)
    stem = root / "ckpts/slat_flow_imgshape2tex_dit_1_3B_512_bf16"
    cfg = json.loads(Path(f"{stem}.json").read_text())
    cfg["args"]["in_channels"] = 48
    save_stem(build_random(cfg, torch.Generator().manual_seed(0), torch.device("cpu")), cfg, stem, True)
    from propforge.trellis2.pipeline import Trellis2Pipeline
    pipe = Trellis2Pipeline.from_pretrained(str(root))
    with pytest.raises(ModelLoadError, match="tex_slat_flow_model_512 must map 64"):
        pipe.model("tex_slat_flow_model_512")


def test_hub_id_offline_not_cached(tmp_path: Path, monkeypatch) -> None:
    from propforge.trellis2.backend import Trellis2Generator

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not Trellis2Generator.is_available("nobody/not-a-model")
    with pytest.raises(ModelLoadError, match=r"nobody/not-a-model.*offline"):
        Trellis2Generator(model="nobody/not-a-model", cache_dir=str(tmp_path))


def test_folder_without_pipeline_json(tmp_path: Path) -> None:
    from propforge.trellis2.backend import Trellis2Generator

    assert not Trellis2Generator.is_available(str(tmp_path))
    with pytest.raises(ModelLoadError, match="has no pipeline.json"):
        Trellis2Generator(model=str(tmp_path))


def test_dtype_option_and_environment(tiny_root: Path, monkeypatch) -> None:
    from propforge.errors import InputError
    from propforge.trellis2.backend import Trellis2Generator

    monkeypatch.setenv("PROPFORGE_TRELLIS2_DTYPE", "bfloat16")
    gen = Trellis2Generator(model=str(tiny_root))
    assert gen.pipeline.precision == "native"
    assert gen.pipeline.model("shape_slat_flow_model_512").blocks[0].mlp.mlp[0].weight.dtype == torch.bfloat16
    assert Trellis2Generator(model=str(tiny_root), dtype="float32").pipeline.precision == "float32"
    with pytest.raises(InputError, match="dtype must be"):
        Trellis2Generator(model=str(tiny_root), dtype="int8")


def test_licence_restricted_remover_is_never_the_default(monkeypatch):
    from propforge.trellis2.pipeline import DEFAULT_REMOVER, remover_name

    monkeypatch.delenv("PROPFORGE_REMBG_MODEL", raising=False)
    assert remover_name("briaai/RMBG-2.0") == DEFAULT_REMOVER      # the release's pipeline.json
    assert remover_name(None) == DEFAULT_REMOVER
    assert remover_name("someone/OtherRemover") == "someone/OtherRemover"
    monkeypatch.setenv("PROPFORGE_REMBG_MODEL", "briaai/RMBG-2.0")  # a deliberate choice
    assert remover_name("ZhengPeng7/BiRefNet") == "briaai/RMBG-2.0"
