"""Write a random TRELLIS.2 checkpoint in the exact hub layout (tests, CI, GPU benchmarks).

Layout (same file names and json schema as ``microsoft/TRELLIS.2-4B``)::

    DIR/pipeline.json
    DIR/ckpts/<stem>.json + <stem>.safetensors           (flows all-bf16, decoders fp16 torso)
    DIR/microsoft/TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16.{json,safetensors}
    DIR/facebook/dinov3-vitl16-pretrain-lvd1689m/         (transformers DINOv3ViTModel dir)

Cross-repo names in ``pipeline.json`` stay as released; the loader finds them under the root first,
so no download is needed. ``preset="tiny"`` runs end to end on CPU in seconds; ``preset="full"``
uses the released configs (random weights, ~16 GB) for GPU benchmarks. Random weights decode to
noise, so two biases are set to give real-asset token counts: the SS decoder's output bias
(occupancy fraction, calibrated on one SS sample) and the subdivision heads (a fixed set of
``children`` per parent, a z-layer of 2×2 cells, so quads form).
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..fileio import write_atomic
from ..progress import ProgressCallback
from . import loading

STEMS = {
    "sparse_structure_flow_model": "ckpts/ss_flow_img_dit_1_3B_64_bf16",
    "sparse_structure_decoder": "microsoft/TRELLIS-image-large/ckpts/ss_dec_conv3d_16l8_fp16",
    "shape_slat_flow_model_512": "ckpts/slat_flow_img2shape_dit_1_3B_512_bf16",
    "shape_slat_flow_model_1024": "ckpts/slat_flow_img2shape_dit_1_3B_1024_bf16",
    "shape_slat_decoder": "ckpts/shape_dec_next_dc_f16c32_fp16",
    "tex_slat_flow_model_512": "ckpts/slat_flow_imgshape2tex_dit_1_3B_512_bf16",
    "tex_slat_flow_model_1024": "ckpts/slat_flow_imgshape2tex_dit_1_3B_1024_bf16",
    "tex_slat_decoder": "ckpts/tex_dec_next_dc_f16c32_fp16",
}
DINO_NAME = "facebook/dinov3-vitl16-pretrain-lvd1689m"

_FLOW = {"model_channels": 1536, "cond_channels": 1024, "num_blocks": 30, "num_heads": 12, "mlp_ratio": 5.3334,
         "pe_mode": "rope", "share_mod": True, "initialization": "scaled", "qk_rms_norm": True,
         "qk_rms_norm_cross": True, "dtype": "bfloat16"}
_VAE = {"model_channels": [1024, 512, 256, 128, 64], "latent_channels": 32, "num_blocks": [4, 16, 8, 4, 0],
        "block_type": ["SparseConvNeXtBlock3d"] * 5, "up_block_type": ["SparseResBlockC2S3d"] * 4,
        "block_args": [{"use_checkpoint": False}] * 3 + [{"use_checkpoint": True}] * 2, "use_fp16": True}
#: the released configs (spec generator.md §2.1, ovoxel-and-export.md §1.1, §2.1)
FULL_CONFIGS: dict[str, dict[str, Any]] = {
    "sparse_structure_flow_model": {"name": "SparseStructureFlowModel", "args": {
        "resolution": 16, "in_channels": 8, "out_channels": 8, **_FLOW}},
    "sparse_structure_decoder": {"name": "SparseStructureDecoder", "args": {
        "out_channels": 1, "latent_channels": 8, "num_res_blocks": 2, "num_res_blocks_middle": 2,
        "channels": [512, 128, 32], "use_fp16": True}},
    "shape_slat_flow_model_512": {"name": "SLatFlowModel", "args": {
        "resolution": 32, "in_channels": 32, "out_channels": 32, **_FLOW}},
    "shape_slat_flow_model_1024": {"name": "SLatFlowModel", "args": {
        "resolution": 64, "in_channels": 32, "out_channels": 32, **_FLOW}},
    "shape_slat_decoder": {"name": "FlexiDualGridVaeDecoder", "args": {"resolution": 256, **_VAE}},
    "tex_slat_flow_model_512": {"name": "SLatFlowModel", "args": {
        "resolution": 32, "in_channels": 64, "out_channels": 32, **_FLOW}},
    "tex_slat_flow_model_1024": {"name": "SLatFlowModel", "args": {
        "resolution": 32, "in_channels": 64, "out_channels": 32, **_FLOW}},
    "tex_slat_decoder": {"name": "SparseUnetVaeDecoder", "args": {"out_channels": 6, **_VAE, "pred_subdiv": False}},
}
FULL_DINO = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16}
TINY_DINO = {"hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}


def tiny_configs() -> dict[str, dict[str, Any]]:
    """Released structure (block types, dtype flags, I/O widths, 64³ occupancy), tiny widths/depths;
    the SS flow runs on 8³ with one more ×2 decoder stage so CPU tests stay fast."""
    cfgs = copy.deepcopy(FULL_CONFIGS)
    for key, c in cfgs.items():
        a = c["args"]
        if "num_heads" in a:
            a.update(model_channels=32, cond_channels=32, num_blocks=2, num_heads=2)
            if key == "sparse_structure_flow_model":    # 8³ noise (512 tokens, not 4096): CPU-cheap
                a.update(resolution=8)
        elif key == "sparse_structure_decoder":         # three ×2 pixel shuffles: 8³ -> 64³ as released
            a.update(channels=[8, 8, 8, 4], num_res_blocks=1, num_res_blocks_middle=1)
        else:
            a.update(model_channels=[32, 16, 8, 8, 8], num_blocks=[1, 1, 1, 1, 0])
    return cfgs


def pipeline_json(steps: int = 12) -> dict[str, Any]:
    """pipeline.json with the released sampler settings and normalisation (spec §1.2, §6.4)."""
    from .normalization import SHAPE_MEAN, SHAPE_STD, TEX_MEAN, TEX_STD

    def sampler(guidance: float, rescale: float, interval: list[float], rescale_t: float) -> dict[str, Any]:
        return {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": 1e-5},
                "params": {"steps": steps, "guidance_strength": guidance, "guidance_rescale": rescale,
                           "guidance_interval": interval, "rescale_t": rescale_t}}
    return {"name": loading.PIPELINE_NAME, "args": {
        "models": dict(STEMS),
        "sparse_structure_sampler": sampler(7.5, 0.7, [0.6, 1.0], 5.0),
        "shape_slat_sampler": sampler(7.5, 0.5, [0.6, 1.0], 3.0),
        "tex_slat_sampler": sampler(1.0, 0.0, [0.6, 0.9], 3.0),
        "shape_slat_normalization": {"mean": SHAPE_MEAN, "std": SHAPE_STD},
        "tex_slat_normalization": {"mean": TEX_MEAN, "std": TEX_STD},
        "image_cond_model": {"name": "DinoV3FeatureExtractor", "args": {"model_name": DINO_NAME}},
        "rembg_model": {"name": "BiRefNet", "args": {"model_name": "briaai/RMBG-2.0"}},
        "low_vram": False,
        "default_pipeline_type": "1024_cascade",
    }}


@torch.no_grad()
def randomize(model: nn.Module, gen: torch.Generator) -> None:
    """Weights N(0, 1/fan_in), biases N(0, 0.05²), norm gains 1 + N(0, 0.1²), modulation randn/√C."""
    for name, p in model.named_parameters():
        def randn() -> torch.Tensor:
            return torch.randn(p.shape, generator=gen, device=gen.device, dtype=torch.float32)
        if name.endswith("modulation"):
            v = randn() / math.sqrt(p.numel() / 6)
        elif p.dim() >= 2:
            v = randn() / math.sqrt(p[0].numel())
        elif "norm" in name and (name.endswith("weight") or name.endswith("gamma")):
            v = 1 + 0.1 * randn()
        else:
            v = 0.05 * randn()
        p.copy_(v.to(p.device, p.dtype))


@torch.no_grad()
def set_children(decoder: nn.Module, children: int) -> None:
    """Subdivision heads keep children k < ``children`` (a full 2×2 z-layer for 4) with a ±4 bias."""
    for m in decoder.modules():
        head = getattr(m, "to_subdiv", None)
        if head is not None:
            head.weight.mul_(0.05)
            head.bias.copy_(torch.where(torch.arange(8, device=head.bias.device) < children, 4.0, -4.0))


def build_random(config: dict[str, Any], gen: torch.Generator, device: torch.device) -> nn.Module:
    loading._class_for(config["name"])      # import outside the meta context
    with torch.device("meta"):
        model = loading.build_model(config)
    model = model.to_empty(device=device)
    randomize(model, gen)
    return model


def save_stem(model: nn.Module, config: dict[str, Any], stem: Path, all_bf16: bool) -> None:
    """``stem.json`` + ``stem.safetensors`` (flows store every tensor in bf16, like the release)."""
    from safetensors.torch import save

    state = {k: (v.to(torch.bfloat16) if all_bf16 else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(Path(f"{stem}.json"), json.dumps(config, indent=1).encode())
    write_atomic(Path(f"{stem}.safetensors"), save(state, metadata={"format": "pt"}))


def write_dino(path: Path, sizes: dict[str, int], seed: int, device: torch.device | None = None) -> None:
    """transformers DINOv3ViTModel folder with its own random init (drawn on ``device``: fast on a GPU)."""
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(seed)
    cfg = DINOv3ViTConfig(patch_size=16, hidden_act="gelu", layer_norm_eps=1e-5, rope_theta=100.0,
                          num_register_tokens=4, layerscale_value=1.0, query_bias=True, key_bias=False,
                          value_bias=True, proj_bias=True, mlp_bias=True, use_gated_mlp=False,
                          pos_embed_rescale=2.0, **sizes)
    from .conditioning import _quiet_transformers
    with _quiet_transformers(), torch.device(device or "cpu"):
        DINOv3ViTModel(cfg).eval().save_pretrained(str(path))


def calibrate_structure(root: Path, target_tokens: int, device: torch.device, seed: int = 0) -> float:
    """Shift the SS decoder's output bias so one SS sample has about ``target_tokens`` cells at 32³."""
    from PIL import Image

    from .pipeline import Trellis2Pipeline
    pipe = Trellis2Pipeline.from_pretrained(str(root), device=device, precision="native" if device.type == "cuda" else "float32")
    gen = torch.Generator("cpu").manual_seed(seed)
    img = Image.fromarray((np.random.default_rng(seed).random((64, 64, 3)) * 255).astype(np.uint8))
    cond = pipe.conditioner([img], 512)
    flow = pipe.model("sparse_structure_flow_model")
    r = flow.config.resolution
    noise = torch.randn(1, flow.config.in_channels, r, r, r, generator=gen).to(device)
    z = pipe._sample("sparse_structure_flow_model", "sparse_structure_sampler", noise, cond, None, None,
                     lambda i, n: None, {})
    with torch.inference_mode():
        logits = pipe.model("sparse_structure_decoder")(z).float()
        pooled = torch.nn.functional.max_pool3d(logits, 2, 2).flatten()
    k = max(1, min(target_tokens, pooled.numel()))
    thr = float(pooled.topk(k).values[-1]) - 1e-4
    return thr


