"""TRELLIS.2 image -> O-Voxel pipeline: 512, 1024, 1024_cascade and 1536_cascade (spec generator.md §6).

Order as upstream: preprocess -> seed -> cond₅₁₂ (-> cond₁₀₂₄) -> sparse structure -> shape latent
(cascade: LR on 32³, decoder upsampling, requantisation under a token budget, HR) -> texture
latent -> shape + texture decoders. All noise comes from one CPU generator seeded once, drawn in
upstream's order, so the same seed gives upstream's noise. Progress is reported per stage and per
sampler step; a callback that raises ``Cancelled`` stops the job between steps.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from ..errors import InputError, PropForgeError
from ..options import PIPELINE_TYPES
from ..progress import ProgressCallback, StagePlan
from ..sparse import SparseTensor
from . import loading
from .conditioning import BiRefNetRemover, DinoV3Conditioner, preprocess_image
from .samplers import make_sampler
from .ss_decoder import occupied_coords

#: relative cost of each stage on the progress bar
STAGE_WEIGHTS = {"prepare": 1, "condition": 2, "structure": 8, "shape": 30, "texture": 20, "decode": 10}
MAX_NUM_TOKENS = 49152
LR_RESOLUTION = 512


#: MIT-licensed background remover used unless the user names another one.
DEFAULT_REMOVER = "ZhengPeng7/BiRefNet"
#: Removers under non-commercial licences: the released pipeline.json names RMBG-2.0, but we never
#: pick it by default; set PROPFORGE_REMBG_MODEL to use it (or any other) deliberately.
RESTRICTED_REMOVERS = frozenset({"briaai/RMBG-2.0"})


def remover_name(configured: str | None) -> str:
    """The background-removal model to load: explicit env choice, else the config's unless restricted."""
    explicit = os.environ.get("PROPFORGE_REMBG_MODEL")
    if explicit:
        return explicit
    if not configured or configured in RESTRICTED_REMOVERS:
        return DEFAULT_REMOVER
    return configured


@dataclass
class DecodedAsset:
    """Decoder output for one sample: the fields of an O-Voxel at resolution R (numpy, spec §6.5)."""

    coords: np.ndarray        # int32 [N, 3]
    offsets: np.ndarray       # float32 [N, 3]
    flags: np.ndarray         # bool [N, 3]
    split_weight: np.ndarray  # float32 [N]
    attrs: np.ndarray         # float32 [N, 6], ·0.5 + 0.5, unclamped
    resolution: int
    stats: dict[str, Any] = field(default_factory=dict)


