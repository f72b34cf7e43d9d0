"""Round trip of the real assets in ../shared/data/assets: glTF -> O-Voxel (R = 256, 512) -> mesh, and
through the exporter: -> GLB (Khronos-validated) -> re-read with our reader.

Measured per asset: base-colour PSNR at random source-surface points (source material vs the
O-Voxel's sparse trilinear sample there, spec §4.7; and vs the baked GLB texture at the closest point
of the re-read GLB), and geometry error of the dual-grid surface (exact point-to-mesh distances both
ways: chamfer mean, 99th percentile, Hausdorff; in voxels). A table is printed at the end.

CI runs a representative subset (about 1-2 minutes on 2 cores). The whole sweep (every asset at 256,
two at 512, GLB for every textured asset) is marked slow and runs with PROPFORGE_SLOW=1:
    PROPFORGE_SLOW=1 python -m pytest -q -s tests/test_roundtrip_assets.py
"""
from __future__ import annotations

import math
import os

import pytest

from conftest import ASSETS, need_shared
from roundtrip_metrics import roundtrip

PSNR_MIN = 25.0
#: Assets whose colour cannot be represented at voxel resolution, reported but not held to PSNR_MIN.
PSNR_EXEMPT = {
    "AlphaBlendModeTest.glb": "blue/yellow stripes with a period of ~2 voxels at R=256 and coplanar, "
                              "overlapping alpha-tested quads: no single surface colour at voxel scale",
}
ALL = ["AlphaBlendModeTest.glb", "CesiumMilkTruck.glb", "Fox.glb", "GlassBrokenWindow.glb", "GlassVaseFlowers.glb",
       "MetalRoughSpheresNoTextures.glb", "NormalTangentMirrorTest.glb", "SheenChair.glb", "Suzanne.glb",
       "TextureCoordinateTest.glb", "TransmissionTest.glb", "VertexColorTest.glb"]
UNTEXTURED = {"MetalRoughSpheresNoTextures.glb"}
CI = [("Fox.glb", 256, True), ("TextureCoordinateTest.glb", 256, False), ("NormalTangentMirrorTest.glb", 256, False),
      ("Suzanne.glb", 512, True)]
_slow = [pytest.mark.slow, pytest.mark.skipif(not os.environ.get("PROPFORGE_SLOW"),
                                              reason="full asset sweep: set PROPFORGE_SLOW=1")]
SLOW = ([(a, 256, a not in UNTEXTURED) for a in ALL if (a, 256, True) not in CI and (a, 256, False) not in CI]
        + [("Fox.glb", 512, True), ("CesiumMilkTruck.glb", 512, True)])
CASES = [pytest.param(*c, id=f"{c[0]}-{c[1]}{'-glb' if c[2] else ''}") for c in CI] + \
        [pytest.param(*c, id=f"{c[0]}-{c[1]}{'-glb' if c[2] else ''}", marks=_slow) for c in SLOW]

_rows: list[tuple[str, int, dict]] = []


@pytest.fixture(scope="module", autouse=True)
def table(request):
    """Print the measurements of this module as a markdown table (visible with or without -s)."""
    yield
    if not _rows:
        return
    lines = ["", "| asset | R | voxels | s | PSNR O-Voxel dB | PSNR GLB dB | chamfer vx | p99 vx | Hausdorff vx |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, res, r in _rows:
        glb = f"{r['glb_psnr']:.2f}" if "glb_psnr" in r else "-"
        lines.append(f"| {name} | {res} | {r['voxels']} | {r['seconds']:.1f} | {r['psnr']:.2f} | {glb} | "
                     f"{r['chamfer']:.3f} | {r['p99']:.2f} | {r['hausdorff']:.2f} |")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n".join(lines))


@pytest.mark.parametrize("name,resolution,glb", CASES)
def test_asset_round_trip(name, resolution, glb, request):
    path = need_shared(ASSETS / name)
    validate = request.getfixturevalue("assert_valid_glb") if glb else None
    r = roundtrip(path, resolution, glb=glb, n=5000, validate=validate)
    _rows.append((name, resolution, r))
    # geometry: the dual-grid surface stays within a couple of voxels of the source everywhere it is
    # resolvable (distances above 3 voxels are reported as inf by the metric)
    assert r["chamfer"] < 0.25, r
    assert r["p99"] < 1.0, r
    assert math.isfinite(r["hausdorff"]) and r["hausdorff"] < 3.0, r
    if name not in PSNR_EXEMPT:
        assert r["psnr"] >= PSNR_MIN, r
        if glb:
            assert r["glb_found"] > 0.99, r
            assert r["glb_psnr"] >= PSNR_MIN, r
