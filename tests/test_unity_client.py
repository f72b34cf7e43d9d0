"""Unity plugin transport: compile PropForge.Client (no UnityEngine) and its console test with Debian's
Mono `mcs` in the C# 7.2 subset, then run the console test with `mono` against a real `propforge serve`
(relief backend) on loopback: submit, follow events, download with Range resume, size + sha256 checks
against the server's, cancel, wrong token, bad options, corrupt image."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, make_cutout
from plugin_server import propforge_serve

PKG = ROOT / "engine_plugins" / "unity" / "com.propforge.editor"
CLIENT_SOURCES = sorted((PKG / "Client").glob("*.cs"))
CONSOLE_SOURCES = sorted((PKG / "Tests~" / "ConsoleTest").glob("*.cs"))


def _need_mono() -> None:
    for tool in ("mcs", "mono"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (apt-get install mono-mcs mono-runtime libmono-system-net-http4.0-cil)")


@pytest.fixture(scope="module")
def console_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _need_mono()
    out = tmp_path_factory.mktemp("cs")
    dll = out / "PropForge.Client.dll"
    exe = out / "ConsoleTest.exe"
    common = ["mcs", "-langversion:7.2", "-warnaserror+", "-r:System.Net.Http.dll"]
    r = subprocess.run(common + ["-target:library", f"-out:{dll}", *map(str, CLIENT_SOURCES)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"mcs failed on PropForge.Client:\n{r.stdout}\n{r.stderr}"
    r = subprocess.run(common + [f"-r:{dll}", "-r:System.Core.dll", f"-out:{exe}", *map(str, CONSOLE_SOURCES)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"mcs failed on the console test:\n{r.stdout}\n{r.stderr}"
    return exe


def _run(exe: Path, *args: str, timeout: float = 400) -> dict:
    r = subprocess.run(["mono", "--debug", str(exe), *args], capture_output=True, text=True, timeout=timeout,
                       cwd=exe.parent)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"console test printed no RESULT line (rc {r.returncode}):\n{r.stdout}\n{r.stderr}"
    result = json.loads(lines[-1][len("RESULT "):])
    assert r.returncode == 0 and result.get("passed"), f"console test failed:\n{r.stdout}\n{r.stderr}"
    return result


def test_client_assembly_has_no_unityengine_reference() -> None:
    """PropForge.Client must build outside Unity: no UnityEngine/UnityEditor usage, noEngineReferences."""
    for src in CLIENT_SOURCES:
        code = "\n".join(ln.split("//")[0] for ln in src.read_text().splitlines())
        assert "UnityEngine" not in code and "UnityEditor" not in code, src.name
    asmdef = json.loads((PKG / "Client" / "PropForge.Client.asmdef").read_text())
    assert asmdef["noEngineReferences"] is True
    assert asmdef["name"] == "PropForge.Client"
    pkg = json.loads((PKG / "package.json").read_text())
    assert pkg["name"] == "com.propforge.editor"
    assert "com.unity.cloud.gltfast" in pkg["dependencies"]


def test_offline_parsers_and_conversions(console_exe: Path) -> None:
    """SSE parsing at every split point, JSON mapping, event kinds, PBR map conversion, error mapping."""
    _run(console_exe)


def test_console_client_against_real_server(console_exe: Path, tmp_path: Path) -> None:
    image = tmp_path / "crate.png"
    make_cutout(128, "L", seed=3).save(image)
    work = tmp_path / "project"
    with propforge_serve(tmp_path / "store", token="s3cret", workers=1) as srv:
        result = _run(console_exe, "--server", srv["url"], "--token", "s3cret", "--image", str(image),
                      "--work", str(work), "--deadline", "300")
        # Independent check of what the C# client claims, straight from the server with urllib.
        req = urllib.request.Request(f"{srv['url']}/v1/jobs/{result['jobId']}",
                                     headers={"Authorization": "Bearer s3cret"})
        job = json.loads(urllib.request.urlopen(req, timeout=30).read())
    glb = work / "Assets" / "PropForge" / "Generated" / "crate.glb"
    data = glb.read_bytes()
    assert job["state"] == "JOB_STATE_SUCCEEDED"
    assert int(job["resultSize"]) == len(data) == result["resultSize"]
    assert job["resultSha256"] == hashlib.sha256(data).hexdigest() == result["resultSha256"]
    assert data[:4] == b"glTF"
    assert result["events"] >= 3
    assert not list((work / "Library" / "PropForge" / "Downloads").glob("*.part"))
    assert "image" in result["badImageError"].lower(), result["badImageError"]
    # the LOD + convex collider job: the node names PropImporter builds a LODGroup and MeshCollider from
    assert result["lodNodes"] == ["prop", "prop_LOD0", "prop_LOD1", "prop_LOD2", "prop-convcolonly"]


def test_editor_layer_parses_as_csharp_7_2() -> None:
    """The Editor layer needs UnityEngine to compile, which CI lacks; it must at least parse in C# 7.2."""
    _need_mono()
    editor = sorted((PKG / "Editor").glob("*.cs"))
    assert {p.name for p in editor} >= {"PropForgeWindow.cs", "PropForgeJobs.cs", "PropImporter.cs", "MaterialRemap.cs",
                                        "Placement.cs", "PropForgeMenu.cs", "PropForgeSettings.cs"}
    for src in editor:
        r = subprocess.run(["mcs", "--parse", "-langversion:7.2", str(src)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"{src.name} does not parse:\n{r.stdout}\n{r.stderr}"
    asmdef = json.loads((PKG / "Editor" / "PropForge.Editor.asmdef").read_text())
    assert asmdef["includePlatforms"] == ["Editor"] and "PropForge.Client" in asmdef["references"]


def test_editor_layer_type_checks_against_unity_api_signatures(console_exe: Path, tmp_path: Path) -> None:
    """Compile Editor/*.cs against Tests~/UnityApiStubs (signatures of the Unity members it uses, no
    behaviour): catches type errors in the Editor layer that a parse cannot, without Unity in CI."""
    stubs = tmp_path / "UnityStubs.dll"
    r = subprocess.run(["mcs", "-langversion:7.2", "-target:library", f"-out:{stubs}",
                        str(PKG / "Tests~" / "UnityApiStubs" / "UnityApiStubs.cs")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    client = console_exe.parent / "PropForge.Client.dll"
    r = subprocess.run(["mcs", "-langversion:7.2", "-warnaserror+", "-target:library", f"-out:{tmp_path / 'PropForge.Editor.dll'}",
                        f"-r:{stubs}", f"-r:{client}", "-r:System.Net.Http.dll",
                        *map(str, sorted((PKG / "Editor").glob("*.cs")))], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"Editor layer does not type-check:\n{r.stdout}\n{r.stderr}"


def test_every_package_asset_has_a_unique_meta() -> None:
    """Unity ignores files without .meta in immutable (git/registry) packages; GUIDs must be unique."""
    guids: dict[str, Path] = {}
    for path in sorted(PKG.rglob("*")):
        rel = path.relative_to(PKG)
        if path.suffix == ".meta" or any(part.endswith("~") for part in rel.parts):
            continue
        meta = path.with_name(path.name + ".meta")
        assert meta.is_file(), f"{rel} has no .meta"
        guid = next(ln.split()[1] for ln in meta.read_text().splitlines() if ln.startswith("guid:"))
        assert len(guid) == 32 and guid not in guids, f"{rel}: bad or duplicate guid {guid}"
        guids[guid] = path
