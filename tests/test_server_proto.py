"""The generated protobuf/gRPC code matches proto/ and the option mapping names bad fields."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from conftest import ROOT

from propforge.errors import InputError
from propforge.options import ExportOptions, GenerateOptions
from propforge_server import convert
from propforge_server._proto import propforge_pb2 as pb


def _gen_module():
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "tools" / "gen_proto.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    written = _gen_module().generate(tmp_path)
    committed = ROOT / "server" / "propforge_server" / "_proto"
    assert {p.name for p in written} == {p.name for p in committed.iterdir() if p.is_file() and p.suffix in (".py", ".pyi")}
    stale = [p.name for p in written if p.read_text() != (committed / p.name).read_text()]
    assert not stale, f"run `python tools/gen_proto.py`: stale generated files {stale}"


def test_generated_grpc_module_imports_its_pb2_relatively() -> None:
    from propforge_server._proto import propforge_pb2_grpc

    assert "propforge.v1" not in sys.modules
    assert propforge_pb2_grpc.propforge_dot_v1_dot_propforge__pb2 is pb


def test_zero_values_mean_server_defaults() -> None:
    opts = convert.options_from_proto(pb.JobOptions())
    assert opts == GenerateOptions(backend="auto")


def test_quality_preset_sets_pipeline_type_unless_given() -> None:
    assert convert.options_from_proto(pb.JobOptions(quality="draft")).pipeline_type == "512"
    assert convert.options_from_proto(pb.JobOptions(quality="draft", pipeline_type="1024")).pipeline_type == "1024"


def test_round_trip_keeps_every_option() -> None:
    opts = GenerateOptions(backend="relief", seed=7, pipeline_type="1024",
                           export=ExportOptions(faces=1234, texture_size=256, texture_format="webp", height=2.5,
                                                alpha_mode="MASK"))
    back = convert.options_from_proto(convert.options_to_proto(opts))
    assert back == opts
    # seed 0 is a real seed, kept explicit
    assert convert.options_to_proto(GenerateOptions()).has_seed


@pytest.mark.parametrize("wire, field", [
    (pb.JobOptions(faces=5), "options.faces"),
    (pb.JobOptions(texture_size=100), "options.texture_size"),
    (pb.JobOptions(height=5000.0), "options.height"),
    (pb.JobOptions(backend="blender"), "options.backend"),
    (pb.JobOptions(quality="ultra"), "options.quality"),
    (pb.JobOptions(pipeline_type="2048"), "options.pipeline_type"),
    (pb.JobOptions(alpha_mode="SOMETIMES"), "options.alpha_mode"),
])
def test_bad_option_names_the_field(wire: pb.JobOptions, field: str) -> None:
    with pytest.raises(InputError, match=field):
        convert.options_from_proto(wire)


def test_json_options_reject_unknown_fields_by_name() -> None:
    with pytest.raises(InputError, match="textureSizee"):
        convert.options_from_json({"textureSizee": 256})
    with pytest.raises(InputError, match="options"):
        convert.options_from_json("{not json")
    assert convert.options_from_json({"textureSize": 256, "seed": "42", "hasSeed": True}).seed == 42


def test_client_option_dicts_in_either_spelling() -> None:
    flat = convert.options_dict_to_proto({"backend": "relief", "texture_format": "jpeg", "seed": 3})
    assert flat.texture_format == pb.TEXTURE_FORMAT_JPEG and flat.has_seed and flat.seed == 3
    nested = convert.options_dict_to_proto(GenerateOptions(backend="relief", seed=3).to_dict())
    assert nested.backend == "relief" and nested.seed == 3
    with pytest.raises(InputError, match="model"):
        convert.options_dict_to_proto({**GenerateOptions().to_dict(), "model": "/etc"})
