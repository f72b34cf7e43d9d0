"""Watch mode building blocks, without generation: engine detection, intake rules, options
sidecars, Unity .meta files, status files, the state DB and the project lock."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from propforge.errors import InputError, PropForgeError
from propforge_server.watch import intake
from propforge_server.watch.project import detect_engine, project_layout
from propforge_server.watch.state import ProjectLock, StateDB
from propforge_server.watch.status import read_status, status_path, write_status
from propforge_server.watch.unity_meta import (GLTFAST_IMPORTER_SCRIPT_GUID, ensure_asset_meta,
                                               ensure_folder_metas, stable_guid)


def unity_project(root: Path) -> Path:
    (root / "Assets").mkdir(parents=True)
    (root / "ProjectSettings").mkdir()
    return root


def godot_project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "project.godot").write_text("config_version=5\n")
    return root


def png_bytes(size: int = 32, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(buf, fmt)
    return buf.getvalue()


# ------------------------------------------------------------------ engine detection and layout
def test_detect_engine(tmp_path):
    assert detect_engine(unity_project(tmp_path / "u")) == "unity"
    assert detect_engine(godot_project(tmp_path / "g")) == "godot"
    with pytest.raises(InputError, match="not a game project"):
        detect_engine(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        detect_engine(tmp_path / "missing")
    both = godot_project(unity_project(tmp_path / "both"))
    with pytest.raises(InputError, match="--engine"):
        detect_engine(both)
    assert project_layout(both, "godot").engine == "godot"


def test_layout_folders_and_mirrored_output(tmp_path):
    u = project_layout(unity_project(tmp_path / "u"))
    assert u.drop == (tmp_path / "u/Assets/PropForge/Drop").resolve()
    assert u.output == (tmp_path / "u/Assets/PropForge/Generated").resolve()
    assert u.state == (tmp_path / "u/Library/PropForge").resolve()
    assert u.output_path("props/crates/big.crate.png") == u.output / "props/crates/big.crate.glb"
    assert u.project_rel(u.output_path("a.png")) == "Assets/PropForge/Generated/a.glb"
    g = project_layout(godot_project(tmp_path / "g"))
    assert g.project_rel(g.drop) == "propforge/drop"
    assert g.project_rel(g.output_path("x/y.jpg")) == "propforge/generated/x/y.glb"
    assert g.state.relative_to(g.root).parts[0] == ".godot"
    assert g.rel_source(g.drop / "x" / "y.jpg") == "x/y.jpg"


# ------------------------------------------------------------------ intake rules
@pytest.mark.parametrize("name,image,quiet", [
    ("barrel.png", True, False), ("BARREL.JPG", True, False), ("a.webp", True, False),
    ("notes.txt", False, False), ("barrel.png.meta", False, True), ("barrel.png.import", False, True),
    (".barrel.png.swp", False, True), (".~lock.png", False, True), ("barrel.png.part", False, True),
    ("download.crdownload", False, True), ("Thumbs.db", False, True), ("barrel.png~", False, True),
])
def test_image_and_quiet_names(name, image, quiet):
    assert intake.is_image_name(name) is image
    assert intake.is_quiet(name) is quiet


def test_sidecar_targets():
    assert intake.sidecar_target("props/barrel.png.propforge.json") == ("props/barrel.png", False)
    assert intake.sidecar_target("barrel.propforge.json") == ("barrel", False)
    assert intake.sidecar_target("props/propforge.json") == ("props", True)
    assert intake.sidecar_target("propforge.json") == (".", True)
    assert intake.is_sidecar_name("propforge.json") and intake.is_sidecar_name("a.png.propforge.json")
    assert not intake.is_sidecar_name("a.json")


def test_options_precedence(tmp_path):
    drop = tmp_path
    (drop / "props").mkdir()
    (drop / "propforge.json").write_text(json.dumps({"seed": 1, "export": {"faces": 1000, "height": 2.0}}))
    (drop / "props" / "propforge.json").write_text(json.dumps({"seed": 2, "export": {"faces": 2000}}))
    base = {"backend": "relief", "export": {"texture_size": 256}}
    opts, used = intake.resolve_options(base, drop, "props/a.png")
    assert (opts.seed, opts.export.faces, opts.export.height, opts.export.texture_size) == (2, 2000, 2.0, 256)
    assert opts.backend == "relief" and len(used) == 2
    (drop / "props" / "a.propforge.json").write_text(json.dumps({"seed": 3}))
    assert intake.resolve_options(base, drop, "props/a.png")[0].seed == 3
    (drop / "props" / "a.png.propforge.json").write_text(json.dumps({"seed": 4}))
    assert intake.resolve_options(base, drop, "props/a.png")[0].seed == 4
    # the sibling b.png only sees the folder files
    assert intake.resolve_options(base, drop, "props/b.png")[0].seed == 2
    # top-level images do not see props/propforge.json
    assert intake.resolve_options(base, drop, "c.png")[0].export.faces == 1000


def test_options_hash_follows_options(tmp_path):
    a, _ = intake.resolve_options({"export": {"faces": 1000}}, tmp_path, "a.png")
    b, _ = intake.resolve_options({"export": {"faces": 1000}}, tmp_path, "a.png")
    c, _ = intake.resolve_options({"export": {"faces": 1001}}, tmp_path, "a.png")
    assert intake.options_sha256(a) == intake.options_sha256(b) != intake.options_sha256(c)


@pytest.mark.parametrize("text,match", [
    ("{not json", "cannot read options file a.png.propforge.json"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"colour": "red"}', "unknown option.*colour"),
    ('{"export": {"polys": 5}}', "unknown export option.*polys"),
    ('{"export": {"faces": 5}}', "faces must be between.*a.png.propforge.json"),
    ('{"backend": "magic"}', "unknown backend"),
])
def test_bad_sidecar_names_the_problem(tmp_path, text, match):
    (tmp_path / "a.png.propforge.json").write_text(text)
    with pytest.raises(InputError, match=match):
        intake.resolve_options({}, tmp_path, "a.png")


def test_looks_complete():
    png = png_bytes()
    assert intake.looks_complete(png)
    assert not intake.looks_complete(png[:-10])
    assert not intake.looks_complete(png[: len(png) // 2])
    assert not intake.looks_complete(b"")
    jpg = png_bytes(fmt="JPEG")
    assert intake.looks_complete(jpg) and not intake.looks_complete(jpg[:-5])
    for fmt in ("WEBP", "BMP"):
        data = png_bytes(fmt=fmt)
        assert intake.self_delimiting(data) and intake.looks_complete(data), fmt
        assert not intake.looks_complete(data[:-3]), fmt
    tga = png_bytes(fmt="TGA")              # no end marker: completeness is left to the decoder
    assert not intake.self_delimiting(tga) and intake.looks_complete(tga)


# ------------------------------------------------------------------ Unity .meta
def test_stable_guid_properties():
    g = stable_guid("Assets/PropForge/Generated/barrel.glb")
    assert re.fullmatch(r"[0-9a-f]{32}", g)
    assert g == stable_guid("Assets\\PropForge\\Generated\\barrel.glb") == stable_guid("Assets/PropForge/Generated/barrel.glb")
    assert g != stable_guid("Assets/PropForge/Generated/barrel2.glb")


def test_glb_meta_is_a_gltfast_importer_meta(tmp_path):
    root = unity_project(tmp_path)
    glb = root / "Assets/PropForge/Generated/props/barrel.glb"
    assert ensure_asset_meta(root, glb)
    meta = glb.with_name("barrel.glb.meta").read_text()
    lines = meta.splitlines()
    assert lines[0] == "fileFormatVersion: 2"
    assert lines[1] == "guid: " + stable_guid("Assets/PropForge/Generated/props/barrel.glb")
    assert lines[2] == "ScriptedImporter:"
    assert f"script: {{fileID: 11500000, guid: {GLTFAST_IMPORTER_SCRIPT_GUID}, type: 3}}" in meta
    assert all(not ln or ln.startswith("  ") or ln.endswith(":") or ": " in ln for ln in lines)
    # every folder on the way got a folder meta with its own stable GUID; Assets itself none
    for folder in ("Assets/PropForge", "Assets/PropForge/Generated", "Assets/PropForge/Generated/props"):
        fm = (root / (folder + ".meta")).read_text()
        assert "folderAsset: yes" in fm and stable_guid(folder) in fm
    assert not (root / "Assets.meta").exists()
    assert not glb.exists()  # the meta comes first; the GLB is written by the watcher afterwards


def test_meta_files_parse_as_yaml(tmp_path):
    yaml = pytest.importorskip("yaml")
    root = unity_project(tmp_path)
    glb = root / "Assets/PropForge/Generated/a.glb"
    ensure_asset_meta(root, glb)
    ensure_asset_meta(root, glb.with_name("a.glb.status.json"))
    doc = yaml.load(glb.with_name("a.glb.meta").read_text(), Loader=yaml.BaseLoader)   # all scalars as text
    assert doc["fileFormatVersion"] == "2" and doc["guid"] == stable_guid("Assets/PropForge/Generated/a.glb")
    imp = doc["ScriptedImporter"]
    assert imp["script"] == {"fileID": "11500000", "guid": GLTFAST_IMPORTER_SCRIPT_GUID, "type": "3"}
    assert imp["importSettings"]["generateMipMaps"] == "1"
    folder = yaml.load((root / "Assets/PropForge/Generated.meta").read_text(), Loader=yaml.BaseLoader)
    assert folder["folderAsset"] == "yes" and "DefaultImporter" in folder
    text = yaml.load(glb.with_name("a.glb.status.json.meta").read_text(), Loader=yaml.BaseLoader)
    assert "TextScriptImporter" in text


def test_existing_meta_is_never_rewritten(tmp_path):
    root = unity_project(tmp_path)
    glb = root / "Assets/PropForge/Generated/a.glb"
    glb.parent.mkdir(parents=True)
    meta = glb.with_name("a.glb.meta")
    meta.write_text("fileFormatVersion: 2\nguid: 0123456789abcdef0123456789abcdef\n")
    assert not ensure_asset_meta(root, glb)
    assert "0123456789abcdef0123456789abcdef" in meta.read_text()
    ensure_folder_metas(root, glb.parent)
    assert (root / "Assets/PropForge/Generated.meta").exists()


def test_status_meta_is_a_text_asset(tmp_path):
    root = unity_project(tmp_path)
    st = root / "Assets/PropForge/Generated/a.glb.status.json"
    ensure_asset_meta(root, st)
    assert "TextScriptImporter:" in st.with_name(st.name + ".meta").read_text()


# ------------------------------------------------------------------ status files, state DB, lock
def test_status_file_roundtrip_and_atomic(tmp_path):
    out = tmp_path / "gen" / "a.glb"
    write_status(out, "running", source="propforge/drop/a.png", progress={"stage": "bake", "fraction": 0.5},
                 error=None)
    assert status_path(out) == tmp_path / "gen" / "a.glb.status.json"
    st = read_status(out)
    assert st["state"] == "running" and st["schema"] == 1 and st["progress"]["stage"] == "bake"
    assert "error" not in st and st["updated"].endswith("Z")
    assert sorted(p.name for p in out.parent.iterdir()) == ["a.glb.status.json"]  # no temp files left
    with pytest.raises(ValueError):
        write_status(out, "exploded")
    status_path(out).write_text("{half")
    assert read_status(out) is None


def test_state_db(tmp_path):
    db = StateDB(tmp_path / "s" / "watch.db")
    db.upsert("a.png", "a.glb", "queued", source_sha256="s1", options_sha256="o1", attempts=0)
    db.upsert("a.png", "a.glb", "done", output_sha256="g1", output_size=10, attempts=1)
    row = db.get("a.png")
    assert (row.state, row.source_sha256, row.options_sha256, row.output_sha256, row.attempts) == \
        ("done", "s1", "o1", "g1", 1)
    assert [r.source for r in db.done_with_key("s1", "o1")] == ["a.png"]
    assert db.done_with_key("s1", "o2") == []
    db.log_run("a.png", "generated", seconds=1.5)
    db.close()
    db = StateDB(tmp_path / "s" / "watch.db")        # persisted
    assert db.get("a.png").output_size == 10 and db.runs("a.png")[0]["kind"] == "generated"
    db.delete("a.png")
    assert db.get("a.png") is None and db.runs()[0]["seconds"] == 1.5
    db.close()


def test_project_lock_is_exclusive(tmp_path):
    a, b = ProjectLock(tmp_path / "watch.lock"), ProjectLock(tmp_path / "watch.lock")
    a.acquire()
    with pytest.raises(PropForgeError, match="already running"):
        b.acquire()
    a.release()
    b.acquire()
    b.release()


# ------------------------------------------------------------------ CLI
def test_cli_rejects_non_project(tmp_path, capsys):
    from propforge_server.cli import main

    assert main(["watch", str(tmp_path), "--once"]) == 2
    err = capsys.readouterr().err
    assert "not a game project" in err and "Traceback" not in err


def test_cli_flags_become_options():
    from propforge_server.cli import build_parser
    from propforge_server.cmd_watch import base_options

    args = build_parser().parse_args(["watch", "p", "--backend", "relief", "--faces", "500",
                                      "--texture-size", "256", "--seed", "7"])
    assert base_options(args) == {"backend": "relief", "seed": 7, "export": {"faces": 500, "texture_size": 256}}
    assert base_options(build_parser().parse_args(["watch", "p"])) == {}
