"""`propforge generate` / `propforge validate` as a user runs them: real subprocesses, real files."""
from __future__ import annotations

import hashlib
import io
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, make_cutout

SMALL = ["--faces", "600", "--texture-size", "128"]


def propforge(*args: str, timeout: float = 300, stderr_tty: bool = False, env: dict | None = None
              ) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "propforge_server.cli", *map(str, args)]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if not stderr_tty:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=full_env)
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, cwd=ROOT, env=full_env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    out = proc.stdout.read().decode()
    proc.wait(timeout)
    os.close(master)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, b"".join(chunks).decode(errors="replace"))


def assert_user_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit code 2, exactly one line on stderr naming the problem, no traceback."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr
    assert len(lines) == 1, res.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("imgs")
    out = {}
    make_cutout(96, "disc").save(d / "disc.png")
    make_cutout(96, "L", seed=1).save(d / "ell.png")
    out["disc"], out["ell"] = d / "disc.png", d / "ell.png"
    rgb = np.full((96, 96, 3), 250, np.uint8)
    rgb[20:76, 30:66] = (30, 120, 200)
    Image.fromarray(rgb).save(d / "plain.jpg", quality=95)
    out["plain"] = d / "plain.jpg"
    (d / "notes.png").write_text("not a picture")
    out["text"] = d / "notes.png"
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), np.uint8)).save(buf, "PNG")
    (d / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    out["truncated"] = d / "cut.png"
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(d / "clear.png")
    out["transparent"] = d / "clear.png"
    Image.new("RGBA", (1, 1), (9, 9, 9, 255)).save(d / "dot.png")
    out["tiny"] = d / "dot.png"
    sub = d / "other"
    sub.mkdir()
    make_cutout(96, "disc", seed=2).save(sub / "disc.png")     # same stem as disc.png
    out["disc_again"] = sub / "disc.png"
    return out


def test_help_is_honest_about_relief():
    res = propforge("generate", "--help")
    assert res.returncode == 0
    text = " ".join(res.stdout.split())
    assert "2.5D relief" in text and "NOT a 3D reconstruction" in text and "trellis2" in text


def test_one_image_to_valid_glb(images, tmp_path, assert_valid_glb):
    out = tmp_path / "disc.glb"
    res = propforge("generate", images["disc"], "-o", out, *SMALL)
    assert res.returncode == 0, res.stderr
    assert out.is_file() and "Traceback" not in res.stderr
    assert f"wrote {out}" in res.stdout and "backend relief" in res.stdout and "2.5D relief" in res.stdout
    assert_valid_glb(out)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_several_images_to_folder_and_json_events(images, tmp_path, assert_valid_glb):
    out = tmp_path / "props"
    srcs = [images["disc"], images["plain"], images["disc_again"]]
    res = propforge("generate", *srcs, "-o", out, "--json", "--seed", "3", *SMALL)
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines()]
    done = [e for e in events if e["event"] == "done"]
    assert [e["image"] for e in done] == [str(s) for s in srcs]
    assert sorted(p.name for p in out.iterdir()) == ["disc.glb", "disc_2.glb", "plain.glb"]
    for e in done:
        data = Path(e["output"]).read_bytes()
        assert e["sha256"] == hashlib.sha256(data).hexdigest() and e["backend"] == "relief"
        assert "2.5D relief" in e["notes"]
        assert_valid_glb(data)
    first = [e for e in events if e.get("image") == str(srcs[0])]
    assert first[0]["event"] == "start" and first[-1]["event"] == "done"
    prog = [e for e in first if e["event"] == "progress"]
    stages = list(dict.fromkeys(e["stage"] for e in prog))
    assert stages == ["prepare", "decode", "mesh", "uv", "bake", "write"]
    fr = [e["fraction"] for e in prog]
    assert fr == sorted(fr) and fr[-1] == pytest.approx(1.0)
    meta = json.loads(_glb_json(out / "disc.glb"))["asset"]["extras"]
    assert meta["generator"] == "relief" and meta["seed"] == 3
    assert meta["source_sha256"] == hashlib.sha256(images["disc"].read_bytes()).hexdigest()


def _glb_json(path: Path) -> str:
    data = path.read_bytes()
    n = int.from_bytes(data[12:16], "little")
    return data[20:20 + n].decode()


def test_progress_bar_on_a_terminal(images, tmp_path):
    res = propforge("generate", images["ell"], "-o", tmp_path / "e.glb", *SMALL, stderr_tty=True)
    assert res.returncode == 0, res.stderr
    for stage in ("prepare", "decode", "bake", "write"):
        assert stage in res.stderr
    assert "%" in res.stderr and "\r" in res.stderr and "relief" in res.stderr


