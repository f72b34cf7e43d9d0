"""Which engine a project folder belongs to, and where the watcher reads and writes inside it.

Godot: ``project.godot`` at the root; drop ``propforge/drop/`` -> output ``propforge/generated/``;
state in ``.godot/propforge/`` (Godot's own project cache, never imported, never committed).
Unity: ``Assets/`` + ``ProjectSettings/``; drop ``Assets/PropForge/Drop/`` -> output
``Assets/PropForge/Generated/``; state in ``Library/PropForge/`` (Unity's cache folder).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from propforge.errors import InputError

UNITY = "unity"
GODOT = "godot"


@dataclass(frozen=True)
class ProjectLayout:
    engine: str          # "unity" | "godot"
    root: Path           # project root (absolute)
    drop: Path           # folder the designer drops images into
    output: Path         # folder the GLBs appear in (drop tree mirrored)
    state: Path          # watcher state (SQLite + lock); not part of the engine's asset tree

    def rel_source(self, path: Path) -> str:
        """Drop-relative POSIX path of a source image: the key everything else is indexed by."""
        return PurePosixPath(Path(path).resolve().relative_to(self.drop).as_posix()).as_posix()

    def source_path(self, rel: str) -> Path:
        return self.drop / Path(*PurePosixPath(rel).parts)

    def output_path(self, rel: str) -> Path:
        """``sub/dir/name.png`` -> ``<output>/sub/dir/name.glb`` (stable name: scenes keep working)."""
        p = PurePosixPath(rel)
        return self.output / Path(*p.parent.parts) / (p.stem + ".glb")

    def project_rel(self, path: Path) -> str:
        """Path relative to the project root with forward slashes (Unity asset path / Godot res:// path)."""
        return Path(path).resolve().relative_to(self.root).as_posix()

    def in_drop(self, path: Path) -> bool:
        try:
            Path(path).resolve().relative_to(self.drop)
            return True
        except ValueError:
            return False


def detect_engine(root: Path) -> str:
    """"godot" if ``project.godot`` exists, "unity" if ``Assets/`` and ``ProjectSettings/`` do."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"project folder {str(root)!r} does not exist or is not a folder")
    is_godot = (root / "project.godot").is_file()
    is_unity = (root / "Assets").is_dir() and (root / "ProjectSettings").is_dir()
    if is_godot and is_unity:
        raise InputError(f"{root} looks like both a Godot project (project.godot) and a Unity project "
                         "(Assets/ + ProjectSettings/); pass --engine godot or --engine unity")
    if is_godot:
        return GODOT
    if is_unity:
        return UNITY
    raise InputError(f"{root} is not a game project: expected project.godot (Godot) or "
                     "Assets/ and ProjectSettings/ (Unity)")


def project_layout(root: str | Path, engine: str | None = None) -> ProjectLayout:
    """Resolve the folders for ``root``; ``engine`` overrides detection."""
    root = Path(root).expanduser().resolve()
    engine = engine or detect_engine(root)
    if engine == GODOT:
        return ProjectLayout(GODOT, root, root / "propforge" / "drop", root / "propforge" / "generated",
                             root / ".godot" / "propforge")
    if engine == UNITY:
        return ProjectLayout(UNITY, root, root / "Assets" / "PropForge" / "Drop",
                             root / "Assets" / "PropForge" / "Generated", root / "Library" / "PropForge")
    raise InputError(f"unknown engine {engine!r}; choose unity or godot")
