"""LOD levels and collision meshes in the exported GLB (issues 2, 5, 6): geometry, node names, validator,
Blender import, CLI and the wire options."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pygltflib as gl
import pytest

from conftest import ROOT, make_cutout
from propforge.errors import InputError
from propforge.export import export_glb
from propforge.generators import load_generator
from propforge.mesh.collision import MAX_CONVEX_FACES, convex_hull
from propforge.options import ExportOptions, GenerateOptions

COMPONENT = {5121: np.uint8, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}


def read_accessor(g: gl.GLTF2, index: int) -> np.ndarray:
    a = g.accessors[index]
    view = g.bufferViews[a.bufferView]
    blob = g.binary_blob()
    start = view.byteOffset + (a.byteOffset or 0)
    n = a.count * WIDTH[a.type]
    arr = np.frombuffer(blob, COMPONENT[a.componentType], n, start)
    return arr.reshape(a.count, WIDTH[a.type]) if WIDTH[a.type] > 1 else arr


def node_mesh(g: gl.GLTF2, name: str) -> tuple[gl.Primitive, np.ndarray, np.ndarray]:
    node = next(n for n in g.nodes if n.name == name)
    prim = g.meshes[node.mesh].primitives[0]
    return prim, read_accessor(g, prim.attributes.POSITION).astype(np.float64), \
        read_accessor(g, prim.indices).reshape(-1, 3).astype(np.int64)


@pytest.fixture(scope="module")
def generation():
    return load_generator("relief").generate(make_cutout(128, "L"), seed=0)


def export(generation, **kw) -> tuple[bytes, gl.GLTF2]:
    opts = dict(faces=4000, texture_size=256)
    opts.update(kw)
    glb = export_glb(generation, ExportOptions(**opts))
    return glb, gl.GLTF2.load_from_bytes(glb)


@pytest.fixture(scope="module")
def lod_glb(generation):
    return export(generation, lods=3, collision="convex")


def test_default_output_has_one_node(generation):
    _, g = export(generation)
    assert [n.name for n in g.nodes] == ["prop"] and len(g.meshes) == 1 and g.nodes[0].mesh == 0
    assert "lod_faces" not in g.asset.extras["stats"]
    # plain jobs keep the metadata (and option hashes: result cache, watch mode) they had before LODs
    assert not {"lods", "collision"} & set(g.asset.extras["options"]["export"])


def test_option_dicts_round_trip():
    plain = GenerateOptions()
    assert not {"lods", "collision"} & set(plain.to_dict()["export"])
    rich = GenerateOptions(export=ExportOptions(lods=3, collision="mesh"))
    back = GenerateOptions.from_dict(rich.to_dict())
    assert (back.export.lods, back.export.collision) == (3, "mesh") and back.to_dict() == rich.to_dict()


def test_lod_nodes_are_siblings_under_one_root(lod_glb):
    _, g = lod_glb
    root = g.nodes[g.scenes[0].nodes[0]]
    assert g.scenes[0].nodes == [0] and root.name == "prop" and root.mesh is None
    assert [g.nodes[c].name for c in root.children] == ["prop_LOD0", "prop_LOD1", "prop_LOD2", "prop_LOD3",
                                                        "prop-convcolonly"]


def test_lod_face_counts_halve_and_share_the_material(lod_glb):
    _, g = lod_glb
    counts = []
    for k in range(4):
        prim, v, f = node_mesh(g, f"prop_LOD{k}")
        assert prim.material == 0
        assert prim.attributes.NORMAL is not None and prim.attributes.TEXCOORD_0 is not None
        counts.append(len(f))
    assert len(g.materials) == 1 and len(g.images) == 2          # one texture set for every level
    assert counts[0] == 4000
    assert all(a > b for a, b in zip(counts, counts[1:])), counts
    assert all(counts[k] <= counts[0] >> k for k in range(4)), counts
    assert counts[3] >= 0.5 * (counts[0] >> 3), counts        # still a real level, not a few triangles
    assert g.asset.extras["stats"]["lod_faces"] == counts


def test_lods_keep_shape_and_outward_winding(lod_glb):
    """Each level encloses LOD0's volume (within 3 %) and its faces face the same way as LOD0's."""
    from roundtrip_metrics import closest_on_mesh

    _, g = lod_glb
    _, v0, f0 = node_mesh(g, "prop_LOD0")
    n0 = np.cross(v0[f0[:, 1]] - v0[f0[:, 0]], v0[f0[:, 2]] - v0[f0[:, 0]])
    vol0 = (np.cross(v0[f0[:, 0]], v0[f0[:, 1]]) * v0[f0[:, 2]]).sum() / 6
    assert vol0 > 0
    for k in (1, 2, 3):
        prim, v, f = node_mesh(g, f"prop_LOD{k}")
        vol = (np.cross(v[f[:, 0]], v[f[:, 1]]) * v[f[:, 2]]).sum() / 6
        assert vol == pytest.approx(vol0, rel=0.03), k
        n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        area = np.linalg.norm(n, axis=1)
        _, near, _ = closest_on_mesh(v[f].mean(1), v0, f0, 0.05)
        assert (near >= 0).all()
        agree = area[(n * n0[near]).sum(1) > 0].sum() / area.sum()
        assert agree > 0.98, (k, agree)
        shading = read_accessor(g, prim.attributes.NORMAL)[f].mean(1)
        assert ((shading * n).sum(1) > 0).mean() > 0.99, k


def _uv_stretch(g: gl.GLTF2, name: str) -> np.ndarray:
    """sqrt(UV area / surface area) per face: a face that straddles two charts blows this up."""
    prim, v, f = node_mesh(g, name)
    uv = read_accessor(g, prim.attributes.TEXCOORD_0).astype(np.float64)
    area = np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    e1, e2 = uv[f[:, 1]] - uv[f[:, 0]], uv[f[:, 2]] - uv[f[:, 0]]
    uv_area = np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    keep = area > 1e-6 * area.max()
    return np.sqrt(uv_area[keep] / area[keep])


def test_lods_keep_lod0_texel_density(lod_glb):
    """Every level maps its faces onto LOD0's atlas at LOD0's texel density: no face spans two charts."""
    _, g = lod_glb
    ref = _uv_stretch(g, "prop_LOD0")
    lo, hi = np.percentile(ref, 5), np.percentile(ref, 95)
    for k in (1, 2, 3):
        s = _uv_stretch(g, f"prop_LOD{k}")
        assert np.median(s) == pytest.approx(np.median(ref), rel=0.25), k
        assert np.mean((s > 0.5 * lo) & (s < 2.0 * hi)) > 0.9, k
        assert np.percentile(s, 99) < 4.0 * np.percentile(ref, 99), k


def _base_colour(g: gl.GLTF2):
    """Bilinear base-colour lookup (RGB in 0..1) from the GLB's embedded texture."""
    import io

    from PIL import Image

    img = g.images[g.textures[g.materials[0].pbrMetallicRoughness.baseColorTexture.index].source]
    view = g.bufferViews[img.bufferView]
    data = g.binary_blob()[view.byteOffset:view.byteOffset + view.byteLength]
    tex = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float64) / 255
    h, w, _ = tex.shape

    def sample(uv: np.ndarray) -> np.ndarray:
        x, y = np.clip(uv[:, 0] * w - 0.5, 0, w - 1), np.clip(uv[:, 1] * h - 0.5, 0, h - 1)
        x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
        x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
        fx, fy = (x - x0)[:, None], (y - y0)[:, None]
        return (tex[y0, x0] * (1 - fx) * (1 - fy) + tex[y0, x1] * fx * (1 - fy)
                + tex[y1, x0] * (1 - fx) * fy + tex[y1, x1] * fx * fy)
    return sample