@pytest.mark.parametrize("args,needle", [
    (["--faces", "5"], "faces must be between"),
    (["--faces", "lots"], "--faces"),
    (["--texture-size", "300"], "texture size must be one of"),
    (["--texture-format", "gif"], "--texture-format"),
    (["--height", "-1"], "height must be between"),
    (["--seed", "-4"], "seed must be"),
    (["--backend", "magic"], "--backend"),
    (["--pipeline-type", "2048"], "pipeline type must be one of"),
])
def test_bad_option_values(images, tmp_path, args, needle):
    res = propforge("generate", images["disc"], "-o", tmp_path / "x.glb", *args)
    assert_user_error(res, needle)
    assert not (tmp_path / "x.glb").exists()


@pytest.mark.parametrize("key,needle", [
    ("text", "not an image"),
    ("truncated", "truncated or corrupt"),
    ("transparent", "fully transparent"),
    ("tiny", "too small"),
])
def test_bad_files(images, tmp_path, key, needle):
    res = propforge("generate", images[key], "-o", tmp_path / "x.glb", *SMALL)
    assert_user_error(res, needle, str(images[key]))
    assert not list(tmp_path.iterdir()), "nothing is written for a failed image"


def test_missing_file_and_bad_output(images, tmp_path):
    assert_user_error(propforge("generate", tmp_path / "nope.png", "-o", tmp_path / "x.glb"), "file not found")
    assert_user_error(propforge("generate", images["disc"], "-o", tmp_path / "x.obj"), "must end in .glb")
    assert_user_error(propforge("generate", images["disc"], images["ell"], "-o", tmp_path / "x.glb"),
                      "must be a folder")
    res = propforge("generate", images["disc"])
    assert res.returncode == 2 and "-o/--output" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_one_bad_image_does_not_stop_the_others(images, tmp_path, assert_valid_glb):
    out = tmp_path / "batch"
    res = propforge("generate", images["disc"], images["text"], images["ell"], "-o", out, *SMALL)
    assert res.returncode == 2
    assert sorted(p.name for p in out.iterdir()) == ["disc.glb", "ell.glb"]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("propforge: error:")]
    assert len(errors) == 1 and str(images["text"]) in errors[0] and "not an image" in errors[0]
    assert "1 of 3 images failed" in res.stderr and "Traceback" not in res.stderr
    assert res.stdout.count("wrote ") == 2


def test_trellis2_without_gpu_or_weights_says_so(images, tmp_path):
    pytest.importorskip("torch")
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    res = propforge("generate", images["disc"], "-o", tmp_path / "x.glb", "--backend", "trellis2",
                    "--model", str(tmp_path / "no-such-model"))
    assert_user_error(res, "trellis2", "no CUDA GPU", "--backend relief")
    assert not (tmp_path / "x.glb").exists()
    # default model id, no network: still one line (library messages span lines)
    res = propforge("generate", images["disc"], "-o", tmp_path / "x.glb", "--backend", "trellis2",
                    env={"HF_HUB_OFFLINE": "1"})
    assert_user_error(res, "trellis2", "no CUDA GPU")


def test_validate_command(images, tmp_path):
    out = tmp_path / "d.glb"
    assert propforge("generate", images["disc"], "-o", out, *SMALL).returncode == 0
    from propforge.validate import validator_available
    if not validator_available():
        pytest.skip("glTF validator not installed")
    res = propforge("validate", out)
    assert res.returncode == 0 and res.stdout.startswith(f"ok: {out} (0 errors")
    bad = tmp_path / "bad.glb"
    bad.write_bytes(b"glTF" + out.read_bytes()[4:200])
    res = propforge("validate", bad, "--json")
    assert res.returncode == 1 and json.loads(res.stdout)["ok"] is False
    assert_user_error(propforge("validate", tmp_path / "none.glb"), "file not found")


def test_server_mode(images, tmp_path, assert_valid_glb):
    server_mod = pytest.importorskip("propforge_server.server")
    cfg = server_mod.ServerConfig(host="127.0.0.1", grpc_port=0, http_port=-1, backend="relief", workers=1,
                                  store=tmp_path / "store", token="s3cret")
    with server_mod.ThreadedServer(cfg) as srv:
        out = tmp_path / "remote.glb"
        res = propforge("generate", images["disc"], "-o", out, "--server", srv.grpc_address,
                        "--token", "s3cret", "--json", *SMALL)
        assert res.returncode == 0, res.stderr
        done = json.loads(res.stdout.splitlines()[-1])
        assert done["event"] == "done" and done["backend"] == "relief"
        assert done["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
        assert any(json.loads(ln).get("stage") == "bake" for ln in res.stdout.splitlines())
        assert_valid_glb(out)
        res = propforge("generate", images["disc"], "-o", tmp_path / "no.glb", "--server", srv.grpc_address,
                        "--token", "wrong", *SMALL)
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert "token" in res.stderr.lower() or "auth" in res.stderr.lower()
        assert not (tmp_path / "no.glb").exists()
