"""Photos of lab results, on disk under the result they belong to, named by their SHA-256.

A photo is staged (checked, written and synced) before its result is added to
the registry, and renamed into place after, so a result never names a photo
that was not stored, and a failed result leaves no stray photo. Files are
never overwritten; the SHA-256 in the name (and in the result's note in the
registry) makes any change to a file visible.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

MAX_PHOTO_BYTES = 10 * 1024 * 1024  # a phone photo of a sample tray is 2-5 MB
# File signatures of the formats a browser shows; anything else is refused rather than served.
_SIGNATURES = ((b"\xff\xd8\xff", "jpg", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "png", "image/png"))
CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
_NAME_RE = re.compile(r"result-(\d+)-([0-9a-f]{64})\.(jpg|png|webp)")


class PhotoError(ValueError):
    """A photo that cannot be stored (wrong type, too large, empty)."""


@dataclass(frozen=True)
class StagedPhoto:
    sample_id: int
    sha256: str
    ext: str
    tmp_path: Path


@dataclass(frozen=True)
class StoredPhoto:
    sample_id: int
    result_id: int
    sha256: str
    path: Path

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.path.suffix[1:]]

    def read_verified(self) -> tuple[bytes, bool]:
        """The file's bytes and whether they still hash to the SHA-256 recorded for them."""
        data = self.path.read_bytes()
        return data, hashlib.sha256(data).hexdigest() == self.sha256


def photo_kind(data: bytes) -> tuple[str, str]:
    """(extension, content type) from the file's first bytes."""
    for magic, ext, ctype in _SIGNATURES:
        if data.startswith(magic):
            return ext, ctype
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp", "image/webp"
    raise PhotoError("photo is not a JPEG, PNG or WebP image (checked by its content, not its name)")


class PhotoStore:
    def __init__(self, directory: str | Path, max_bytes: int = MAX_PHOTO_BYTES):
        self.directory = Path(directory)
        self.max_bytes = max_bytes

    def _folder(self, sample_id: int) -> Path:
        return self.directory / f"sample-{sample_id}"

    def stage(self, sample_id: int, data: bytes) -> StagedPhoto:
        if not data:
            raise PhotoError("photo file is empty")
        if len(data) > self.max_bytes:
            raise PhotoError(f"photo is {len(data) / 1e6:.1f} MB; at most {self.max_bytes / 1e6:.0f} MB")
        ext, _ = photo_kind(data)
        folder = self._folder(sample_id)
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="staged-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return StagedPhoto(sample_id, hashlib.sha256(data).hexdigest(), ext, Path(tmp))

    def commit(self, staged: StagedPhoto, result_id: int) -> StoredPhoto:
        path = self._folder(staged.sample_id) / f"result-{result_id}-{staged.sha256}.{staged.ext}"
        if path.exists():
            raise FileExistsError(f"{path} exists already; photos are never overwritten")
        os.replace(staged.tmp_path, path)
        return StoredPhoto(staged.sample_id, result_id, staged.sha256, path)

    @staticmethod
    def discard(staged: StagedPhoto) -> None:
        staged.tmp_path.unlink(missing_ok=True)

    def photos(self, sample_id: int) -> dict[int, StoredPhoto]:
        """The stored photo of each result of a sample, by result id."""
        folder = self._folder(sample_id)
        out: dict[int, StoredPhoto] = {}
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                m = _NAME_RE.fullmatch(path.name)
                if m:
                    out[int(m.group(1))] = StoredPhoto(sample_id, int(m.group(1)), m.group(2), path)
        return out