def test_lods_look_like_lod0(lod_glb):
    """Colour at random points of each level (through its UVs) = LOD0's colour at the nearest point of LOD0."""
    from roundtrip_metrics import closest_on_mesh, psnr

    _, g = lod_glb
    sample, rng = _base_colour(g), np.random.default_rng(0)
    prim0, v0, f0 = node_mesh(g, "prop_LOD0")
    uv0 = read_accessor(g, prim0.attributes.TEXCOORD_0).astype(np.float64)
    for k in (1, 2, 3):
        prim, v, f = node_mesh(g, f"prop_LOD{k}")
        uv = read_accessor(g, prim.attributes.TEXCOORD_0).astype(np.float64)
        area = np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
        fi = rng.choice(len(f), 4000, p=area / area.sum())
        r = rng.random((4000, 2))
        r[r.sum(1) > 1] = 1 - r[r.sum(1) > 1]
        bary = np.stack([1 - r.sum(1), r[:, 0], r[:, 1]], 1)[:, :, None]
        dist, face, b0 = closest_on_mesh((bary * v[f[fi]]).sum(1), v0, f0, 0.05)
        assert (face >= 0).all()
        got, want = sample((bary * uv[f[fi]]).sum(1)), sample((b0[:, :, None] * uv0[f0[face]]).sum(1))
        assert psnr(got, want) > 40.0, k


