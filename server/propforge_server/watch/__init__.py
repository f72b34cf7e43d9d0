"""Watch mode: images dropped into a Unity or Godot project become imported PBR assets.

``propforge watch PROJECT_DIR`` (see docs/watch-mode.md). The pieces, in data-flow order:
project (engine + folders) -> intake (stable, complete, options) -> state (hash dedupe) ->
runner (in-process or gRPC) -> unity_meta + status files -> GLB.
"""
from .project import GODOT, UNITY, ProjectLayout, detect_engine, project_layout
from .runner import InProcessRunner, RemoteRunner, RunResult
from .state import StateDB
from .status import read_status, status_path
from .unity_meta import stable_guid
from .watcher import WatchConfig, Watcher

__all__ = ["GODOT", "UNITY", "ProjectLayout", "detect_engine", "project_layout", "InProcessRunner",
           "RemoteRunner", "RunResult", "StateDB", "read_status", "status_path", "stable_guid",
           "WatchConfig", "Watcher"]
