"""Fixtures for the data tests: a local HTTP server and tiny dataset files.

Nothing here touches the internet: downloads are served from 127.0.0.1 by a
``ThreadingHTTPServer`` whose misbehaviour (ignored ``Range``, cut bodies,
corrupt bytes, 404) each test chooses.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import socket
import tarfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

MODES = ("ok", "ignore-range", "truncate", "corrupt", "404", "no-length")


class FileServer:
    """Files served by path; each request takes the next of the file's modes.

    ``add(name, data, "truncate", "ok")``: the first request is cut short, every
    later one is served normally (the last mode repeats).
    """

    def __init__(self, base: str) -> None:
        self.base = base
        self.files: dict[str, tuple[bytes, list[str]]] = {}
        self.log: list[tuple[str, str | None, str]] = []  # (path, Range header, mode)

    def add(self, name: str, data: bytes, *modes: str) -> str:
        assert all(m in MODES for m in modes), modes
        self.files["/" + name] = (data, list(modes) or ["ok"])
        return self.url(name)

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def requests(self, name: str) -> list[tuple[str | None, str]]:
        return [(rng, mode) for path, rng, mode in self.log if path == "/" + name]


def _handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            entry = server.files.get(self.path)
            rng = self.headers.get("Range")
            if entry is None:
                server.log.append((self.path, rng, "404"))
                self.send_error(404)
                return
            data, modes = entry
            mode = modes.pop(0) if len(modes) > 1 else modes[0]
            server.log.append((self.path, rng, mode))
            if mode == "404":
                self.send_error(404)
                return
            if mode == "corrupt":
                data = bytes(b ^ 0xFF for b in data[:8]) + data[8:]
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", rng or "")
            if match and mode != "ignore-range":
                start = int(match.group(1))
                if start >= len(data):
                    self.send_error(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            if mode == "no-length":  # HTTP/1.0: the body ends when the connection closes
                self.close_connection = True
            else:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if mode == "truncate":
                body = body[: len(body) // 2]
                self.close_connection = True
            self.wfile.write(body)
            self.wfile.flush()

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def http_files() -> Iterator[FileServer]:
    """A file server on 127.0.0.1 (a free port), stopped after the test."""
    files = FileServer("")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(files))
    files.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield files
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def refused_url() -> str:
    """A URL on a port nothing listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/file.bin"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ``$EPOCHLAB_DATA`` for the test."""
    directory = tmp_path / "cache"
    monkeypatch.setenv("EPOCHLAB_DATA", str(directory))
    return directory


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def digest() -> Callable[[bytes], str]:
    """Hex SHA-256 of bytes."""
    return sha256


@pytest.fixture
def make_idx() -> Callable[[np.ndarray], bytes]:
    """Encode an array as an IDX file of unsigned bytes."""
    return idx_bytes


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes holding ``array``."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


@pytest.fixture
def mnist_arrays() -> dict[str, np.ndarray]:
    """A 20-train / 10-test MNIST look-alike; every digit appears in both."""
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "y_train": (np.arange(20) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "y_test": (np.arange(10) % 10).astype(np.uint8),
    }


@pytest.fixture
def mnist_files(mnist_arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    """The four gzipped IDX files of ``mnist_arrays``, keyed by standard name."""
    names = {
        "x_train": "train-images-idx3-ubyte.gz",
        "y_train": "train-labels-idx1-ubyte.gz",
        "x_test": "t10k-images-idx3-ubyte.gz",
        "y_test": "t10k-labels-idx1-ubyte.gz",
    }
    return {names[k]: gzip.compress(idx_bytes(a), mtime=0) for k, a in mnist_arrays.items()}


@pytest.fixture
def ragged() -> Callable[[list[list[int]]], np.ndarray]:
    """Make an object array of lists, as Keras' imdb.npz stores reviews."""

    def make(rows: list[list[int]]) -> np.ndarray:
        out = np.empty(len(rows), dtype=object)
        for i, row in enumerate(rows):
            out[i] = list(row)
        return out

    return make


@pytest.fixture
def review_tarball() -> Callable[[Path, dict[str, dict[str, list[str]]]], Path]:
    """Write an aclImdb-style tar.gz: ``{"train": {"pos": [...], "neg": [...]}, ...}``."""

    def write(path: Path, reviews: dict[str, dict[str, list[str]]], extra=()) -> Path:
        with tarfile.open(path, "w:gz") as tar:
            for split, by_label in reviews.items():
                for label, texts in by_label.items():
                    for i, text in enumerate(texts):
                        add_file(tar, f"aclImdb/{split}/{label}/{i}_7.txt", text.encode())
            for name, data in extra:
                add_file(tar, name, data)
        return path

    return write


def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
