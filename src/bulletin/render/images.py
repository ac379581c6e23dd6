"""Local images: files in the workspace made fit for mail.

An issue may show ``image: {src: photos/x.jpg, alt: ...}`` (relative to the issue's folder) and
``newsletter.logo`` may name a file (relative to the workspace root) instead of an https URL.
Mail clients load no local files, so each file is prepared once and published with the
archive under ``/archive/images/<name>`` (:data:`bulletin.urls.IMAGE`):

* **Resized for the layout.** The file is at most twice the display width (sharp on high-density
  screens) and the ``<img>`` carries the 1x width and height. ``srcset`` is not for mail: most
  clients ignore it, so one 2x file serves every screen.
* **Re-encoded for mail.** Photographs become progressive JPEG at quality 82; images with
  transparency, and PNG/GIF graphics (logos, charts), become optimised PNG with their alpha kept.
* **Nothing but pixels.** EXIF (camera, date, GPS position), ICC and text chunks are dropped;
  the EXIF orientation is applied first so a phone photo stands the right way up.
* **Content-hashed names** (``x-3f2a9c1e.jpg``): a changed photo gets a new address, so the
  archive can serve them with year-long cache headers and a mail already sent keeps its picture.
* **Cached** under ``.bulletin/images/``: the name is a hash of the source bytes and the
  processing, so a render whose file already exists does not decode the photo again.

Every problem is a :class:`~bulletin.errors.Problem` located at the line that names the file:
a missing file, a file that is not an image, a path leaving the workspace (``../`` or a
symlink), a decompression bomb (more pixels than ``Image.MAX_IMAGE_PIXELS``) are errors; an
image still over :data:`MAX_BYTES` after processing is a warning (mail gets slow to open).
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from bulletin.errors import Location, Problem

CONTENT_WIDTH = 552
"""Display width of a full-width image in the default layout: the 600 px body less 24 px
padding each side."""

LOGO_WIDTH = 160
"""Display width of the header logo in the default layout."""

MAX_BYTES = 200 * 1024
"""An image heavier than this after processing is reported: mail with it opens slowly on
phones, and some clients block large images."""

JPEG_QUALITY = 82

CACHE_DIR = Path(".bulletin") / "images"
"""Where prepared images live, relative to the workspace root."""

_VERSION = "1"
"""Part of every hash: bump it when the processing changes so old cached files are not reused."""

_SUFFIX = {"JPEG": ".jpg", "PNG": ".png"}


@dataclass(frozen=True)
class MailImage:
    """A prepared image: its published file name, the file, and its 1x display size."""

    name: str
    path: Path
    width: int
    height: int

    @property
    def size(self) -> int:
        """Bytes of the prepared file."""
        return self.path.stat().st_size


def is_local(src: str) -> bool:
    """Whether an image source names a workspace file rather than a web address."""
    return "://" not in src and not src.startswith("//")


def content_type(name: str) -> str:
    """The MIME type of a prepared image, by its name."""
    return "image/png" if name.endswith(".png") else "image/jpeg"


class ImageProblem(Exception):
    """A local image that cannot be used; carries the finding for the caller to locate."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def prepare(
    root: Path, base: Path, src: str, *, width: int, where: Location, field: str = "src"
) -> tuple[MailImage, list[Problem]]:
    """Prepare the workspace file ``src`` (relative to ``base``) for a ``width`` px slot.

    Returns the image and warnings (too heavy); raises :class:`ImageProblem` with a located
    error when the file cannot be used. ``root`` is the workspace root: no path, not even
    through a symlink, may lead out of it.
    """
    source = _source_path(root, base, src, where, field)
    data = source.read_bytes()
    digest = hashlib.sha256(data + f"|{width}|{_VERSION}".encode()).hexdigest()[:8]
    cache = root / CACHE_DIR
    stem = _safe_stem(source.stem)
    for suffix in _SUFFIX.values():
        cached = cache / f"{stem}-{digest}{suffix}"
        if cached.is_file():
            image = _measure(cached, width)
            break
    else:
        encoded, fmt = _process(data, width, src, where)
        cache.mkdir(parents=True, exist_ok=True)
        cached = cache / f"{stem}-{digest}{_SUFFIX[fmt]}"
        # A name of its own per writer, then an atomic rename: a preview, a send and the
        # server may prepare the same image at once, and none reads half a file.
        tmp = cached.with_name(f".{cached.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(encoded)
        tmp.replace(cached)
        image = _measure(cached, width)
    warnings_: list[Problem] = []
    if image.size > MAX_BYTES:
        warnings_.append(
            Problem(
                f"image {src} is {image.size / 1024:.0f} KB after resizing to "
                f"{image.width}x{image.height} px (over {MAX_BYTES // 1024} KB): mail with it "
                "opens slowly on phones; crop it, or use a simpler picture",
                where,
                severity="warning",
                code="image.heavy",
            )
        )
    return image, warnings_


def _error(message: str, where: Location) -> ImageProblem:
    return ImageProblem(Problem(message, where, code="image.file"))


def _source_path(root: Path, base: Path, src: str, where: Location, field: str) -> Path:
    if not src.strip() or src.startswith(("/", "\\")) or "\\" in src:
        raise _error(
            f"image {field} {src!r} must be a path relative to the issue folder "
            "(e.g. photos/x.jpg) or an https URL",
            where,
        )
    candidate = base / src
    real_root = root.resolve()
    try:
        resolved = candidate.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        raise _error(f"image {src} cannot be followed (a symlink loop?)", where) from None
    if not resolved.is_relative_to(real_root):
        raise _error(
            f"image {src} is outside the workspace (through '..' or a symlink): only files "
            "inside the workspace are published",
            where,
        )
    if not resolved.is_file():
        shown = candidate.relative_to(root) if candidate.is_relative_to(root) else candidate
        raise _error(f"image {src} not found: expected the file {shown}", where)
    return resolved


def _safe_stem(stem: str) -> str:
    # The name becomes one URL path segment: keep it to characters no mail client mangles.
    kept = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "-" for c in stem)
    return kept.strip("-")[:60] or "image"


