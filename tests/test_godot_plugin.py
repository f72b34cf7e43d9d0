"""Godot plugin static checks (no Godot binary in CI): every .gd file parses with gdtoolkit 4.x,
passes gdlint and is gdformat-clean; plugin.cfg and dock.tscn point at files that exist."""
from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

ADDON = ROOT / "engine_plugins" / "godot" / "addons" / "propforge"
GD_FILES = sorted(ADDON.rglob("*.gd"))


def _tool(name: str) -> str:
    exe = Path(sys.executable).parent / name
    found = str(exe) if exe.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not installed (pip install gdtoolkit)")
    return found


def test_addon_has_the_expected_scripts() -> None:
    names = {p.name for p in GD_FILES}
    assert {"plugin.gd", "dock.gd", "propforge_job.gd", "propforge_client.gd", "sse_parser.gd", "placement.gd",
            "context_menu.gd"} <= names


@pytest.mark.parametrize("tool", ["gdparse", "gdlint"])
def test_gdtoolkit(tool: str) -> None:
    r = subprocess.run([_tool(tool), *map(str, GD_FILES)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{tool} failed:\n{r.stdout}\n{r.stderr}"


def test_gdformat_clean() -> None:
    r = subprocess.run([_tool("gdformat"), "--check", *map(str, GD_FILES)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"run gdformat on the addon:\n{r.stdout}\n{r.stderr}"


def test_plugin_cfg_and_scene_reference_existing_files() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ADDON / "plugin.cfg")
    script = cfg["plugin"]["script"].strip('"')
    assert (ADDON / script).is_file()
    assert cfg["plugin"]["name"].strip('"') == "PropForge"
    scene = (ADDON / "dock.tscn").read_text()
    for res in re.findall(r'path="res://addons/propforge/([^"]+)"', scene):
        assert (ADDON / res).is_file(), res
    for gd in GD_FILES:
        text = gd.read_text()
        assert text.startswith("@tool\n"), f"{gd.name}: editor scripts must be @tool"
        for dep in re.findall(r'preload\("([^"]+)"\)', text):
            assert (gd.parent / dep).is_file(), f"{gd.name} preloads missing {dep}"


def test_token_is_kept_out_of_the_project() -> None:
    """The token lives in EditorSettings (per user), never in ProjectSettings or project files."""
    dock = (ADDON / "dock.gd").read_text()
    assert 'SETTING_TOKEN := "propforge/server/token"' in dock and "get_editor_settings()" in dock
    for gd in GD_FILES:
        assert "ProjectSettings.set_setting" not in gd.read_text(), gd.name
