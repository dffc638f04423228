"""Class: reading outside the dataset. Manifest keys, shard paths and record paths must be
relative and inside; `report` shows source photos only from the factory's thumbnails."""

from __future__ import annotations

import io

import json

import pytest
from PIL import Image

from gen4gen.infra import storage
from gen4gen.infra.errors import BadInput
from gen4gen.tasks.views.report import build_report, thumbnail
from gen4gen.tasks.publishing.verify import problems
from hostile_kit import dataset, gen4gen, published  # noqa: F401  (fixtures)


def _edit_manifest(ds, fn):
    path = ds / "manifest.json"
    m = json.loads(path.read_text())
    fn(m)
    path.write_text(json.dumps(m))


@pytest.mark.parametrize("key", ["../outside.txt", "/etc/hostname", "a/../../outside.txt", "file:///etc/hostname",
                                 "s3://other-bucket/x", "a\\..\\..\\x", "./manifest.json", "a//b"])
def test_verify_refuses_manifest_keys_outside_the_root_and_tests_nothing_there(dataset, key):
    (dataset.parent / "outside.txt").write_text("private")
    _edit_manifest(dataset, lambda m: m["files"].update({key: "0" * 64}))
    found = problems(str(dataset))
    assert len(found) == 1 and "not a relative path inside" in found[0], found
    # Nothing tells whether the file outside exists: the same answer either way.
    (dataset.parent / "outside.txt").unlink()
    assert problems(str(dataset)) == found


def test_a_shard_path_outside_the_root_is_refused(dataset):
    _edit_manifest(dataset, lambda m: m["compositions"][0].update(shard="../../etc/passwd"))
    found = problems(str(dataset))
    assert found and "not a relative path inside" in found[0]


def test_a_sample_record_pointing_outside_is_refused(dataset):
    """A shard whose hash was fixed up after editing a path: the path check still holds."""
    m = json.loads((dataset / "manifest.json").read_text())
    st = m["compositions"][0]
    lines = (dataset / st["shard"]).read_text().splitlines()
    rec = json.loads(lines[0])
    rec["paths"]["repaint"] = "../../../home/someone/secret.png"
    data = (json.dumps(rec) + "\n" + "\n".join(lines[1:])).encode()
    (dataset / st["shard"]).write_bytes(data)
    st["shard_sha256"] = storage.sha256(data)
    (dataset / "manifest.json").write_text(json.dumps(m))
    found = problems(str(dataset))
    assert any("paths.repaint" in p and "not a relative path inside" in p for p in found), found
    with pytest.raises(BadInput, match="paths.repaint"):
        build_report(str(dataset))


def test_report_never_reads_the_photo_a_record_names(dataset, tmp_path):
    """The records name file:// photos (the recipe's); a copied dataset's records could name
    anything. The page shows photos only from the factory's .thumbs/ inside the dataset."""
    private = tmp_path / "private.png"
    Image.new("RGB", (200, 200), (255, 0, 255)).save(private)
    m = json.loads((dataset / "manifest.json").read_text())
    st = m["compositions"][0]
    lines = [json.loads(x) for x in (dataset / st["shard"]).read_text().splitlines()]
    for rec in lines:
        rec["plan"]["photos"] = {cid: private.as_uri() for cid in rec["plan"]["photos"]}
    data = "".join(json.dumps(r) + "\n" for r in lines).encode()
    (dataset / st["shard"]).write_bytes(data)
    st["shard_sha256"] = storage.sha256(data)
    (dataset / "manifest.json").write_text(json.dumps(m))
    page = build_report(str(dataset)).html
    assert thumbnail(private.read_bytes(), "x") not in page
    assert "no thumbnail made by the factory" in page
    # A thumbnail the factory stored (named by a gallery view under .thumbs/) is shown.
    import hashlib

    from gen4gen.tasks.views.report import data_uri

    made = dataset / ".thumbs" / "160"
    made.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.new("RGB", (120, 90), (0, 128, 255)).save(buf, format="JPEG")
    thumbnail_bytes = buf.getvalue()
    sha = hashlib.sha256(thumbnail_bytes).hexdigest()
    (made / f"{sha}.jpg").write_bytes(thumbnail_bytes)
    view = dataset / ".thumbs" / st["composition"] / f"gallery-{st['shard_sha256'][:16]}.json"
    view.parent.mkdir(parents=True, exist_ok=True)
    found = json.loads(view.read_text()) if view.exists() else {}
    found["photos"] = {**found.get("photos", {}), private.as_uri(): f".thumbs/160/{sha}.jpg"}
    view.write_text(json.dumps(found))
    assert data_uri(thumbnail_bytes) in build_report(str(dataset)).html


def test_verify_cli_says_what_is_wrong_without_a_traceback(dataset):
    _edit_manifest(dataset, lambda m: m["files"].update({"../../x": "0" * 64}))
    result = gen4gen("verify", str(dataset), timeout=60)
    assert result.returncode == 1 and "not a relative path inside" in result.stderr
    assert "Traceback" not in result.stderr
