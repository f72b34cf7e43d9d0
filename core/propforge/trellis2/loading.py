"""Checkpoint resolution and strict loading (spec generator.md §1).

A pipeline root is a local folder or a hub id (``microsoft/TRELLIS.2-4B``); ``pipeline.json`` names
model *stems* (``ckpts/x`` -> ``ckpts/x.json`` + ``ckpts/x.safetensors``), first under the root, then
as ``owner/repo/rest`` in another hub repo (how the SS decoder lives in TRELLIS-image-large).
Upstream loads non-strictly, so a renamed key silently keeps random weights; here every missing,
unexpected or mis-shaped tensor is an error naming it. Items the spec marks [C] are checked here.
"""
from __future__ import annotations

import importlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelLoadError

DEFAULT_MODEL = "microsoft/TRELLIS.2-4B"
PIPELINE_NAME = "Trellis2ImageTo3DPipeline"

#: the 8 models the image->3D pipeline loads (spec §1.2)
PIPELINE_MODEL_KEYS = (
    "sparse_structure_flow_model", "sparse_structure_decoder",
    "shape_slat_flow_model_512", "shape_slat_flow_model_1024", "shape_slat_decoder",
    "tex_slat_flow_model_512", "tex_slat_flow_model_1024", "tex_slat_decoder",
)
SAMPLER_NAMES = ("FlowEulerSampler", "FlowEulerCfgSampler", "FlowEulerGuidanceIntervalSampler")
SAMPLER_KEYS = ("sparse_structure_sampler", "shape_slat_sampler", "tex_slat_sampler")

#: upstream class name -> "module:attr" (imported lazily so flows load without sparse ops)
MODEL_CLASSES = {
    "SparseStructureFlowModel": "propforge.trellis2.flow:SparseStructureFlowModel",
    "SLatFlowModel": "propforge.trellis2.flow:SLatFlowModel",
    "ElasticSLatFlowModel": "propforge.trellis2.flow:SLatFlowModel",
    "SparseStructureDecoder": "propforge.trellis2.ss_decoder:SparseStructureDecoder",
    "FlexiDualGridVaeDecoder": "propforge.trellis2.sc_vae:FlexiDualGridVaeDecoder",
    "SparseUnetVaeDecoder": "propforge.trellis2.sc_vae:SparseUnetVaeDecoder",
    "FlexiDualGridVaeEncoder": "propforge.trellis2.sc_vae:FlexiDualGridVaeEncoder",
}
#: buffers upstream recomputes in __init__ and may or may not store (spec §1.3)
OPTIONAL_KEYS = ("rope_phases",)


def _class_for(name: str) -> Any:
    if name not in MODEL_CLASSES:
        raise ModelLoadError(f"unknown model class {name!r}; expected one of {', '.join(MODEL_CLASSES)}")
    mod, attr = MODEL_CLASSES[name].split(":")
    return getattr(importlib.import_module(mod), attr)


def build_model(config: dict[str, Any], source: str = "config", precision: str = "native") -> nn.Module:
    """Instantiate ``{"name", "args"}`` (released ckpt json). precision: "native" (as configured) or "float32"."""
    if not isinstance(config, dict) or "name" not in config or not isinstance(config.get("args"), dict):
        raise ModelLoadError(f"{source}: expected a JSON object with 'name' and 'args'")
    cls = _class_for(config["name"])
    if config["name"].endswith("FlowModel") and "dtype" not in config["args"]:
        warnings.warn(f"{source}: flow config has no 'dtype'; its torso runs in float32 as the reference "
                      "would (spec [C]: the release is expected to say bfloat16)", stacklevel=2)
    try:
        cfg = cls.config_class.from_args(dict(config["args"]))
        if precision == "float32":
            cfg = cfg.as_float32()
        return cls(cfg)
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"{source}: bad arguments for {config['name']}: {e}") from e


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model``; any missing/unexpected/mis-shaped key raises, naming the keys."""
    expected = model.state_dict()
    state = {k: v for k, v in state.items() if k not in OPTIONAL_KEYS or k in expected}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shape = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                 for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_names(unexpected)}")
    if bad_shape:
        problems.append(f"wrong shapes ({len(bad_shape)}): {_names(bad_shape)}")
    if problems:
        raise ModelLoadError(f"{source} does not match {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def _names(items: list[str], limit: int = 8) -> str:
    more = f", ... (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelLoadError(f"missing file {path}")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from e


def load_model_stem(stem: Path, precision: str = "native", device: str | torch.device = "cpu") -> nn.Module:
    """``stem.json`` + ``stem.safetensors`` -> eval-mode model with every tensor loaded."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    cfg_path, w_path = Path(f"{stem}.json"), Path(f"{stem}.safetensors")
    config = read_json(cfg_path)
    if not w_path.is_file():
        raise ModelLoadError(f"missing weights file {w_path}")
    device = torch.device(device)
    if isinstance(config, dict) and config.get("name") in MODEL_CLASSES:
        _class_for(config["name"])        # import outside the meta context (module-level tensors stay real)
    with torch.device("meta"):            # no random init of 1.3 B parameters that are overwritten anyway
        model = build_model(config, str(cfg_path), precision)
    try:
        state = load_file(str(w_path), device=str(device))
    except (SafetensorError, OSError) as e:
        raise ModelLoadError(f"cannot read {w_path}: {e}") from e
    model = model.to_empty(device=device)
    load_state_strict(model, state, str(w_path))
    return model.eval().requires_grad_(False)


