"""Resuming a download over HTTP, with a server that honours Range requests and one that ignores them."""

from __future__ import annotations

import http.server
import threading

import pytest

from dkd.data import download
from dkd.data.download import RemoteFile


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    content = b""
    honour_range = True
    seen: list = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        header = self.headers.get("Range")
        type(self).seen.append(header)
        start = int(header.removeprefix("bytes=").rstrip("-")) if header and self.honour_range else 0
        body = self.content[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(self.content) - 1}/{len(self.content)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("honour_range", [True, False])
def test_resume_over_http(tmp_path, honour_range):
    content = bytes(range(256)) * 64
    handler = type("H", (_RangeHandler,), {"content": content, "honour_range": honour_range, "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        (tmp_path / "blob.bin.part").write_bytes(content[:5000])
        url = f"http://127.0.0.1:{server.server_address[1]}/blob.bin"
        path = download.download_file(RemoteFile(url, size=len(content)), directory=tmp_path, progress=False)
    finally:
        server.shutdown()
        server.server_close()
    assert handler.seen == ["bytes=5000-"]
    assert path.read_bytes() == content