def quantize_coords(coords512: torch.Tensor, resolution: int) -> torch.Tensor:
    """Per row ⌊(c + 0.5)/512 · R/16⌋ in fp32 with truncation, batch column copied (spec §6.3)."""
    q = coords512.clone()
    q[:, 1:] = ((coords512[:, 1:].float() + 0.5) / LR_RESOLUTION * (resolution // 16)).int()
    return q


def requantize(coords512: torch.Tensor, resolution: int) -> torch.Tensor:
    """HR tokens: unique rows of the quantised coords, sorted lexicographically."""
    return quantize_coords(coords512, resolution).unique(dim=0)


def cascade_coords(coords512: torch.Tensor, target: int, max_num_tokens: int
                   ) -> tuple[torch.Tensor, int, list[tuple[int, int]]]:
    """Token-budget loop: from ``target`` down by 128 until count < max_num_tokens or R = 1024."""
    resolution, tried = target, []
    while True:
        coords = requantize(coords512, resolution)
        tried.append((resolution, len(coords)))
        if len(coords) < max_num_tokens or resolution == 1024:
            return coords, resolution, tried
        resolution -= 128


class Trellis2Pipeline:
    """Holds the pipeline config and loads each model on first use (``low_vram``: park it on CPU after)."""

    def __init__(self, root: Path, config: loading.PipelineConfig, *, root_id: str | None = None,
                 device: str | torch.device | None = None, precision: str | None = None,
                 cache_dir: str | None = None, low_vram: bool | None = None) -> None:
        self.root, self.root_id, self.config, self.cache_dir = root, root_id, config, cache_dir
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # released dtypes on the GPU; fp32 on CPU where bf16/fp16 kernels are slow or missing
        self.precision = precision or ("native" if self.device.type == "cuda" else "float32")
        if self.precision not in ("native", "float32"):
            raise InputError(f"precision must be 'native' or 'float32', got {self.precision!r}")
        self.low_vram = self._default_low_vram(config.low_vram) if low_vram is None else low_vram
        self.models: dict[str, torch.nn.Module] = {}
        self.stems: dict[str, Path] = {}
        self._conditioner: DinoV3Conditioner | None = None
        self._remover: Callable[[Image.Image], Image.Image] | None = None
        self.samplers = {k: make_sampler(s.name, s.args) for k, s in config.samplers.items()}

    def _default_low_vram(self, configured: bool) -> bool:
        """Keep every model resident where it fits (≥ 32 GiB: no per-stage host<->GPU copies of
        2.6 GB flows); otherwise follow pipeline.json (upstream parks models on the CPU)."""
        if self.device.type != "cuda":
            return False
        total = torch.cuda.get_device_properties(self.device).total_memory
        return configured and total < 32 * 2 ** 30

    @classmethod
    def from_pretrained(cls, model: str = loading.DEFAULT_MODEL, **kwargs: Any) -> "Trellis2Pipeline":
        root = loading.resolve_root(model, kwargs.get("cache_dir"))
        config = loading.parse_pipeline_json(loading.read_json(root / "pipeline.json"), str(root / "pipeline.json"))
        root_id = None if Path(model).expanduser().is_dir() else model
        pipe = cls(root, config, root_id=root_id, **kwargs)
        for key in loading.PIPELINE_MODEL_KEYS:     # fail early on missing files, load weights on first use
            pipe.stem(key)
        return pipe

    # ------------------------------------------------------------------------------- model access
    def stem(self, key: str) -> Path:
        if key not in self.stems:
            self.stems[key] = loading.resolve_stem(self.root, self.root_id, self.config.models[key], self.cache_dir)
        return self.stems[key]

    def model(self, key: str) -> torch.nn.Module:
        """The model for pipeline key ``key`` on the compute device (loaded and checked once)."""
        if key not in self.models:
            m = loading.load_model_stem(self.stem(key), self.precision,
                                        "cpu" if self.low_vram else self.device)
            loading.check_model_set({**self.models, key: m})
            self.models[key] = m
        return self.models[key].to(self.device)

    def release(self, key: str) -> None:
        if self.low_vram and key in self.models:
            self.models[key].to("cpu")

    def load_all(self, keys: tuple[str, ...] = loading.PIPELINE_MODEL_KEYS) -> None:
        for key in keys:
            self.model(key)
            self.release(key)
        _ = self.conditioner

    @property
    def conditioner(self) -> DinoV3Conditioner:
        if self._conditioner is None:
            name = self.config.image_cond_model["args"]["model_name"]
            local = self.root / name
            self._conditioner = DinoV3Conditioner(local if local.is_dir() else name, self.device,
                                                  self.cache_dir, loading.hub_offline())
            widths = {m.config.cond_channels for m in self.models.values() if hasattr(m.config, "cond_channels")}
            if widths and widths != {self.conditioner.width}:
                raise loading.ModelLoadError(f"image encoder width {self.conditioner.width} does not match the "
                                             f"flow models' cond_channels {sorted(widths)}")
        return self._conditioner

    def remove_background(self, image: Image.Image) -> Image.Image:
        if self._remover is None:
            if self.config.rembg_model is None:
                raise InputError("the image has no transparent background and pipeline.json names no "
                                 "background remover; supply an RGBA cut-out")
            name = remover_name(self.config.rembg_model.get("args", {}).get("model_name"))
            local = self.root / name
            self._remover = BiRefNetRemover(str(local if local.is_dir() else name), self.device,
                                            self.cache_dir, loading.hub_offline())
        return self._remover(image)

    # ------------------------------------------------------------------------------------ stages
    def _sample(self, key: str, sampler_key: str, noise: torch.Tensor, cond: torch.Tensor,
                coords: torch.Tensor | None, concat: torch.Tensor | None, on_step: Callable,
                overrides: dict[str, Any]) -> torch.Tensor:
        flow = self.model(key)
        params = {**self.config.samplers[sampler_key].params, **overrides}
        neg = torch.zeros_like(cond)
        if coords is None:
            fn = flow
            batch = None
        else:
            def fn(x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
                return flow(x, coords, t, c, concat)
            batch = coords[:, 0].long()
        with torch.inference_mode():
            out = self.samplers[sampler_key].sample(fn, noise, cond, neg_cond=neg, batch=batch,
                                                    num_samples=cond.shape[0], on_step=on_step, **params)
        self.release(key)
        return out.samples

    def sample_structure(self, cond512: torch.Tensor, gen: torch.Generator, ss_res: int,
                         on_step: Callable, overrides: dict[str, Any]) -> torch.Tensor:
        flow = self.model("sparse_structure_flow_model")
        r, c = flow.config.resolution, flow.config.in_channels
        noise = torch.randn(1, c, r, r, r, generator=gen).to(self.device)
        z = self._sample("sparse_structure_flow_model", "sparse_structure_sampler", noise, cond512,
                         None, None, on_step, overrides)
        decoder = self.model("sparse_structure_decoder")
        with torch.inference_mode():
            logits = decoder(z)
        self.release("sparse_structure_decoder")
        if logits.shape[2] % ss_res:
            raise PropForgeError(f"SS decoder output {logits.shape[2]}³ cannot be pooled to {ss_res}³")
        coords = occupied_coords(logits, logits.shape[2] // ss_res)
        if len(coords) == 0:
            raise PropForgeError("the sparse-structure stage found no occupied voxel; try another seed or image")
        return coords

    def _shape_noise(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randn(n, 32, generator=gen).to(self.device)

    def _denorm(self, x: torch.Tensor, norm: tuple[list[float], list[float]]) -> torch.Tensor:
        mean, std = (torch.tensor(v, dtype=x.dtype, device=x.device) for v in norm)
        return x * std + mean

    def decode(self, shape: torch.Tensor, tex: torch.Tensor, coords: torch.Tensor, resolution: int
               ) -> list[DecodedAsset]:
        """Denormalised shape/texture latents at ``coords`` (grid R/16) -> one DecodedAsset per sample."""
        sdec = self.model("shape_slat_decoder")
        with torch.inference_mode():
            h, subs = sdec(SparseTensor(shape, coords))
            offsets, flags, split = sdec.heads(h.feats)
        self.release("shape_slat_decoder")
        tdec = self.model("tex_slat_decoder")
        with torch.inference_mode():
            t, _ = tdec(SparseTensor(tex, coords), guide_subs=subs)
        self.release("tex_slat_decoder")
        if not torch.equal(t.coords, h.coords):
            raise PropForgeError("texture decoder voxels differ from the shape decoder's (internal error)")
        attrs = t.feats * 0.5 + 0.5
        out = []
        c = h.coords.cpu().numpy()
        for b in range(int(coords[:, 0].max()) + 1):
            sel = c[:, 0] == b
            if c[sel, 1:].size and c[sel, 1:].max() >= resolution:
                raise PropForgeError(f"decoded voxel outside the {resolution}³ grid (internal error)")
            out.append(DecodedAsset(c[sel, 1:].astype(np.int32), offsets[sel].float().cpu().numpy(),
                                    flags[sel].cpu().numpy(), split[sel, 0].float().cpu().numpy(),
                                    attrs[sel].float().cpu().numpy(), resolution))
        return out

    # ----------------------------------------------------------------------------------- run
    def run(self, image: Image.Image, *, seed: int = 42, pipeline_type: str | None = None,
            progress: ProgressCallback | None = None, preprocess: bool = True,
            max_num_tokens: int = MAX_NUM_TOKENS, sampler_params: dict[str, dict[str, Any]] | None = None
            ) -> DecodedAsset:
        """Image -> decoded O-Voxel fields for one sample (spec §6.1)."""
        ptype = pipeline_type or self.config.default_pipeline_type
        if ptype not in PIPELINE_TYPES:
            raise InputError(f"pipeline type must be one of {', '.join(PIPELINE_TYPES)}, got {ptype!r}")
        overrides = sampler_params or {}
        unknown = set(overrides) - set(loading.SAMPLER_KEYS)
        if unknown:
            raise InputError(f"unknown sampler stage(s) {sorted(unknown)}; use {', '.join(loading.SAMPLER_KEYS)}")
        plan = StagePlan(progress, STAGE_WEIGHTS)
        timings: dict[str, float] = {}
        peak_gib: dict[str, float] = {}
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        clock = [time.perf_counter()]

        def done(stage: str) -> None:
            """Per-stage wall time and (CUDA) peak allocated memory, then the stage's 100 % event."""
            if cuda:
                torch.cuda.synchronize(self.device)
                peak_gib[stage] = torch.cuda.max_memory_allocated(self.device) / 2 ** 30
                torch.cuda.reset_peak_memory_stats(self.device)
            now = time.perf_counter()
            timings[stage] = timings.get(stage, 0.0) + now - clock[0]
            clock[0] = now
            plan(stage, 1.0)

        def stepper(stage: str, offset: int = 0, total: int | None = None) -> Callable[[int, int], None]:
            def on_step(i: int, n: int) -> None:
                tot = total or n
                plan(stage, (offset + i) / tot, step=offset + i, total=tot)
            return on_step

        plan("prepare", 0.0, message="preprocessing image")
        image = preprocess_image(image, self.remove_background) if preprocess else image.convert("RGB")
        done("prepare")
        gen = torch.Generator("cpu").manual_seed(int(seed))
        plan("condition", 0.0, message="image features")
        cond512 = self.conditioner([image], 512)
        cond1024 = self.conditioner([image], 1024) if ptype != "512" else None
        done("condition")

        ss_res = 64 if ptype == "1024" else 32
        coords = self.sample_structure(cond512, gen, ss_res, stepper("structure"),
                                       overrides.get("sparse_structure_sampler", {}))
        done("structure")
        stats: dict[str, Any] = {"pipeline_type": ptype, "ss_tokens": len(coords)}

        shape_over = overrides.get("shape_slat_sampler", {})
        steps = int({**self.config.samplers["shape_slat_sampler"].params, **shape_over}.get("steps", 50))
        if ptype in ("512", "1024"):
            key, cond, resolution = f"shape_slat_flow_model_{ptype}", (cond512 if ptype == "512" else cond1024), int(ptype)
            shape = self._sample(key, "shape_slat_sampler", self._shape_noise(len(coords), gen), cond, coords, None,
                                 stepper("shape"), shape_over)
        else:
            lr = self._sample("shape_slat_flow_model_512", "shape_slat_sampler", self._shape_noise(len(coords), gen),
                              cond512, coords, None, stepper("shape", 0, 2 * steps), shape_over)
            lr = self._denorm(lr, self.config.shape_norm)
            sdec = self.model("shape_slat_decoder")
            with torch.inference_mode():
                hr = sdec.upsample(SparseTensor(lr, coords), upsample_times=4)
            self.release("shape_slat_decoder")
            target = 1024 if ptype == "1024_cascade" else 1536
            coords, resolution, tried = cascade_coords(hr, target, max_num_tokens)
            stats["cascade_tried"] = tried
            cond = cond1024
            shape = self._sample("shape_slat_flow_model_1024", "shape_slat_sampler",
                                 self._shape_noise(len(coords), gen), cond, coords, None,
                                 stepper("shape", steps, 2 * steps), shape_over)
        shape = self._denorm(shape, self.config.shape_norm)
        stats.update(shape_tokens=len(coords), resolution=resolution)
        done("shape")

        tex_key = "tex_slat_flow_model_512" if ptype == "512" else "tex_slat_flow_model_1024"
        mean, std = (torch.tensor(v, device=self.device) for v in self.config.shape_norm)
        concat = (shape - mean) / std
        tex_in = self.model(tex_key).config.in_channels
        noise = torch.randn(len(coords), tex_in - concat.shape[1], generator=gen).to(self.device)
        tex = self._sample(tex_key, "tex_slat_sampler", noise, cond, coords, concat, stepper("texture"),
                           overrides.get("tex_slat_sampler", {}))
        tex = self._denorm(tex, self.config.tex_norm)
        done("texture")

        asset = self.decode(shape, tex, coords, resolution)[0]
        done("decode")
        asset.stats = {**stats, "voxels": len(asset.coords), "timings_s": timings,
                       **({"peak_gib": peak_gib} if cuda else {})}
        return asset