def _assert_convex_and_enclosing(hv: np.ndarray, hf: np.ndarray, points: np.ndarray, tol: float) -> None:
    n = np.cross(hv[hf[:, 1]] - hv[hf[:, 0]], hv[hf[:, 2]] - hv[hf[:, 0]])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    d = (n * hv[hf[:, 0]]).sum(1)
    assert ((hv @ n.T) - d <= tol).all(), "hull is not convex (or faces are not wound outward)"
    assert ((points @ n.T) - d <= tol).all(), "a mesh vertex lies outside the collision hull"
    vol = (np.cross(hv[hf[:, 0]], hv[hf[:, 1]]) * hv[hf[:, 2]]).sum() / 6
    assert vol > 0


def test_convex_collision_hull_encloses_the_mesh(lod_glb):
    _, g = lod_glb
    prim, hv, hf = node_mesh(g, "prop-convcolonly")
    assert prim.material is None and prim.attributes.NORMAL is None and prim.attributes.TEXCOORD_0 is None
    assert len(hf) <= MAX_CONVEX_FACES
    _, v0, _ = node_mesh(g, "prop_LOD0")
    _assert_convex_and_enclosing(hv, hf, v0, tol=1e-4)
    # tight: the hull's bounds are the mesh's within 2 mm (axis support planes touch the mesh; the
    # welding of corners closer than 1 mm costs a hair of inflation)
    assert np.allclose(hv.min(0), v0.min(0), atol=2e-3) and np.allclose(hv.max(0), v0.max(0), atol=2e-3)


