"""`metarun-data`: downloads against a local HTTP server (a thread serving the synthetic archives: whole, with a
wrong checksum, cut short, stalled, missing), no network at all, `list`, and `miniimagenet` on a synthetic copy.

What every failed download must leave: nothing under the dataset's file name, and no temporary file either
(except after a kill, which the next download cleans up)."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from metarun.commands.data import main
from metarun.data import download, omniglot
from metarun.data.cache import MANIFEST, DataError
from test_miniimagenet import Data

NAMES = ("images_background", "images_evaluation")


class Server:
    """Serves `files` at /NAME; `modes[NAME]`: ok, truncated (half the promised bytes, then close), stall (half,
    then silence until released), missing (404)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.modes, self.release = files, {}, threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                mode = server.modes.get(name, "ok")
                if name not in server.files or mode == "missing":
                    self.send_error(404)
                    return
                data = server.files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if mode == "ok":
                    self.wfile.write(data)
                    return
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                if mode == "stall":
                    server.release.wait(20)
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(synthetic_omniglot):
    files = {f"{name}.zip": (synthetic_omniglot.data / f"{name}.zip").read_bytes() for name in NAMES}
    served = Server(files)
    yield served
    served.close()


def nothing_left(root: Path) -> None:
    assert not root.exists() or not [p.name for p in root.iterdir()], sorted(root.iterdir())