# ----------------------------------------------------------------------------------- hub / local

def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_download(repo_id: str, patterns: list[str], cache_dir: str | None) -> Path:
    """snapshot_download restricted to ``patterns``; honours HF_HUB_OFFLINE (cache only)."""
    try:
        from huggingface_hub import snapshot_download
        path = snapshot_download(repo_id, allow_patterns=patterns, cache_dir=cache_dir,
                                 local_files_only=hub_offline())
    except Exception as e:  # hub raises many types (offline, gated, not found, network)
        mode = "offline (HF_HUB_OFFLINE set), not in the cache" if hub_offline() else "download failed"
        raise ModelLoadError(f"cannot get {', '.join(patterns)} from hub repo {repo_id!r}: {mode}: "
                             f"{type(e).__name__}: {e}") from e
    return Path(path)


def looks_like_hub_id(ref: str) -> bool:
    parts = ref.split("/")
    return len(parts) == 2 and all(parts) and not ref.startswith((".", "/", "~"))


def resolve_root(model: str, cache_dir: str | None = None) -> Path:
    """Local folder holding pipeline.json, or a hub id fetched (pipeline.json only) into the cache."""
    p = Path(model).expanduser()
    if p.is_dir():
        if not (p / "pipeline.json").is_file():
            raise ModelLoadError(f"{p} has no pipeline.json (expected the layout of {DEFAULT_MODEL})")
        return p
    if looks_like_hub_id(model):
        return hub_download(model, ["pipeline.json"], cache_dir)
    raise ModelLoadError(f"model {model!r} is neither a folder nor a hub id like {DEFAULT_MODEL!r}")


def resolve_stem(root: Path, root_id: str | None, ref: str, cache_dir: str | None) -> Path:
    """Spec §1.3: try ``<root>/<ref>``, then ``ref`` as ``owner/repo/rest`` on the hub (or a local path)."""
    def local(stem: Path) -> bool:
        return Path(f"{stem}.json").is_file() and Path(f"{stem}.safetensors").is_file()

    if local(root / ref):
        return root / ref
    if root_id is not None and not Path(root_id).is_dir():
        try:
            got = hub_download(root_id, [f"{ref}.json", f"{ref}.safetensors"], cache_dir)
            if local(got / ref):
                return got / ref
        except ModelLoadError:
            pass
    if local(Path(ref).expanduser()):
        return Path(ref).expanduser()
    parts = ref.split("/")
    if len(parts) >= 3 and not local(root / ref):
        repo, rest = "/".join(parts[:2]), "/".join(parts[2:])
        got = hub_download(repo, [f"{rest}.json", f"{rest}.safetensors"], cache_dir)
        if local(got / rest):
            return got / rest
    missing = [str(p) for p in (Path(f"{root / ref}.json"), Path(f"{root / ref}.safetensors")) if not p.is_file()]
    raise ModelLoadError(f"checkpoint {ref!r} not found: missing {', '.join(missing)}")


# ---------------------------------------------------------------------------------- pipeline.json

@dataclass
class SamplerSpec:
    name: str
    args: dict[str, Any]
    params: dict[str, Any]


@dataclass
class PipelineConfig:
    """The parts of pipeline.json the image->3D pipeline reads, validated."""

    models: dict[str, str]
    samplers: dict[str, SamplerSpec]
    shape_norm: tuple[list[float], list[float]]
    tex_norm: tuple[list[float], list[float]]
    image_cond_model: dict[str, Any]
    rembg_model: dict[str, Any] | None
    default_pipeline_type: str = "1024_cascade"
    low_vram: bool = True
    extras: dict[str, Any] = field(default_factory=dict)


