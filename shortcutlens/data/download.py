"""Downloads for users who are online: a progress bar, a checksum, and an atomic rename.

Nothing in the library downloads unless asked (``download=True``); tests and the demo use data
that ships with installed packages.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm


def sha256_of(path: Path, *, gunzip: bool = False) -> str:
    import gzip

    h = hashlib.sha256()
    opener = gzip.open if gunzip else open
    with opener(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, *, sha256: str | None = None, gunzip_checksum: bool = False) -> Path:
    """Fetch ``url`` into ``dest`` with a progress bar; verify ``sha256`` (of the gunzipped bytes if
    ``gunzip_checksum``), then rename into place so an interrupted download never looks complete."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    with urllib.request.urlopen(url) as resp, open(tmp, "wb") as out:
        total = int(resp.headers.get("Content-Length", 0)) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}") as bar:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                out.write(chunk)
                bar.update(len(chunk))
    if sha256 is not None:
        got = sha256_of(tmp, gunzip=gunzip_checksum)
        if got != sha256:
            tmp.unlink(missing_ok=True)
            raise OSError(f"checksum mismatch for {url}: expected {sha256}, got {got}")
    os.replace(tmp, dest)
    return dest


def download_and_extract(url: str, dest_dir: Path, *, md5: str) -> None:
    """Download a ``.tar.gz`` archive (checked by the md5 its authors publish) and unpack it."""
    archive = Path(dest_dir) / url.rsplit("/", 1)[-1]
    download(url, archive)
    h = hashlib.md5()
    with open(archive, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != md5:
        archive.unlink(missing_ok=True)
        raise OSError(f"checksum mismatch for {url}: expected md5 {md5}, got {h.hexdigest()}")
    with tarfile.open(archive) as tar:
        tar.extractall(dest_dir, filter="data")
    archive.unlink()