def error(capsys) -> str:
    """The one-paragraph error: the last line of stderr, the only one starting `metarun-data: error:`."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    said = [line for line in lines if line.startswith("metarun-data: error: ")]
    assert len(said) == 1 and lines[-1] == said[0], lines
    return said[0]


def test_official_archives_are_downloaded_checked_by_md5_and_renamed(server, tmp_path, monkeypatch, capsys):
    # The synthetic archives stand in for the official ones: their md5s are made the official ones.
    md5 = {name: hashlib.md5(server.files[f"{name}.zip"]).hexdigest() for name in NAMES}
    monkeypatch.setattr(omniglot, "OFFICIAL_MD5", md5)
    root = tmp_path / "data"
    assert main(["omniglot", "--root", str(root), "--url", server.url + "/"]) == 0
    assert sorted(p.name for p in root.iterdir()) == ["images_background.zip", "images_evaluation.zip"]
    assert all((root / f"{n}.zip").read_bytes() == server.files[f"{n}.zip"] for n in NAMES)
    out = capsys.readouterr().out
    assert f"images_background: downloaded {server.url}/images_background.zip to {root}/images_background.zip: " \
           "the official archive (md5 matches)" in out
    assert f"`metarun data=omniglot data.root={root}` reads it" in out
    # Run again: what is there is verified, not downloaded again.
    server.modes = dict.fromkeys(server.files, "missing")
    assert main(["omniglot", "--root", str(root), "--url", server.url]) == 0
    out = capsys.readouterr().out
    assert f"images_evaluation: {root}/images_evaluation.zip is present: the official archive" in out


def test_wrong_checksum_and_content_keeps_nothing(server, tmp_path, capsys, monkeypatch):
    root = tmp_path / "data"
    monkeypatch.setenv("METARUN_OMNIGLOT_URL", server.url)  # the documented override
    assert main(["omniglot", "--root", str(root)]) == 1
    message = error(capsys)
    md5 = hashlib.md5(server.files["images_background.zip"]).hexdigest()
    assert f"{server.url}/images_background.zip has md5 {md5}, not the official archive's " \
           f"{omniglot.OFFICIAL_MD5['images_background']}, and its content is not the release either: " in message
    assert "holds 4 alphabets and 12 characters; the official images_background has 30 and 964" in message
    assert f"check `--url` (or METARUN_OMNIGLOT_URL). Nothing was kept under {root}/images_background.zip." in message
    nothing_left(root)


def test_truncated_download_keeps_nothing(server, tmp_path, capsys):
    server.modes["images_background.zip"] = "truncated"
    root = tmp_path / "data"
    assert main(["omniglot", "--root", str(root), "--url", server.url]) == 1
    size = len(server.files["images_background.zip"])
    assert f"the download of {server.url}/images_background.zip stopped after {size // 2:,} of {size:,} bytes" \
           in error(capsys)
    nothing_left(root)


def test_interrupted_download_keeps_nothing(server, tmp_path, capsys, monkeypatch):
    """Ctrl-C in the middle of the transfer (the second block of a stalled download)."""
    server.modes["images_background.zip"] = "stall"
    monkeypatch.setattr(download, "CHUNK", 4096)
    real = download.tqdm

    class Interrupting(real):
        received = 0

        def update(self, n=1):
            super().update(n)
            Interrupting.received += n
            if Interrupting.received > 4096:
                raise KeyboardInterrupt

    monkeypatch.setattr(download, "tqdm", Interrupting)
    root = tmp_path / "data"
    assert main(["omniglot", "--root", str(root), "--url", server.url]) == 130
    assert "interrupted; no partial file was left" in capsys.readouterr().err
    nothing_left(root)


def test_killed_download_leaves_nothing_under_the_final_name(server, tmp_path):
    server.modes["images_background.zip"] = "stall"
    dest = tmp_path / "data" / "images_background.zip"
    url = f"{server.url}/images_background.zip"
    pid = os.fork()
    if pid == 0:  # the child downloads until it is killed; it runs no torch op
        try:
            download.fetch(url, dest, lambda tmp, md5: "", "offline")
        finally:
            os._exit(1)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not [p for p in dest.parent.glob(".*.part") if p.stat().st_size]:
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    assert os.waitpid(pid, 0)[1] == signal.SIGKILL
    (part,) = dest.parent.glob(".images_background.zip.*.part")
    assert not dest.exists() and 0 < part.stat().st_size < len(server.files["images_background.zip"])
    # The next download removes what the killed one left, and completes.
    server.modes["images_background.zip"] = "ok"
    assert download.fetch(url, dest, lambda tmp, md5: md5, "offline") == hashlib.md5(
        server.files["images_background.zip"]).hexdigest()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["images_background.zip"]


def test_no_network_fails_in_one_paragraph_saying_where_to_put_the_files(tmp_path, capsys):
    with socket.socket() as s:  # a port that nothing listens on: the connection is refused, as offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path / "data"
    assert main(["omniglot", "--root", str(root), "--url", f"http://127.0.0.1:{port}"]) == 1
    message = error(capsys)
    assert f"cannot download http://127.0.0.1:{port}/images_background.zip (" in message
    assert "Without network access: get images_background.zip and images_evaluation.zip from " \
           "https://github.com/brendenlake/omniglot (folder python/) on another machine, put them in " \
           f"{root}, and run `metarun-data omniglot --root {root}` to verify them." in message
    nothing_left(root)


def test_a_missing_file_on_the_server(server, tmp_path, capsys):
    server.modes["images_background.zip"] = "missing"
    assert main(["omniglot", "--root", str(tmp_path / "data"), "--url", server.url]) == 1
    assert f"cannot download {server.url}/images_background.zip: the server answered 404" in error(capsys)
    nothing_left(tmp_path / "data")


def test_archives_already_present_are_verified(synthetic_omniglot, tmp_path, capsys):
    """Small archives are not the release: refused (exit 2) without downloading anything."""
    assert main(["omniglot", "--root", str(synthetic_omniglot.data), "--url", "http://127.0.0.1:9"]) == 2
    message = error(capsys)
    assert f"{synthetic_omniglot.data}/images_background.zip has md5 " in message and "holds 4 alphabets" in message
    assert "Delete it and run `metarun-data omniglot` again to download it." in message


def test_list_says_where_and_what(synthetic_omniglot, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("METARUN_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("METARUN_CACHE", str(tmp_path / "cache"))
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert f"omniglot      {tmp_path}/nothing/omniglot      missing (images_background and images_evaluation): " \
           "`metarun-data omniglot` downloads it" in out
    assert "miniimagenet  " in out and "missing: bring your own copy" in out
    assert "sine" in out and "data=folder data.root=PATH" in out
    # Small archives where the release should be, and a miniImageNet images/ folder missing its images.
    (tmp_path / "data").mkdir()
    os.symlink(synthetic_omniglot.data, tmp_path / "data" / "omniglot")
    (tmp_path / "data" / "miniimagenet" / "images").mkdir(parents=True)
    monkeypatch.setenv("METARUN_DATA", str(tmp_path / "data"))
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "INVALID: " in out and "holds 4 alphabets and 12 characters" in out
    assert "of the split's images are missing" in out


def test_miniimagenet_is_verified_and_cached(tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="metarun")
    data = Data(tmp_path / "mini")
    args = ["miniimagenet", "--root", str(data.folder), "--split-dir", str(data.split_dir), "--cache-dir",
            str(data.cache)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "train: 5 classes x 6 images (images), verified" in out and "test: 5 classes x 6 images" in out
    assert f"`metarun data=miniimagenet data.root={data.folder}` starts from it" in out
    assert len(list(data.cache.rglob(MANIFEST))) == 3
    assert "building the miniImageNet train cache" in caplog.text
    caplog.clear()
    assert main(args) == 0
    assert "building" not in caplog.text  # verified again, and the caches kept


def test_miniimagenet_without_data_explains_the_layouts(tmp_path, capsys):
    assert main(["miniimagenet", "--root", str(tmp_path / "nowhere")]) == 2
    captured = capsys.readouterr()
    assert "mini-imagenet-cache-<split>.pkl" in captured.out and "images/<filename>.jpg" in captured.out
    assert f"{tmp_path / 'nowhere'} does not exist" in captured.err


def test_fetch_refuses_to_write_where_it_cannot(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match=r"cannot write into .*file.*Choose a writable folder"):
        download.fetch("http://127.0.0.1:9/x", blocker / "x.zip", lambda tmp, md5: "", "offline")


# ---- the real release (skipped without it) -----------------------------------------------------------------------

def test_real_archives_are_accepted_by_their_content(real_omniglot, tmp_path, capsys, monkeypatch):
    """The reference copies were repacked (other md5s): downloaded from a mirror, they pass on their content."""
    served = Server({f"{name}.zip": (real_omniglot / f"{name}.zip").read_bytes() for name in NAMES})
    try:
        root = tmp_path / "data"
        assert main(["omniglot", "--root", str(root), "--url", served.url]) == 0
    finally:
        served.close()
    out = capsys.readouterr().out
    assert "is not the official archive's, but its content verifies (964 characters" in out
    assert "(659 characters, 20 drawings each, every member's CRC intact): a repacked copy" in out
    monkeypatch.setenv("METARUN_DATA", str(real_omniglot.parent))
    assert main(["list"]) == 0
    assert "present, verified" in capsys.readouterr().out
