"""Hostile PDFs written object by object, cheap to build however far their streams inflate."""

from __future__ import annotations

import zlib


def deflate_repeated(chunk: bytes, times: int) -> bytes:
    """A zlib stream of ``chunk * times`` without compressing all of it.

    After a full flush the compressor starts afresh, so every further copy of ``chunk`` compresses
    to the same bytes: one segment is compressed once and repeated, then the checksum is fixed up.
    """
    c = zlib.compressobj(9)
    first = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    end = c.flush()[:-4]  # the final block, without the checksum of what this compressor saw
    adler = 1
    for _ in range(times):
        adler = zlib.adler32(chunk, adler)
    return first + again * (times - 1) + end + adler.to_bytes(4, "big")


def build_pdf(stream: bytes | list[bytes], pages: int = 1) -> bytes:
    """A PDF whose ``pages`` pages all draw the same FlateDecode content ``stream`` (already deflated).

    Given a list of streams, page i draws stream i instead.
    """
    streams = stream if isinstance(stream, list) else [stream]
    pages = len(streams) if isinstance(stream, list) else pages
    first_page = 3 + len(streams)
    font = first_page + pages
    kids = " ".join(f"{first_page + i} 0 R" for i in range(pages))
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
    ]
    objs += [b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(s) + s + b"\nendstream" for s in streams]
    for i in range(pages):
        contents = 3 + (i if len(streams) > 1 else 0)
        objs.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {contents} 0 R "
            f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode()
        )
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{off:010d} 00000 n \n".encode() for off in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def text_ops(text: str, lines: int) -> bytes:
    """A content stream showing ``text`` on ``lines`` lines (two tokens per line, plus a few)."""
    return b"BT /F1 12 Tf 72 700 Td " + f"({text}) Tj\n".encode() * lines + b"ET"


def zip_bomb_pdf() -> bytes:
    """About 1 MB whose one content stream inflates to 1 GiB of zeros."""
    return build_pdf(deflate_repeated(b"\0" * (1 << 20), 1024))


def shared_stream_pdf(pages: int = 20, size: int = 70_000_000) -> bytes:
    """Tens of KB: ``pages`` pages sharing one content stream of ``size`` bytes of text operators."""
    chunk = b"(A) Tj\n" * 1000
    return build_pdf(deflate_repeated(chunk, size // len(chunk)), pages)


def text_pdf(text: str, pages: int = 1, lines: int = 1) -> bytes:
    return build_pdf(zlib.compress(text_ops(text, lines)), pages)
