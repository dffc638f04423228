"""Class: raw tracebacks. verify, report and the review step on a truncated manifest, a
malformed shard record, a CSV row with an extra field, deeply nested JSON."""

from __future__ import annotations

import json

import pytest

from gen4gen.infra import storage
from gen4gen.tasks.views.report import DecisionsError, build_report, parse_decisions, read_decisions
from gen4gen.tasks.publishing.verify import problems
from hostile_kit import dataset, gen4gen, published  # noqa: F401


def _truncate(ds):
    data = (ds / "manifest.json").read_bytes()
    (ds / "manifest.json").write_bytes(data[: len(data) // 2])


def _deep(ds):
    (ds / "manifest.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)


def _not_a_manifest(ds):
    (ds / "manifest.json").write_text(json.dumps({"dataset": "../x", "files": []}))


def _bad_shard_line(ds):
    m = json.loads((ds / "manifest.json").read_text())
    st = m["compositions"][0]
    data = (ds / st["shard"]).read_bytes() + b'{"id": 3, "status": "kept"}\n'
    (ds / st["shard"]).write_bytes(data)
    st["shard_sha256"] = storage.sha256(data)
    (ds / "manifest.json").write_text(json.dumps(m))


def _binary_shard(ds):
    m = json.loads((ds / "manifest.json").read_text())
    st = m["compositions"][0]
    data = b"\xff\xfe\x00garbage\n"
    (ds / st["shard"]).write_bytes(data)
    st["shard_sha256"] = storage.sha256(data)
    (ds / "manifest.json").write_text(json.dumps(m))


DAMAGE = {"truncated manifest": (_truncate, "not valid JSON"), "deep manifest": (_deep, "nested"),
          "foreign manifest": (_not_a_manifest, "not a manifest of this project"),
          "bad shard record": (_bad_shard_line, "not a sample record"), "binary shard": (_binary_shard, "not UTF-8")}


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_verify_and_report_name_the_damage(dataset, name, tmp_path):
    damage, words = DAMAGE[name]
    damage(dataset)
    found = problems(str(dataset))
    assert found and words in " ".join(found), found
    result = gen4gen("report", str(dataset), "--out", str(tmp_path / "r.html"), timeout=60)
    assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_verify_cli_on_damage_exits_1_without_a_traceback(dataset):
    _truncate(dataset)
    result = gen4gen("verify", str(dataset), timeout=60)
    assert result.returncode == 1 and "not valid JSON" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("data, words", [
    (b"sample_id,rating\nabc,4,extra\n", "line 2: 3 fields where the header has 2"),
    (b"sample_id,rating\nabc,4\nabc,2\n", "rated 2 here and 4 on line 2"),
    (b'{"a": {"b": 1}}', "rating dict for 'a'"),
    (b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested"),
    (b"\xff\xfe{}", "not a whole number"),
])
def test_decisions_files_that_are_refused_by_name(data, words):
    with pytest.raises(DecisionsError, match="d.csv"):
        try:
            parse_decisions(data, "d.csv")
        except DecisionsError as err:
            assert words in str(err) or data.startswith(b"\xff"), str(err)
            raise
        else:
            raise DecisionsError("d.csv: accepted")


def test_a_decisions_file_that_is_a_device_is_refused(tmp_path):
    with pytest.raises(DecisionsError, match="not a regular file"):
        read_decisions("/dev/zero")


def test_report_cli_with_a_broken_decisions_file(dataset, tmp_path):
    bad = tmp_path / "d.csv"
    bad.write_text("sample_id,rating\nx,4,5\n")
    result = gen4gen("report", str(dataset), "--out", str(tmp_path / "r.html"), "--decisions", str(bad), timeout=60)
    assert result.returncode == 2 and "d.csv: line 2" in result.stderr and "Traceback" not in result.stderr


def test_an_unexpected_error_prints_one_line_and_verbose_shows_the_traceback(dataset, tmp_path):
    (tmp_path / "file.txt").write_text("x")
    target = tmp_path / "file.txt" / "r.html"  # under a file: a fault no check names
    result = gen4gen("report", str(dataset), "--out", str(target), timeout=60)
    assert result.returncode == 1 and "file.txt" in result.stderr and "--verbose" in result.stderr
    assert "Traceback" not in result.stderr
    verbose = gen4gen("report", str(dataset), "--out", str(target), "--verbose", timeout=60)
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr
    unknown = gen4gen("verify", "ftp://host/x", timeout=60)
    assert unknown.returncode == 1 and "unknown URI scheme 'ftp'" in unknown.stderr and "Traceback" not in unknown.stderr
