"""HEIF (an iPhone's .heic, a Canon's .hif) and AVIF photos: which files are, and the Pillow plugins that read and
write them.

Phones store their photos as HEIF or AVIF as often as JPEG; OpenCV reads neither. Pillow reads and writes AVIF
itself (11.3 and later, built with libavif, as its wheels are); HEIF needs the pillow-heif plugin (the ``heif``
extra), registered here the first time a HEIF file is met, so that nothing is imported for other files. A file is
known by its content (the ``ftyp`` brands of its ISO media box), not its name, when it is read.

Both decoders turn the pixels upright the same way the runtime does for every file: pillow-heif applies the file's
rotation and mirroring (``irot``/``imir``) and sets the EXIF orientation to 1; Pillow's AVIF reader reports them as
the EXIF orientation, which :func:`runtime.images.read_image` then applies.
"""

from __future__ import annotations

import threading

#: The output formats of these files by suffix, as Pillow names them.
SUFFIX_FORMATS = {".heic": "HEIF", ".heif": "HEIF", ".hif": "HEIF", ".avif": "AVIF"}
#: Encoder settings of the outputs: quality 90 (their defaults, 50 for HEIF and 75 for AVIF, would blur back fine
#: detail the network restored; JPEG outputs are written at OpenCV's 95).
ENCODER_OPTIONS = {"HEIF": {"quality": 90}, "AVIF": {"quality": 90}}
HEIF_HINT = "pip install 'banet-deploy[heif]' (pillow-heif)"
#: ``ftyp`` brands of HEIF images (HEVC-coded, or the generic image brands HEIF and AVIF share).
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"mif2"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_REGISTERED = threading.Lock()
_heif_registered = False


def container_format(data: bytes) -> str | None:
    """"HEIF" or "AVIF" for a file whose first box is an ISO media ``ftyp`` of theirs, else None. AVIF wins where
    both are named (an AVIF's major brand is often the generic ``mif1``)."""
    if len(data) < 16 or data[4:8] != b"ftyp":
        return None
    size = min(int.from_bytes(data[:4], "big"), len(data))
    brands = {data[8:12]} | {data[at:at + 4] for at in range(16, size - 3, 4)}
    if brands & _AVIF_BRANDS:
        return "AVIF"
    return "HEIF" if brands & _HEIF_BRANDS else None


def enable(kind: str, what: str, error: type[Exception]) -> None:
    """Make Pillow read and write ``kind`` ("HEIF", "AVIF"); ``error`` (the caller's one-line error, naming ``what``:
    the file) where it cannot, with the package to install."""
    if kind == "AVIF":
        from PIL import features

        if not features.check("avif"):
            raise error(f"{what}: an AVIF image; this Pillow has no AVIF support: pip install 'pillow>=11.3'")
        return
    global _heif_registered
    with _REGISTERED:
        if _heif_registered:
            return
        try:
            import pillow_heif
        except ImportError:
            raise error(f"{what}: a HEIF image (an iPhone's .heic); it needs pillow-heif: {HEIF_HINT}") from None
        pillow_heif.register_heif_opener()
        _heif_registered = True
