"""Image -> conditioning tokens: preprocessing (spec generator.md §5.1) and DINOv3 features (§5.2).

``preprocess_image`` reproduces upstream exactly (alpha > 204 box, half-to-even PIL crop,
premultiply with float32 then truncate); background removal (BiRefNet through transformers) runs
only when the image has no usable alpha. ``DinoV3Conditioner`` walks the transformers
``DINOv3ViTModel`` layer by layer and replaces the model's final norm by a parameter-free one.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import InputError, ModelLoadError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_SIDE = 1024
ALPHA_THRESHOLD = 0.8 * 255          # strictly above: 205..255 count as foreground

#: takes an RGB image, returns it as RGBA with the predicted foreground mask as alpha
BackgroundRemover = Callable[[Image.Image], Image.Image]


def has_usable_alpha(image: Image.Image) -> bool:
    """RGBA with at least one alpha below 255 (other modes count as no alpha, like upstream)."""
    return image.mode == "RGBA" and not bool(np.all(np.asarray(image)[:, :, 3] == 255))


def limit_size(image: Image.Image) -> Image.Image:
    """Downscale so the longer side is at most 1024 (Lanczos, int truncation as upstream)."""
    scale = min(1, MAX_SIDE / max(image.size))
    if scale < 1:
        image = image.resize((int(image.width * scale), int(image.height * scale)), Image.Resampling.LANCZOS)
    return image


def crop_box(alpha: np.ndarray) -> tuple[float, float, float, float]:
    """Square box around alpha > 204 centred on the bbox, side 2·(max extent // 2) (may be .5)."""
    ys, xs = np.nonzero(alpha > ALPHA_THRESHOLD)
    if len(xs) == 0:
        raise InputError("the image's alpha channel has no pixel more than 80% opaque; "
                         "nothing to reconstruct (is the cut-out empty or almost fully transparent?)")
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(x1 - x0, y1 - y0) // 2
    return (cx - half, cy - half, cx + half, cy + half)


def premultiply(rgba: np.ndarray) -> np.ndarray:
    """uint8 RGBA -> uint8 RGB on black, float32 rgb·alpha then truncation (exactly upstream's)."""
    x = rgba.astype(np.float32) / 255
    return (x[:, :, :3] * x[:, :, 3:4] * 255).astype(np.uint8)


def preprocess_image(image: Image.Image, remove_background: BackgroundRemover | None = None) -> Image.Image:
    """User image -> the square RGB premultiplied crop every stage is conditioned on.

    Unlike upstream, greyscale+alpha and palette images with transparency keep their alpha
    (upstream would send them to background removal); RGBA and RGB follow upstream exactly."""
    if image.mode in ("LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
    alpha_ok = has_usable_alpha(image)
    image = limit_size(image)
    if not alpha_ok:
        if remove_background is None:
            raise InputError("the image has no transparent background and no background remover is loaded; "
                             "supply an RGBA cut-out")
        image = remove_background(image.convert("RGB"))
        if image.mode != "RGBA":
            raise InputError("background removal did not return an RGBA image")
    out = image.crop(crop_box(np.asarray(image)[:, :, 3]))
    return Image.fromarray(premultiply(np.asarray(out)))


# -------------------------------------------------------------------------------- background removal

class BiRefNetRemover:
    """BiRefNet / RMBG-2.0 through transformers remote code (spec §5.1 step 3)."""

    def __init__(self, model_name: str, device: str | torch.device = "cpu", cache_dir: str | None = None,
                 offline: bool = False) -> None:
        try:
            from transformers import AutoModelForImageSegmentation
            with _quiet_transformers():
                self.model = AutoModelForImageSegmentation.from_pretrained(
                    model_name, trust_remote_code=True, cache_dir=cache_dir, local_files_only=offline)
        except Exception as e:  # transformers raises OSError/ValueError/ImportError for missing weights or code
            raise ModelLoadError(f"background remover {model_name!r} cannot be loaded"
                                 f"{' offline' if offline else ''}: {type(e).__name__}: {str(e).strip().rstrip('.')}. "
                                 "Use an image with a transparent background (RGBA cut-out) instead.") from e
        self.model.eval().to(device)
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, image: Image.Image) -> Image.Image:
        x = np.asarray(image.resize((1024, 1024), Image.Resampling.BILINEAR)).astype(np.float32) / 255
        t = torch.from_numpy(x).permute(2, 0, 1)
        t = normalize(t, IMAGENET_MEAN, IMAGENET_STD)[None].to(self.device)
        pred = self.model(t)[-1].sigmoid()[0].squeeze().float().cpu()
        mask = Image.fromarray((pred * 255).to(torch.uint8).numpy(), "L").resize(image.size)
        out = image.copy()
        out.putalpha(mask)
        return out


# ------------------------------------------------------------------------------------------- DINOv3

def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """torchvision Normalize on [..., 3, H, W] (same float32 ops)."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device)[:, None, None]
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device)[:, None, None]
    return (x - m) / s


def image_pixels(images: list[Image.Image], size: int) -> torch.Tensor:
    """Resize to size² (Lanczos), RGB, /255, ImageNet-normalise -> [B, 3, size, size] float32."""
    arrs = [np.asarray(im.resize((size, size), Image.Resampling.LANCZOS).convert("RGB")).astype(np.float32) / 255
            for im in images]
    x = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in arrs])
    return normalize(x, IMAGENET_MEAN, IMAGENET_STD)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No 'Loading weights' progress bar on the CLI's stderr while a model loads."""
    from transformers.utils import logging as tlog
    was = tlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            tlog.enable_progress_bar()


def _layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The transformer layer list: ``model.layer`` (transformers 4.x) or ``model.model.layer`` (5.x)."""
    layers = getattr(model, "layer", None)
    if layers is None and hasattr(model, "model"):
        layers = getattr(model.model, "layer", None)
    if layers is None:
        raise ModelLoadError(f"{type(model).__name__} has no layer list (unsupported transformers version)")
    return layers


class DinoV3Conditioner:
    """DINOv3 ViT tokens [B, 1 + 4 + (S/16)², C] with a parameter-free final LayerNorm (spec §5.2)."""

    def __init__(self, model_dir: str | Path, device: str | torch.device = "cpu",
                 cache_dir: str | None = None, offline: bool = False) -> None:
        try:
            from transformers import DINOv3ViTModel
            with _quiet_transformers():
                self.model = DINOv3ViTModel.from_pretrained(str(model_dir), dtype=torch.float32, cache_dir=cache_dir,
                                                            local_files_only=offline, attn_implementation="sdpa")
        except Exception as e:  # missing files, gated repo, offline cache miss
            raise ModelLoadError(f"image encoder {str(model_dir)!r} cannot be loaded"
                                 f"{' offline' if offline else ''}: {type(e).__name__}: {e}") from e
        self.model.eval().requires_grad_(False).to(device)
        self.layers = _layers(self.model)
        self.device = torch.device(device)

    @property
    def width(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels [B, 3, H, W] -> tokens, all layers, no final model norm."""
        x = pixels.to(self.device, torch.float32)
        h = self.model.embeddings(x, bool_masked_pos=None)
        pos = self.model.rope_embeddings(x)
        for layer in self.layers:
            out = layer(h, position_embeddings=pos)
            h = out[0] if isinstance(out, tuple) else out
        return F.layer_norm(h, h.shape[-1:], eps=1e-5)

    def __call__(self, images: list[Image.Image], size: int) -> torch.Tensor:
        if size % 16:
            raise InputError(f"conditioning resolution must be a multiple of 16, got {size}")
        return self.features(image_pixels(images, size))

    def raw_tensor(self, pixels: torch.Tensor) -> torch.Tensor:
        """Tensor path of the upstream extractor: [0, 1] pixels -> normalise -> features."""
        return self.features(normalize(pixels.float(), IMAGENET_MEAN, IMAGENET_STD))
