"""Class: decisions files (the ratings `gen4gen report --decisions` and the review step read).
A sample rated twice is refused in JSON as in CSV; every bad value is refused naming the file
and the row; ratings that name no sample are counted, never shipped in the page."""

from __future__ import annotations

import json

import pytest

from gen4gen.tasks.views.report import DecisionsError, build_report, parse_decisions, read_decisions, write_report
from hostile_kit import gen4gen, published  # noqa: F401


@pytest.mark.parametrize("data, words", [
    (b'{"a": 5, "a": 1}', "entry 2 (key 'a'): sample 'a' is rated 1 here and 5 on entry 1 (key 'a')"),
    (b'{"ratings": {"b": 2, "a": 4, "b": 3}}', "entry 3 (key 'b'): sample 'b' is rated 3 here and 2 on entry 1"),
    (b"sample_id,rating\na,5\nb,2\na,1\n", "line 4: sample 'a' is rated 1 here and 5 on line 2"),
])
def test_a_sample_rated_twice_is_refused_in_json_as_in_csv(data, words):
    with pytest.raises(DecisionsError) as err:
        parse_decisions(data, "ratings.json")
    assert str(err.value).startswith("ratings.json: ") and words in str(err.value)


def test_the_same_rating_twice_is_accepted_in_json_as_in_csv():
    assert parse_decisions(b'{"a": 4, "a": 4}', "d.json") == {"a": 4}
    assert parse_decisions(b"id,rating\na,4\na,4\n", "d.csv") == {"a": 4}


# Characters str.isdigit() accepts: '²' int() refuses (a ValueError without the file's name),
# '٣' (Arabic-Indic three) and '３' (full width) int() reads as 3.
BAD = ["²", "٣", "３", "0", "6", "-1", "4.5", "", "five", "1e0", "+4", "4 4"]


@pytest.mark.parametrize("value", BAD)
def test_a_bad_rating_in_csv_names_the_file_and_the_line(tmp_path, value):
    path = tmp_path / "ratings.csv"
    path.write_text(f"sample_id,rating\ngood,4\nbad-one,{value}\n", encoding="utf-8")
    with pytest.raises(DecisionsError) as err:
        read_decisions(str(path))
    text = str(err.value)
    assert str(path) in text and "line 3" in text and "bad-one" in text and "not a whole number 1 to 5" in text


@pytest.mark.parametrize("value", [*BAD, 0, 6, 4.5, True, None, [4], {"r": 4}])
def test_a_bad_rating_in_json_names_the_file_and_the_entry(tmp_path, value):
    path = tmp_path / "ratings.json"
    path.write_text(json.dumps({"good": 4, "bad-one": value}), encoding="utf-8")
    with pytest.raises(DecisionsError) as err:
        read_decisions(str(path))
    text = str(err.value)
    assert str(path) in text and "entry 2 (key 'bad-one')" in text and "not a whole number 1 to 5" in text


def test_ascii_ratings_and_whole_floats_still_read():
    assert parse_decisions(b"id,rating\na, 5\nb,1\n", "d.csv") == {"a": 5, "b": 1}
    assert parse_decisions(b'{"a": 3, "b": 2.0, "c": "4"}', "d.json") == {"a": 3, "b": 2, "c": 4}


def test_the_report_cli_names_the_file_and_line_of_a_superscript_rating(published, tmp_path):
    bad = tmp_path / "d.csv"
    bad.write_text("sample_id,rating\nx,²\n", encoding="utf-8")
    result = gen4gen("report", str(published), "--out", str(tmp_path / "r.html"), "--decisions", str(bad), timeout=60)
    assert result.returncode == 2, result.stderr
    assert str(bad) in result.stderr and "line 2" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("fmt, n", [("csv", 1_000_000), ("json", 100_000)])  # the file; JSON alike
def test_a_million_ratings_naming_no_sample_do_not_grow_the_page(published, tmp_path, fmt, n):
    from gen4gen.tasks.views.report import load_version

    version = load_version(str(published))
    sample = version.samples[0].id
    if fmt == "csv":
        data = ("sample_id,rating\n" + "".join(f"x{i},3\n" for i in range(n)) + f"{sample},5\n").encode()
    else:
        data = json.dumps({**{f"x{i}": 3 for i in range(n)}, sample: 5}).encode()
    path = tmp_path / f"ratings.{fmt}"
    path.write_bytes(data)
    ratings = read_decisions(str(path))
    plain = write_report(str(published), str(tmp_path / "plain.html"))
    rated = write_report(str(published), str(tmp_path / "rated.html"), ratings=ratings)
    assert rated.bytes - plain.bytes < 4_000, (plain.bytes, rated.bytes)
    page = (tmp_path / "rated.html").read_text()
    assert f"{n:,} ratings name no sample of this dataset" in page and "x12345" not in page
    assert f'"{sample}": 5' in page  # the dataset's own rating is shipped
    assert rated.agreement.rated == 1 and len(rated.agreement.unknown) == n
    assert any(f"{n:,} ratings name no sample" in line for line in rated.agreement.lines())
    inline = build_report(str(published), ratings=ratings)
    assert inline.bytes - build_report(str(published)).bytes < 4_000
