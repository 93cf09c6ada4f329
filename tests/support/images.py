"""Real images for the tests, written with zlib: small PNGs and a header that claims a
huge one (what a decompression bomb looks like to a size check)."""

from __future__ import annotations

import base64
import struct
import zlib


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png(width: int = 2, height: int = 2, rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A complete PNG of one colour (8-bit RGB)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = b"\x00" + bytes(rgb) * width  # filter type 0, then the pixels
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(row * height)) + _chunk(b"IEND", b""))


def png_b64(width: int = 2, height: int = 2) -> str:
    return base64.b64encode(png(width, height)).decode()


def png_claiming(width: int, height: int) -> str:
    """Base64 of a PNG whose header claims `width` x `height` with almost no pixel data:
    what a decompression bomb shows a size check (nothing here is ever decoded)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
           + _chunk(b"IDAT", zlib.compress(b"\x00")) + _chunk(b"IEND", b""))
    return base64.b64encode(raw).decode()