def test_convex_hull_reduction_on_a_sphere_and_a_box():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(3000, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    hv, hf = convex_hull(p)
    assert len(hf) <= MAX_CONVEX_FACES
    _assert_convex_and_enclosing(hv.astype(np.float64), hf, p, tol=1e-5)
    assert np.linalg.norm(hv, axis=1).max() < 1.25              # a sphere's hull, not a loose box
    # a box sampled densely on its faces: the reduced hull is the box itself
    box = rng.uniform(-1, 1, (4000, 3)) * [2.0, 1.0, 0.5]
    side = rng.integers(0, 3, 4000)
    box[np.arange(4000), side] = np.sign(rng.normal(size=4000)) * np.array([2.0, 1.0, 0.5])[side]
    box = np.concatenate([box, rng.normal(size=(500, 3)) * 0.01])
    hv, hf = convex_hull(box)
    assert len(hf) <= MAX_CONVEX_FACES
    vol = (np.cross(hv[hf[:, 0]], hv[hf[:, 1]]) * hv[hf[:, 2]]).sum() / 6
    assert vol == pytest.approx(4 * 2 * 1, rel=0.02)


@pytest.mark.parametrize("shape", ["sheet", "plate", "rod"])
def test_convex_hull_of_flat_and_thin_meshes(shape):
    """A rug, a sign, a pole: the hull keeps their outline, gets (at least) 1/1000 of depth, never blows up."""
    t = np.linspace(0, 2 * np.pi, 600, endpoint=False)
    ring = np.stack([np.cos(t), np.sin(t), np.zeros_like(t)], 1)
    p = {"sheet": ring, "plate": np.concatenate([ring, ring + [0, 0, 0.02]]),
         "rod": np.stack([t, 0 * t, 0 * t], 1)}[shape]
    hv, hf = convex_hull(p)
    assert len(hf) <= MAX_CONVEX_FACES
    _assert_convex_and_enclosing(hv.astype(np.float64), hf, p, tol=1e-5)
    size = np.ptp(hv, 0)
    assert np.allclose(size, np.maximum(np.ptp(p, 0), 1e-3 * np.ptp(p, 0).max()), rtol=0.02, atol=1e-4), size


def test_mesh_collision_and_no_lods(generation, assert_valid_glb):
    glb, g = export(generation, collision="mesh")
    assert [n.name for n in g.nodes] == ["prop", "prop_LOD0", "prop-colonly"]
    prim, v, f = node_mesh(g, "prop-colonly")
    assert prim.material is None and 100 < len(f) <= 1500
    _, v0, _ = node_mesh(g, "prop_LOD0")
    assert np.allclose(v.min(0), v0.min(0), atol=0.02) and np.allclose(v.max(0), v0.max(0), atol=0.02)
    rep = assert_valid_glb(glb)
    assert rep.num_warnings == 0, rep


def test_tiny_budget_gets_fewer_levels_not_an_error(assert_valid_glb):
    """A 300-face prop cannot be halved four times: the chain ends early, and says so in the stats."""
    gen = load_generator("relief").generate(make_cutout(64, "disc"), seed=0)
    glb = export_glb(gen, ExportOptions(faces=300, texture_size=128, lods=4, collision="mesh"))
    g = gl.GLTF2.load_from_bytes(glb)
    counts = g.asset.extras["stats"]["lod_faces"]
    lods = [n.name for n in g.nodes if "_LOD" in n.name]
    assert 1 <= len(lods) < 5 and len(counts) == len(lods)
    assert [len(node_mesh(g, n)[2]) for n in lods] == counts
    assert all(a > b for a, b in zip(counts, counts[1:]))
    assert len(node_mesh(g, "prop-colonly")[2]) <= counts[0]
    assert assert_valid_glb(glb).num_warnings == 0


def test_lod_glb_is_validator_clean(lod_glb, assert_valid_glb):
    rep = assert_valid_glb(lod_glb[0])
    assert rep.num_warnings == 0, rep


@pytest.mark.parametrize("kw,needle", [({"lods": 5}, "lods"), ({"lods": -1}, "lods"), ({"lods": "2"}, "lods"),
                                       ({"lods": True}, "lods"), ({"collision": "sphere"}, "collision")])
def test_bad_options(kw, needle):
    with pytest.raises(InputError, match=needle):
        ExportOptions(**kw).validate()


def test_watch_flags_and_sidecars_carry_the_new_options(tmp_path):
    from propforge_server.cli import build_parser
    from propforge_server.cmd_watch import base_options
    from propforge_server.watch.intake import resolve_options

    base = base_options(build_parser().parse_args(["watch", "p", "--lods", "2", "--collision", "convex"]))
    assert base == {"export": {"lods": 2, "collision": "convex"}}
    make_cutout(32).save(tmp_path / "barrel.png")
    (tmp_path / "barrel.propforge.json").write_text(json.dumps({"export": {"collision": "mesh"}}))
    opts, used = resolve_options(base, tmp_path, "barrel.png")
    assert (opts.export.lods, opts.export.collision) == (2, "mesh") and len(used) == 1
    (tmp_path / "barrel.propforge.json").write_text(json.dumps({"export": {"lods": 9}}))
    with pytest.raises(InputError, match=r"lods.*barrel\.propforge\.json"):
        resolve_options(base, tmp_path, "barrel.png")


def test_wire_options_round_trip_and_name_the_field():
    from propforge_server._proto import propforge_pb2 as pb
    from propforge_server.convert import options_dict_to_proto, options_from_proto, options_to_proto

    o = options_from_proto(pb.JobOptions(lods=2, collision="mesh"))
    assert (o.export.lods, o.export.collision) == (2, "mesh")
    back = options_to_proto(o)
    assert (back.lods, back.collision) == (2, "mesh")
    assert options_from_proto(pb.JobOptions()).export.lods == 0          # zero = server default
    assert options_from_proto(pb.JobOptions()).export.collision == "none"
    assert options_dict_to_proto({"lods": 1, "collision": "convex"}).collision == "convex"
    with pytest.raises(InputError, match="options.lods"):
        options_from_proto(pb.JobOptions(lods=7))
    with pytest.raises(InputError, match="options.collision"):
        options_from_proto(pb.JobOptions(collision="capsule"))


def test_cli_lods_and_convex_collision(tmp_path, assert_valid_glb):
    src, out = tmp_path / "crate.png", tmp_path / "crate.glb"
    make_cutout(96, "L").save(src)
    cmd = [sys.executable, "-m", "propforge_server.cli", "generate", str(src), "-o", str(out), "--backend", "relief",
           "--faces", "3000", "--texture-size", "256", "--lods", "2", "--collision", "convex"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    g = gl.GLTF2.load(str(out))
    assert [n.name for n in g.nodes] == ["prop", "prop_LOD0", "prop_LOD1", "prop_LOD2", "prop-convcolonly"]
    assert assert_valid_glb(out).num_warnings == 0
    bad = subprocess.run(cmd[:-4] + ["--lods", "9"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert bad.returncode == 2 and "lods" in bad.stderr and "Traceback" not in bad.stderr


BLENDER_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    np.bool = bool
    import bpy
    glb, report = sys.argv[sys.argv.index("--") + 1:]
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=glb)
    out = {}
    for o in bpy.context.scene.objects:
        mats = [m.name for m in o.data.materials] if o.type == "MESH" else []
        out[o.name] = {"type": o.type, "parent": o.parent.name if o.parent else None, "materials": mats,
                       "faces": len(o.data.polygons) if o.type == "MESH" else 0}
    json.dump(out, open(report, "w"))
""")


@pytest.mark.skipif(shutil.which("blender") is None, reason="blender not installed")
def test_blender_imports_lods_and_collision(generation, tmp_path):
    glb = tmp_path / "prop.glb"
    export_glb(generation, ExportOptions(faces=2000, texture_size=128, lods=1, collision="convex"), path=glb)
    script, report = tmp_path / "check.py", tmp_path / "report.json"
    script.write_text(BLENDER_SCRIPT)
    proc = subprocess.run(["blender", "-b", "--factory-startup", "--python-exit-code", "1", "--python", str(script),
                           "--", str(glb), str(report)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(report.read_text())
    assert out["prop"]["type"] == "EMPTY"
    assert {k for k, o in out.items() if o["parent"] == "prop"} == {"prop_LOD0", "prop_LOD1", "prop-convcolonly"}
    assert out["prop_LOD0"]["materials"] == out["prop_LOD1"]["materials"] == ["PropForgeMaterial"]
    assert out["prop-convcolonly"]["materials"] == [] and 0 < out["prop-convcolonly"]["faces"] <= MAX_CONVEX_FACES
    assert out["prop_LOD0"]["faces"] > out["prop_LOD1"]["faces"] > 0


def test_grpc_and_http_jobs_carry_lods_and_collision(tmp_path):
    """A real server: gRPC client options and an HTTP multipart job both reach the exporter."""
    import asyncio

    import aiohttp
    from _server_util import cutout_png, form

    from propforge_server.client import PropForgeClient
    from propforge_server.server import ServerConfig, ThreadedServer

    cfg = ServerConfig(host="127.0.0.1", grpc_port=0, http_port=0, backend="relief", workers=1, store=tmp_path)
    small = {"faces": 1500, "texture_size": 128}
    with ThreadedServer(cfg) as srv, PropForgeClient(srv.grpc_address) as client:
        opts = GenerateOptions(backend="relief", export=ExportOptions(**small, lods=1, collision="mesh"))
        glb, job = client.generate(cutout_png(seed=5), opts)
        names = [n.name for n in gl.GLTF2.load_from_bytes(glb).nodes]
        assert names == ["prop", "prop_LOD0", "prop_LOD1", "prop-colonly"]
        assert job["options"]["lods"] == 1 and job["options"]["collision"] == "mesh"

        async def bad_http() -> tuple[int, dict]:
            async with aiohttp.ClientSession() as s:
                async with s.post(f"{srv.http_url}/v1/jobs", data=form(cutout_png(seed=6), {"lods": 8})) as r:
                    return r.status, await r.json(content_type=None)

        status, body = asyncio.run(bad_http())
        assert status == 400 and "options.lods" in body["detail"], body


def test_uv_transfer_stays_in_the_points_chart():
    """Two charts stacked in space: a point takes the UV of its own chart's closest point, never the other's."""
    from propforge.mesh.lod import _transfer_by_chart, transfer_uvs

    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], np.float32)
    f = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    uv = np.concatenate([v[:4, :2] * 0.5, v[4:, :2] * 0.5 + 0.5]).astype(np.float32)
    face_chart = np.array([0, 0, 1, 1])
    rng = np.random.default_rng(1)
    p = (rng.random((200, 3)) * 1.4 - 0.2).astype(np.float32)
    chart = rng.integers(0, 2, 200)
    want = np.clip(p[:, :2], 0, 1) * 0.5 + 0.5 * chart[:, None]
    assert np.abs(transfer_uvs(p, chart, v, f, uv, face_chart) - want).max() < 1e-6
    brute = _transfer_by_chart(p.astype(np.float64), chart, v[f].astype(np.float64), uv[f].astype(np.float64),
                               face_chart)
    assert np.abs(brute - want).max() < 1e-6
