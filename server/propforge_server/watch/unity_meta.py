"""Unity ``.meta`` files with GUIDs derived from the asset path, written before the asset appears.

Unity keys every reference (scenes, prefabs, materials) by the GUID in an asset's ``.meta``. If the
watcher let Unity invent one, a regenerated or re-cloned asset could get a new GUID and every scene
using the prop would lose it. A GUID computed from the project-relative path is the same on every
machine and every run, so re-generation keeps references. An existing ``.meta`` is never rewritten:
it may carry the user's import settings, or a GUID that references already point at.

The GLB importer is glTFast's ``GltfImporter`` (package ``com.unity.cloud.gltfast``), a
ScriptedImporter whose MonoScript GUID is ``715df9372183c47e389bb6e19fbc3b52``; the settings below
are the ones glTFast writes itself, except that texture mip-maps are on (props are seen from afar).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from propforge.fileio import write_atomic

GLTFAST_IMPORTER_SCRIPT_GUID = "715df9372183c47e389bb6e19fbc3b52"
GUID_NAMESPACE = "propforge.watch.v1:"

_GLB_META = """fileFormatVersion: 2
guid: {guid}
ScriptedImporter:
  internalIDToNameTable: []
  externalObjects: {{}}
  serializedVersion: 2
  userData: 
  assetBundleName: 
  assetBundleVariant: 
  script: {{fileID: 11500000, guid: {script}, type: 3}}
  editorImportSettings:
    generateSecondaryUVSet: 0
  importSettings:
    nodeNameMethod: 1
    animationMethod: 1
    generateMipMaps: 1
    defaultMinFilterMode: 9729
    defaultMagFilterMode: 9729
    anisotropicFilterLevel: 1
  instantiationSettings:
    mask: -1
    layer: 0
    skinUpdateWhenOffscreen: 1
    lightIntensityFactor: 1
    sceneObjectCreation: 1
  assetDependencies: []
  reportItems: []
"""

_FOLDER_META = """fileFormatVersion: 2
guid: {guid}
folderAsset: yes
DefaultImporter:
  externalObjects: {{}}
  userData: 
  assetBundleName: 
  assetBundleVariant: 
"""

_TEXT_META = """fileFormatVersion: 2
guid: {guid}
TextScriptImporter:
  externalObjects: {{}}
  userData: 
  assetBundleName: 
  assetBundleVariant: 
"""


def stable_guid(asset_path: str) -> str:
    """32 hex chars from the project-relative asset path ("Assets/PropForge/Generated/x.glb")."""
    norm = asset_path.replace("\\", "/").strip("/")
    return hashlib.md5((GUID_NAMESPACE + norm).encode("utf-8")).hexdigest()


def glb_meta_text(asset_path: str) -> str:
    return _GLB_META.format(guid=stable_guid(asset_path), script=GLTFAST_IMPORTER_SCRIPT_GUID)


def folder_meta_text(asset_path: str) -> str:
    return _FOLDER_META.format(guid=stable_guid(asset_path))


def text_meta_text(asset_path: str) -> str:
    return _TEXT_META.format(guid=stable_guid(asset_path))


def _ensure(meta: Path, text: str) -> bool:
    if meta.exists():
        return False
    write_atomic(meta, text.encode("utf-8"))
    return True


def ensure_folder_metas(project_root: Path, folder: Path) -> None:
    """Create ``folder`` (and parents up to ``Assets/``) with a stable-GUID ``.meta`` for each."""
    rel = Path(folder).resolve().relative_to(project_root)
    cur = project_root
    for i, part in enumerate(rel.parts):
        cur = cur / part
        cur.mkdir(exist_ok=True)
        if i > 0:  # "Assets" itself has no .meta
            _ensure(cur.with_name(part + ".meta"), folder_meta_text(cur.relative_to(project_root).as_posix()))


def ensure_asset_meta(project_root: Path, asset: Path) -> bool:
    """Write ``<asset>.meta`` if missing (GLB -> glTFast importer, anything else -> text asset)."""
    asset = Path(asset)
    ensure_folder_metas(project_root, asset.parent)
    rel = asset.resolve().relative_to(project_root).as_posix()
    text = glb_meta_text(rel) if asset.suffix.lower() == ".glb" else text_meta_text(rel)
    return _ensure(asset.with_name(asset.name + ".meta"), text)
