"""Downloading one dataset file: into a temporary file beside its destination, checked, then renamed.

Nothing appears under the final name unless it arrived whole and passed its check. A download
that fails (no network, a server error, a connection cut short, a wrong checksum, Ctrl-C)
removes its temporary file; one killed outright leaves `.NAME.*.part`, never NAME, and the next
download of NAME removes it. No torch here: the command stays quick to start.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from metarun.data.cache import DataError

CHUNK = 1 << 16
TIMEOUT_S = 60.0  # of silence on the connection, not of the whole download


class DownloadError(DataError):
    """The file could not be fetched whole (network, server, interruption); the message says what to do."""


def fetch(url: str, dest: Path, check: Callable[[Path, str], str], offline: str,
          timeout: float = TIMEOUT_S) -> str:
    """Download `url` to `dest`; returns what `check(temporary_path, md5_hex)` says of the bytes.

    `check` raises DataError to refuse them. `offline` ends the message of a failed transfer:
    how to get the file without this command.
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        for stale in dest.parent.glob(f".{dest.name}.*.part"):  # left by a download that was killed
            stale.unlink(missing_ok=True)
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as e:
        raise DataError(f"cannot write into {dest.parent} ({e.strerror or e}). Choose a writable folder with "
                        "`--root DIR` (and point `data.root` there).") from None
    tmp = Path(name)
    try:
        try:
            with os.fdopen(fd, "wb") as out:
                digest = _receive(url, out, timeout, offline)
                out.flush()
                os.fsync(out.fileno())
        except OSError as e:  # the network's own errors are DownloadErrors by now: this is the local disk
            raise DataError(f"cannot write {tmp} ({e.strerror or e}); nothing was kept. Free some space, or choose "
                            "another folder with `--root DIR`.") from None
        note = check(tmp, digest)
        os.replace(tmp, dest)
        return note
    finally:
        tmp.unlink(missing_ok=True)


def _receive(url: str, out, timeout: float, offline: str) -> str:
    """Stream `url` into `out`; the md5 of what arrived, after checking that all of it did."""
    digest, received = hashlib.md5(), 0
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "metarun-data"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            bar = tqdm(total=expected, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], disable=None)
            with bar:
                for block in iter(lambda: response.read1(CHUNK), b""):  # what has arrived, up to CHUNK
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as e:
        raise DownloadError(f"cannot download {url}: the server answered {e.code} {e.reason}. {offline}") from None
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"cannot download {url} ({reason}); {received:,} bytes had arrived and were "
                            f"discarded. {offline}") from None
    if expected is not None and received != expected:
        raise DownloadError(f"the download of {url} stopped after {received:,} of {expected:,} bytes (the connection "
                            f"closed early); the partial file was discarded. Run the command again. {offline}")
    return digest.hexdigest()
