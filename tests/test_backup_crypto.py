"""Encrypted backups: streamed AES-GCM chunks, secrets only inside an encrypted backup, a wrong key refused clearly."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from ragvigil.app import Runtime
from ragvigil.config import BackupSettings, OpenAISettings
from ragvigil.knowledge.smoke import retrieval_smoke
from ragvigil.ops.backup import BackupError, BackupInvalid, WrongKey, create_backup, restore_backup, verify_backup
from ragvigil.ops.backup.crypto import CHUNK, MAGIC, EncryptingWriter, decrypt_file
from tests.backup_cases import members
from tests.conftest import make_settings

KEY = "correct horse battery staple"


def _sealed(tmp_path: Path, plain: bytes) -> Path:
    out = io.BytesIO()
    w = EncryptingWriter(out, KEY)
    for i in range(0, len(plain), 100_000):  # written in pieces, as tarfile does
        w.write(plain[i : i + 100_000])
    w.close()
    path = tmp_path / "sealed.enc"
    path.write_bytes(out.getvalue())
    return path


def test_a_stream_of_several_chunks_opens_with_its_key_only(tmp_path: Path) -> None:
    plain = os.urandom(3 * CHUNK + 12345)
    sealed = _sealed(tmp_path, plain)
    raw = sealed.read_bytes()
    assert raw.startswith(MAGIC) and plain[:64] not in raw
    decrypt_file(sealed, tmp_path / "out", KEY)
    assert (tmp_path / "out").read_bytes() == plain
    with pytest.raises(WrongKey, match="not the key"):
        decrypt_file(sealed, tmp_path / "out", "another key")
    with pytest.raises(WrongKey, match=r"set backup\.encryption_key"):
        decrypt_file(sealed, tmp_path / "out", None)


@pytest.mark.parametrize("damage", ["truncated at a chunk boundary", "truncated inside a chunk", "one bit flipped"])
def test_a_damaged_encrypted_stream_is_refused(tmp_path: Path, damage: str) -> None:
    sealed = _sealed(tmp_path, os.urandom(2 * CHUNK + 10))
    raw = bytearray(sealed.read_bytes())
    header = len(MAGIC) + 16 + 32
    first = header + 4 + 12 + CHUNK + 16  # the end of the first chunk
    if damage == "truncated at a chunk boundary":
        raw = raw[: first + (4 + 12 + CHUNK + 16)]  # the final chunk is gone: it must not read as complete
    elif damage == "truncated inside a chunk":
        raw = raw[: first + 1000]
    else:
        raw[first - 100] ^= 0x01
    sealed.write_bytes(bytes(raw))
    with pytest.raises(BackupInvalid, match="encrypted chunks"):
        decrypt_file(sealed, tmp_path / "out", KEY)


def test_secrets_are_in_an_encrypted_backup_only_and_it_verifies_and_restores_with_the_key(
    sample_runtime: Runtime, tmp_path: Path
) -> None:
    sample_runtime.ensure_admin_key()
    base = sample_runtime.settings.model_copy(update={"openai": OpenAISettings(api_key="sk-the-secret-123")})
    plain = create_backup(base, to=tmp_path).path
    got = members(plain)
    assert b"sk-the-secret-123" not in got["config/settings.json"] and "data/admin.key" not in got
    assert json.loads(got["config/settings.json"])["openai"]["api_key"] == "********"

    with pytest.raises(BackupError, match="encryption_key"):
        create_backup(base, to=tmp_path, encrypt=True)
    keyed = base.model_copy(update={"backup": BackupSettings(encryption_key=KEY)})
    result = create_backup(keyed, to=tmp_path, encrypt=True)
    assert result.path.name.endswith(".tar.enc") and result.manifest.encrypted
    assert b"sk-the-secret-123" not in result.path.read_bytes()
    report = verify_backup(result.path, keyed, smoke=retrieval_smoke)
    assert report.ok, report.error

    wrong = base.model_copy(update={"backup": BackupSettings(encryption_key="not it")})
    bad = verify_backup(result.path, wrong)
    assert not bad.ok and bad.failed_check == "encryption key" and str(result.path) in (bad.error or "")
    with pytest.raises(WrongKey):
        restore_backup(result.path, make_settings(tmp_path / "fresh", backup=BackupSettings(encryption_key="no")))

    fresh = make_settings(tmp_path / "fresh", backup=BackupSettings(encryption_key=KEY))
    restore_backup(result.path, fresh)
    assert (fresh.data_dir / "admin.key").read_text() == (sample_runtime.settings.data_dir / "admin.key").read_text()
