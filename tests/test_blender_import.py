"""A real DCC import: Debian's Blender 3.4 reads our GLB and wires both PBR textures (issue 2, item 7)."""
from __future__ import annotations

import json
import shutil
import subprocess
import textwrap

import numpy as np
import pytest

from propforge.export import export_glb
from propforge.options import ExportOptions
from propforge.ovoxel.from_sdf import sdf_to_ovoxel
from propforge.types import Generation

# Runs inside Blender. Debian's numpy lacks np.bool, which the glTF add-on still uses.
SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    np.bool = bool
    import bpy
    glb, report = sys.argv[sys.argv.index("--") + 1:]
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=glb)
    objs = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    out = {"meshes": len(objs)}
    if objs:
        ob = objs[0]
        mat = ob.active_material
        bsdf = next(n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED")

        def source_image(socket_name):
            links = bsdf.inputs[socket_name].links
            if not links:
                return None
            node = links[0].from_node
            while node.type != "TEX_IMAGE":          # through Separate RGB / colour nodes
                ins = [i for i in node.inputs if i.links]
                if not ins:
                    return None
                node = ins[0].links[0].from_node
            return node.image.name if node.image else None

        import mathutils
        corners = [ob.matrix_world @ mathutils.Vector(c) for c in ob.bound_box]
        out.update(
            faces=len(ob.data.polygons),
            base_color=source_image("Base Color"),
            metallic=source_image("Metallic"),
            roughness=source_image("Roughness"),
            blend_method=mat.blend_method,
            use_backface_culling=mat.use_backface_culling,
            zmin=min(c.z for c in corners), zmax=max(c.z for c in corners),
            images=[(im.name, im.size[0], im.size[1]) for im in bpy.data.images],
        )
    json.dump(out, open(report, "w"))
""")


@pytest.mark.skipif(shutil.which("blender") is None, reason="blender not installed")
@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_blender_imports_material_wiring(tmp_path, fmt):
    r = 32
    g = np.linspace(-0.5, 0.5, r + 1, dtype=np.float32)
    x, y, z = np.meshgrid(g, g, g, indexing="ij")
    sdf = np.sqrt(x * x + y * y + z * z) - 0.4

    def attrs(p):
        a = np.zeros((len(p), 6), np.float32)
        a[:, 0:3] = [0.2, 0.6, 0.3]
        a[:, 3], a[:, 4], a[:, 5] = 0.1, 0.6, 1.0
        return a

    glb_path = tmp_path / f"prop_{fmt}.glb"
    export_glb(Generation(sdf_to_ovoxel(sdf, attrs), "test", 0),
               ExportOptions(faces=800, texture_size=256, texture_format=fmt, height=1.8), path=glb_path)
    script = tmp_path / "check.py"
    script.write_text(SCRIPT)
    report = tmp_path / "report.json"
    proc = subprocess.run(["blender", "-b", "--factory-startup", "--python-exit-code", "1", "--python", str(script),
                           "--", str(glb_path), str(report)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(report.read_text())
    assert out["meshes"] == 1
    assert 0 < out["faces"] <= 800
    assert out["base_color"], "Base Color is not driven by an image texture"
    assert out["metallic"] and out["roughness"], "Metallic/Roughness are not driven by the packed texture"
    assert out["metallic"] == out["roughness"] != out["base_color"]
    assert out["blend_method"] == "OPAQUE"
    # Blender is Z-up: the importer converts glTF +Y up back, so the prop stands on z = 0 and is 1.8 m tall
    assert out["zmin"] == pytest.approx(0.0, abs=1e-4)
    assert out["zmax"] == pytest.approx(1.8, rel=1e-4)
    assert all(w == 256 and h == 256 for _, w, h in out["images"])
