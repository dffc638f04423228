"""Gallery links open in a browser: presigned HTTP on S3, inline data on a local disk."""

from __future__ import annotations

import base64
import urllib.request

from gen4gen.infra.storage import write_bytes
from gen4gen.tasks.views.gallery import _link


def test_s3_thumbnails_link_to_a_url_the_endpoint_serves(s3_server):
    import os

    uri = f"{s3_server}/demo/.thumbs/cat-mug/s1/final.jpg"
    write_bytes(uri, b"\xff\xd8jpeg-bytes")
    url = _link(uri, "final").removeprefix("![final](").removesuffix(")")
    assert url.startswith(os.environ["AWS_ENDPOINT_URL"]) and "Signature" in url
    with urllib.request.urlopen(url, timeout=10) as reply:  # what the browser does
        assert reply.read() == b"\xff\xd8jpeg-bytes"


def test_local_thumbnails_are_linked_not_inlined(tmp_path):
    uri = (tmp_path / "x.jpg").as_uri()
    assert _link(uri, "final") == f"[final]({uri})"
