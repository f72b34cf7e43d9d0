"""O-Voxel -> engine-ready GLB: the export spine every generator feeds (spec §4, adapted for engines).

mesh: dual grid -> clean-up (outward winding) -> decimation to the face budget
uv:   xatlas charting and packing
bake: texel -> 3-D point -> reference surface -> trilinear attribute sample -> textures
lod:   optional LOD1..n in LOD0's atlas (mesh/lod.py) and a collision mesh (mesh/collision.py)
write: glTF frame, metres, pivot, material, metadata -> GLB bytes (written atomically if a path is given)
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..bake import bake_textures, prepare_reference
from ..errors import InputError
from ..fileio import write_atomic
from ..mesh.cleanup import clean_mesh
from ..mesh.collision import collision_mesh, convex_hull
from ..mesh.decimate import decimate
from ..mesh.lod import lod_budgets, lod_levels
from ..mesh.normals import export_normals
from ..mesh.uv import unwrap
from ..options import ExportOptions
from ..ovoxel.dual_grid import ovoxel_to_mesh
from ..progress import ProgressCallback, StagePlan
from ..types import Generation, Mesh, PBRMaterial, TexturedMesh
from .gltf_write import choose_alpha_mode, write_glb

STAGE_WEIGHTS = {"mesh": 4.0, "uv": 2.0, "bake": 3.0, "write": 1.0}
LOD_STAGE_WEIGHTS = {"mesh": 4.0, "uv": 2.0, "bake": 3.0, "lod": 1.0, "write": 1.0}
COLLISION_MESH_FACES = 1500     # concave collision: light enough for physics, close to the shape


def _version() -> str:
    from .. import __version__
    return __version__


def _metadata(generation: Generation, options: ExportOptions, stats: dict[str, Any]) -> dict[str, Any]:
    opts = dict(generation.options)
    opts["export"] = options.to_dict()
    meta = {"generator": generation.generator, "options": opts, "seed": int(generation.seed),
            "source_sha256": generation.source_sha256, "notes": generation.notes,
            "propforge_version": _version(), "stats": stats}
    if generation.extras:
        meta["extras"] = generation.extras
    return meta


def export_glb(generation: Generation, options: ExportOptions | None = None, path: str | os.PathLike | None = None,
               progress: ProgressCallback | None = None, timings: dict[str, float] | None = None,
               unwrap_method: str = "auto") -> bytes:
    """GLB bytes of ``generation`` (and an atomic write to ``path``).

    ``unwrap_method``: "auto" (box charts packed by xatlas), "box" or "xatlas" (see mesh/uv.py).
    ``timings`` collects per-step wall seconds under the step name and process CPU seconds under
    ``"cpu:" + name`` (on a shared machine the CPU figure is the steadier one).
    """
    options = (options or ExportOptions()).validate()
    ov = generation.ovoxel
    if ov.num_voxels == 0:
        raise InputError("nothing to export: the generation has no surface (empty O-Voxel)")
    if not np.isfinite(ov.offsets).all():
        raise InputError("cannot export: the O-Voxel has non-finite dual-vertex offsets (NaN/inf)")
    extras = options.lods > 0 or options.collision != "none"
    plan = StagePlan(progress, LOD_STAGE_WEIGHTS if extras else STAGE_WEIGHTS)
    t = timings if timings is not None else {}
    clock = [time.perf_counter(), time.process_time()]

    def lap(name: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        t[name] = t.get(name, 0.0) + now - clock[0]
        t["cpu:" + name] = t.get("cpu:" + name, 0.0) + cpu - clock[1]
        clock[0], clock[1] = now, cpu

    extent = float((ov.aabb[1] - ov.aabb[0]).max())
    plan("mesh", 0.0, message=f"extracting the surface of {ov.num_voxels} voxels")
    raw = ovoxel_to_mesh(ov)
    lap("dual_grid")
    # the dual grid has one vertex per voxel: no welding, and reference vertex -> voxel row is known
    ref_v, ref_f, ref_voxel = clean_mesh(raw.vertices, raw.faces, extent=extent, weld=False, return_source=True)
    lap("cleanup")
    if len(ref_f) == 0:
        raise InputError("nothing to export: the O-Voxel's surface has no faces after clean-up")
    with ThreadPoolExecutor(1) as pool:     # reference normals + voxel index, overlapping decimation/UV
        reference = pool.submit(prepare_reference, ov, ref_v, ref_f, ref_voxel)
        plan("mesh", 0.5, message=f"decimating {len(ref_f)} faces to at most {options.faces}")
        v, f = decimate(ref_v, ref_f, options.faces, extent=extent)
        lap("decimate")
        plan("uv", 0.0, message=f"unwrapping {len(f)} faces")
        vmap, uv_faces, uvs = unwrap(v, f, options.texture_size, method=unwrap_method)
        lap("uv")
        plan("bake", 0.0, message=f"baking {options.texture_size}px textures")
        ref = reference.result()
        lap("bake_wait")
        tex = bake_textures(ov, v[vmap], uv_faces, uvs, ref, options.texture_size, timings=t)
    lap("bake")
    mode, cutoff = (choose_alpha_mode(tex.base_color[..., 3], tex.coverage) if options.alpha_mode == "auto"
                    else (options.alpha_mode, 0.5))
    material = PBRMaterial(base_color_texture=tex.base_color, metallic_roughness_texture=tex.metallic_roughness,
                           alpha_mode=mode, alpha_cutoff=cutoff, double_sided=False)
    nmap, out_faces, normals = export_normals(v, f, uv_faces)      # auto-smooth: split at creases
    tm = TexturedMesh(v[vmap][nmap], out_faces, uvs=uvs[nmap], normals=normals, material=material)
    stats = {"faces": int(len(out_faces)), "vertices": int(len(nmap)), "reference_faces": int(len(ref_f)),
             "texture_size": options.texture_size, "alpha_mode": mode,
             "texel_coverage": round(float(tex.coverage.mean()), 4)}
    lods: list[TexturedMesh] = []
    collision = None
    if extras:
        lods = _lod_meshes(v, f, vmap, uv_faces, uvs, options.lods, material, extent, plan)
        collision = _collision(v, f, options.collision, extent)
        lap("lod")
        if options.lods:
            stats["lod_faces"] = [int(len(out_faces))] + [int(len(m.faces)) for m in lods]
        if collision is not None:
            stats["collision"] = {"kind": options.collision, "faces": int(len(collision.faces))}
    plan("write", 0.0, message=f"writing GLB ({options.texture_format} textures)")
    glb = write_glb(tm, options.texture_format, options.height, _metadata(generation, options, stats),
                    generator=f"PropForge {_version()}", lods=lods, collision=collision,
                    convex_collision=options.collision == "convex")
    lap("encode")
    if path is not None:
        write_atomic(path, glb)
        lap("write")
    plan("write", 1.0, message=f"{len(glb)} bytes")
    return glb


def _lod_meshes(v: np.ndarray, f: np.ndarray, vmap: np.ndarray, uv_faces: np.ndarray, uvs: np.ndarray,
                levels: int, material: PBRMaterial, extent: float, plan: StagePlan) -> list[TexturedMesh]:
    """LOD1..n in LOD0's atlas, each about half the faces of the one before; a level that cannot get
    below the previous one's face count (tiny meshes, many small pieces) ends the chain."""
    out: list[TexturedMesh] = []
    budgets = lod_budgets(len(f), levels)
    plan("lod", 0.0, step=0, total=levels, message=f"LOD1: at most {budgets[0]} faces" if budgets else "")
    for k, (gv, gf, smap, sf, suv) in enumerate(lod_levels(v, f, vmap, uv_faces, uvs, budgets, extent), 1):
        nmap, faces, normals = export_normals(gv, gf, sf)
        out.append(TexturedMesh(gv[smap][nmap], faces, uvs=suv[nmap], normals=normals, material=material))
        plan("lod", k / max(levels, 1), step=k, total=levels, message=f"LOD{k}: {len(faces)} faces")
    return out


def _collision(v: np.ndarray, f: np.ndarray, kind: str, extent: float) -> Mesh | None:
    """The collision mesh the options ask for, in the internal frame (placed like LOD0 by the writer)."""
    if kind == "convex":
        return Mesh(*convex_hull(v))
    if kind == "mesh":
        return Mesh(*collision_mesh(v, f, min(COLLISION_MESH_FACES, len(f)), extent=extent))
    return None