def _process(data: bytes, width: int, src: str, where: Location) -> tuple[bytes, str]:
    """Decode, orient, resize to at most 2x ``width`` and re-encode without metadata."""
    try:
        with warnings.catch_warnings():
            # Between 1x and 2x MAX_IMAGE_PIXELS Pillow only warns; a bomb is refused either way.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
                source_format = opened.format or ""
                opened.load()
                image = ImageOps.exif_transpose(opened)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _error(
            f"image {src} has too many pixels (over {Image.MAX_IMAGE_PIXELS:,}): refused as a "
            "possible decompression bomb; scale it down before using it",
            where,
        ) from None
    except UnidentifiedImageError:
        raise _error(
            f"image {src} is not an image Pillow can read (JPEG, PNG, GIF or WebP expected)",
            where,
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:  # a truncated or corrupt file
        raise _error(f"image {src} cannot be decoded: {exc}", where) from None

    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    graphic = source_format in ("PNG", "GIF")
    fmt = "PNG" if has_alpha or graphic else "JPEG"
    if fmt == "PNG":
        image = image.convert("RGBA" if has_alpha else "RGB")
    else:
        image = image.convert("RGB")
    target = 2 * width
    if image.width > target:
        height = max(1, round(image.height * target / image.width))
        image = image.resize((target, height), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    # Saving from a fresh image with no info/exif arguments writes no metadata at all.
    clean = Image.new(image.mode, image.size)
    clean.paste(image)
    if fmt == "JPEG":
        clean.save(out, "JPEG", quality=JPEG_QUALITY, progressive=True, optimize=True)
    else:
        clean.save(out, "PNG", optimize=True)
    return out.getvalue(), fmt


def _measure(path: Path, width: int) -> MailImage:
    """The 1x display size of a prepared file for a ``width`` px slot."""
    with Image.open(path) as prepared:
        file_w, file_h = prepared.size
    shown_w = min(width, file_w)
    shown_h = max(1, round(file_h * shown_w / file_w))
    return MailImage(path.name, path, shown_w, shown_h)
