"""Intake rules: which files are images, which are option sidecars, when a file is completely
written, and which options apply to an image (CLI defaults < folder ``propforge.json`` files from the
drop root down < ``<image>.propforge.json``)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import fields
from pathlib import Path, PurePosixPath
from typing import Any

from propforge.errors import InputError
from propforge.options import ExportOptions, GenerateOptions

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tga", ".tif", ".tiff"})
FOLDER_SIDECAR = "propforge.json"
SIDECAR_SUFFIX = ".propforge.json"
# Editor/engine/OS droppings and temp files of writers that save via rename: never reported.
_QUIET_SUFFIXES = (".meta", ".import", ".tmp", ".temp", ".part", ".crdownload", ".download", ".swp", "~")
_QUIET_NAMES = frozenset({"thumbs.db", "desktop.ini"})


def is_quiet(name: str) -> bool:
    """Files ignored without a log line: hidden files, engine metadata, partial downloads."""
    low = name.lower()
    return name.startswith(".") or low in _QUIET_NAMES or low.endswith(_QUIET_SUFFIXES)


def is_image_name(name: str) -> bool:
    return not is_quiet(name) and PurePosixPath(name.lower()).suffix in IMAGE_SUFFIXES


def is_sidecar_name(name: str) -> bool:
    return not name.startswith(".") and (name == FOLDER_SIDECAR or name.endswith(SIDECAR_SUFFIX))


def sidecar_target(rel: str) -> tuple[str, bool]:
    """A sidecar's drop-relative path -> (image or folder it configures, is_folder).

    ``props/barrel.png.propforge.json`` and ``props/barrel.propforge.json`` configure images named
    ``barrel.*`` in ``props/``; ``props/propforge.json`` configures every image under ``props/``.
    """
    p = PurePosixPath(rel)
    if p.name == FOLDER_SIDECAR:
        return p.parent.as_posix(), True
    return (p.parent / p.name[: -len(SIDECAR_SUFFIX)]).as_posix(), False


def image_sidecars(drop: Path, rel: str) -> list[Path]:
    """Option files that apply to image ``rel``, weakest first."""
    p = PurePosixPath(rel)
    out: list[Path] = []
    folder = drop
    for part in ("",) + p.parent.parts:
        folder = folder / part if part else folder
        out.append(folder / FOLDER_SIDECAR)
    here = drop / Path(*p.parent.parts)
    out.append(here / (p.stem + SIDECAR_SUFFIX))     # barrel.propforge.json
    out.append(here / (p.name + SIDECAR_SUFFIX))     # barrel.png.propforge.json (wins)
    return [s for s in out if s.is_file()]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_sidecar(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read options file {path.name}: {e}") from e
    if not isinstance(d, dict):
        raise InputError(f"options file {path.name} must hold a JSON object, got {type(d).__name__}")
    export = d.get("export", {})
    if not isinstance(export, dict):
        raise InputError(f"options file {path.name}: \"export\" must be an object")
    unknown = set(export) - {f.name for f in fields(ExportOptions)}
    if unknown:
        raise InputError(f"options file {path.name}: unknown export option(s): {', '.join(sorted(unknown))}")
    return d


def resolve_options(base: dict[str, Any], drop: Path, rel: str) -> tuple[GenerateOptions, list[Path]]:
    """Effective, validated options for image ``rel`` and the sidecars they came from."""
    merged = base
    used = image_sidecars(drop, rel)
    for side in used:
        merged = _merge(merged, _read_sidecar(side))
    try:
        opts = GenerateOptions.from_dict(merged).validate()
    except InputError as e:
        where = f" (from {', '.join(s.name for s in used)})" if used else ""
        raise InputError(f"{e}{where}") from e
    except TypeError as e:
        raise InputError(f"bad options: {e}") from e
    return opts, used


def options_sha256(options: GenerateOptions) -> str:
    """Hash of the effective options: a change regenerates, an unrelated edit does not."""
    return hashlib.sha256(json.dumps(options.to_dict(), sort_keys=True).encode()).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _declared_size(data: bytes) -> int | None:
    """File size a header promises: WebP (RIFF chunk size) and BMP (bfSize)."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return 8 + int.from_bytes(data[4:8], "little")
    if len(data) >= 6 and data[:2] == b"BM":
        return int.from_bytes(data[2:6], "little")
    return None


def self_delimiting(data: bytes) -> bool:
    """Formats whose completeness ``looks_complete`` can tell without decoding."""
    return data[:8] == b"\x89PNG\r\n\x1a\n" or data[:2] == b"\xff\xd8" or _declared_size(data) is not None


def looks_complete(data: bytes) -> bool:
    """Cheap end check: PNG ends with IEND, JPEG with EOI, WebP/BMP are as long as their header says.

    A writer that pauses mid-file leaves a prefix that is still "stable" on disk; this tells us
    to keep waiting instead of decoding (or worse, generating from) half an image.
    """
    if not data:
        return False
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return data.rstrip(b"\x00")[-12:-4] == b"\x00\x00\x00\x00IEND"
    if data[:2] == b"\xff\xd8":
        return data.rstrip(b"\x00")[-2:] == b"\xff\xd9"
    size = _declared_size(data)
    return size is None or len(data) >= size