def write_checkpoint(out_dir: str | Path, preset: str = "tiny", *, seed: int = 0, device: str | None = None,
                     steps: int | None = None, ss_tokens: int | None = None, children: int = 4,
                     link_1024: bool = False, progress: ProgressCallback | None = None) -> Path:
    """Write the whole layout; returns the root. ``ss_tokens``: target occupied 32³ cells.
    ``link_1024``: the 1024 flows' weights are symlinks to the 512 ones (same shapes; saves 5 GB of
    writing in GPU benchmarks, where the weights' values do not matter)."""
    if preset not in ("tiny", "full"):
        raise ValueError(f"preset must be 'tiny' or 'full', got {preset!r}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    configs = FULL_CONFIGS if preset == "full" else tiny_configs()
    gen = torch.Generator(dev).manual_seed(seed)
    for i, (key, cfg) in enumerate(configs.items()):
        twin = key.replace("_1024", "_512")
        if link_1024 and key.endswith("_1024") and twin in configs:
            stem = root / STEMS[key]
            write_atomic(Path(f"{stem}.json"), json.dumps(cfg, indent=1).encode())
            Path(f"{stem}.safetensors").unlink(missing_ok=True)
            Path(f"{stem}.safetensors").symlink_to(Path(f"{root / STEMS[twin]}.safetensors").resolve())
            continue
        model = build_random(cfg, gen, dev)
        if "decoder" in key and "slat" in key:
            set_children(model, children)
        save_stem(model, cfg, root / STEMS[key], all_bf16="flow" in key)
        del model
        if progress is not None:
            from ..progress import ProgressEvent
            progress(ProgressEvent("write", (i + 1) / (len(configs) + 2), message=key))
    write_dino(root / DINO_NAME, FULL_DINO if preset == "full" else TINY_DINO, seed, dev)
    write_atomic(root / "pipeline.json", json.dumps(pipeline_json(steps or (12 if preset == "full" else 3)),
                                                    indent=1).encode())
    # calibrate occupancy: shift the last conv's bias by the threshold of the wanted token count
    target = ss_tokens or (8192 if preset == "full" else 24)
    thr = calibrate_structure(root, target, dev, seed)
    stem = root / STEMS["sparse_structure_decoder"]
    from safetensors.torch import load_file, save
    state = load_file(f"{stem}.safetensors")
    state["out_layer.2.bias"] = state["out_layer.2.bias"] - thr
    write_atomic(Path(f"{stem}.safetensors"), save(state, metadata={"format": "pt"}))
    return root
