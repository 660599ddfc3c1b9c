"""Encrypted backups: the tar stream cut into 1 MiB chunks, each sealed with AES-GCM.

Why chunks: a backup can be gigabytes, and Fernet or one AES-GCM call needs the whole file in
memory. Each chunk's associated data holds its index and whether it is the last, so a reordered,
dropped or truncated chunk fails to open; a key check value in the header tells a wrong key apart
from a tampered file. The key is derived from the passphrase with scrypt and a random salt.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from pathlib import Path
from typing import BinaryIO

from ragvigil.ops.backup.errors import BackupInvalid, WrongKey

MAGIC = b"RVBAKENC1\n"
CHUNK = 1 << 20
_SALT, _CHECK, _NONCE, _TAG = 16, 32, 12, 16
_HEADER = len(MAGIC) + _SALT + _CHECK
_LEN = struct.Struct(">I")


def _derive(passphrase: str, salt: bytes) -> bytes:
    # cryptography (~7 MB of modules) imported by an encrypted backup or restore only, not at start-up
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=32, n=2**14, r=8, p=1).derive(passphrase.encode("utf-8"))


def _check_value(key: bytes) -> bytes:
    return hmac.new(key, b"ragvigil backup key check", hashlib.sha256).digest()


def _aad(header: bytes, index: int, final: bool) -> bytes:
    return header + struct.pack(">QB", index, 1 if final else 0)


def is_encrypted(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


class EncryptingWriter:
    """A write-only file object: what is written goes out sealed, chunk by chunk (``close`` seals the last)."""

    def __init__(self, out: BinaryIO, passphrase: str) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        salt = os.urandom(_SALT)
        self._key = _derive(passphrase, salt)
        self._aes = AESGCM(self._key)
        self._header = MAGIC + salt + _check_value(self._key)
        self._out = out
        self._buf = bytearray()
        self._index = 0
        self._closed = False
        out.write(self._header)

    def write(self, data: bytes) -> int:
        self._buf += data
        while len(self._buf) > CHUNK:  # keep at least one byte back: the last chunk is sealed as final
            self._seal(bytes(self._buf[:CHUNK]), final=False)
            del self._buf[:CHUNK]
        return len(data)

    def _seal(self, plain: bytes, final: bool) -> None:
        nonce = os.urandom(_NONCE)
        sealed = self._aes.encrypt(nonce, plain, _aad(self._header, self._index, final))
        self._out.write(_LEN.pack(len(sealed)) + nonce + sealed)
        self._index += 1

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        if not self._closed:
            self._seal(bytes(self._buf), final=True)
            self._buf.clear()
            self._closed = True
            self._out.flush()


def decrypt_file(src: Path, dst: Path, passphrase: str | None) -> None:
    """Open ``src`` into ``dst``; ``WrongKey`` for a missing or wrong key, ``BackupInvalid`` for a damaged file."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    with open(src, "rb") as f, open(dst, "wb") as out:
        header = f.read(_HEADER)
        if len(header) < _HEADER or not header.startswith(MAGIC):
            raise BackupInvalid(src, "encryption header", "the file is shorter than its header or not encrypted")
        if not passphrase:
            raise WrongKey(src, "encryption key", "the backup is encrypted: set backup.encryption_key")
        key = _derive(passphrase, header[len(MAGIC) : len(MAGIC) + _SALT])
        if not hmac.compare_digest(_check_value(key), header[len(MAGIC) + _SALT :]):
            raise WrongKey(src, "encryption key", "backup.encryption_key is not the key this backup was made with")
        aes = AESGCM(key)
        index = 0
        while True:
            raw_len = f.read(_LEN.size)
            if len(raw_len) < _LEN.size:
                raise BackupInvalid(src, "encrypted chunks", f"the file ends before its last chunk (after {index})")
            (n,) = _LEN.unpack(raw_len)
            if n < _TAG or n > CHUNK + _TAG:
                raise BackupInvalid(src, "encrypted chunks", f"chunk {index} has an impossible length {n}")
            body = f.read(_NONCE + n)
            if len(body) < _NONCE + n:
                raise BackupInvalid(src, "encrypted chunks", f"chunk {index} is truncated")
            nonce, sealed = body[:_NONCE], body[_NONCE:]
            for final in (False, True):
                try:
                    plain = aes.decrypt(nonce, sealed, _aad(header, index, final))
                    break
                except InvalidTag:
                    continue
            else:
                raise BackupInvalid(src, "encrypted chunks", f"chunk {index} was altered (authentication failed)")
            out.write(plain)
            index += 1
            if final:
                if f.read(1):
                    raise BackupInvalid(src, "encrypted chunks", "data follows the final chunk")
                return