def parse_pipeline_json(doc: dict[str, Any], source: str) -> PipelineConfig:
    """Check every [C] item of spec §1.2 and say exactly which one differs."""
    def fail(msg: str) -> ModelLoadError:
        return ModelLoadError(f"{source}: {msg}")

    if doc.get("name") != PIPELINE_NAME:
        raise fail(f"pipeline name is {doc.get('name')!r}, expected {PIPELINE_NAME!r}")
    args = doc.get("args")
    if not isinstance(args, dict):
        raise fail("no 'args' object")
    models = args.get("models")
    if not isinstance(models, dict):
        raise fail("no 'args.models' map")
    missing = [k for k in PIPELINE_MODEL_KEYS if not isinstance(models.get(k), str)]
    if missing:
        raise fail(f"'models' lacks {', '.join(missing)}")
    samplers = {}
    for key in SAMPLER_KEYS:
        s = args.get(key)
        if not isinstance(s, dict) or s.get("name") not in SAMPLER_NAMES:
            raise fail(f"{key}.name must be one of {', '.join(SAMPLER_NAMES)}, got "
                       f"{(s or {}).get('name') if isinstance(s, dict) else s!r}")
        samplers[key] = SamplerSpec(s["name"], dict(s.get("args") or {}), dict(s.get("params") or {}))
    norms = []
    for key in ("shape_slat_normalization", "tex_slat_normalization"):
        n = args.get(key)
        ok = isinstance(n, dict) and all(isinstance(n.get(f), list) and len(n[f]) == 32 for f in ("mean", "std"))
        if not ok:
            raise fail(f"{key} must hold 'mean' and 'std' lists of 32 numbers")
        if min(n["std"]) <= 0:
            raise fail(f"{key}.std has a non-positive value")
        norms.append((list(map(float, n["mean"])), list(map(float, n["std"]))))
    icm = args.get("image_cond_model")
    if not isinstance(icm, dict) or icm.get("name") != "DinoV3FeatureExtractor":
        raise fail(f"image_cond_model.name must be 'DinoV3FeatureExtractor', got "
                   f"{icm.get('name') if isinstance(icm, dict) else icm!r}")
    if not isinstance((icm.get("args") or {}).get("model_name"), str):
        raise fail("image_cond_model.args.model_name is missing")
    rembg = args.get("rembg_model")
    if rembg is not None and (not isinstance(rembg, dict) or rembg.get("name") != "BiRefNet"):
        raise fail(f"rembg_model.name must be 'BiRefNet', got {rembg!r}")
    from ..options import PIPELINE_TYPES
    default = args.get("default_pipeline_type", "1024_cascade")
    if default not in PIPELINE_TYPES:
        raise fail(f"default_pipeline_type {default!r} is not one of {', '.join(PIPELINE_TYPES)}")
    return PipelineConfig(models={k: models[k] for k in PIPELINE_MODEL_KEYS}, samplers=samplers,
                          shape_norm=norms[0], tex_norm=norms[1], image_cond_model=icm, rembg_model=rembg,
                          default_pipeline_type=default, low_vram=bool(args.get("low_vram", True)))


def check_model_set(models: dict[str, nn.Module]) -> None:
    """Cross-checks between checkpoints (channel counts the pipeline wires together)."""
    def cfg(key: str) -> Any:
        return models[key].config if key in models else None

    ss, ssd = cfg("sparse_structure_flow_model"), cfg("sparse_structure_decoder")
    problems = []
    if ss and ssd and ss.in_channels != ssd.latent_channels:
        problems.append(f"SS flow has {ss.in_channels} channels but the SS decoder expects {ssd.latent_channels}")
    for key in ("shape_slat_flow_model_512", "shape_slat_flow_model_1024"):
        c = cfg(key)
        if c and not (c.in_channels == c.out_channels == 32):
            problems.append(f"{key} must map 32 -> 32 channels, has {c.in_channels} -> {c.out_channels}")
    for key in ("tex_slat_flow_model_512", "tex_slat_flow_model_1024"):
        c = cfg(key)
        if c and not (c.in_channels == 64 and c.out_channels == 32):
            problems.append(f"{key} must map 64 (32 noise + 32 shape) -> 32 channels, has "
                            f"{c.in_channels} -> {c.out_channels}")
    conds = {k: m.config.cond_channels for k, m in models.items() if hasattr(m.config, "cond_channels")}
    if len(set(conds.values())) > 1:
        problems.append(f"flow models disagree on cond_channels: {conds}")
    for key in ("shape_slat_decoder", "tex_slat_decoder"):
        c = cfg(key)
        if c and c.latent_channels != 32:
            problems.append(f"{key} expects {c.latent_channels} latent channels, the flows give 32")
    if problems:
        raise ModelLoadError("checkpoint set is inconsistent: " + "; ".join(problems))
