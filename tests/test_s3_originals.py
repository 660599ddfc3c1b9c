"""The originals in a real S3-compatible object store (SeaweedFS started in the test run): the protocol's
round trip, content addressing, verification on read, refused credentials and an outage."""

from __future__ import annotations

import hashlib
import io
import secrets
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from ragvigil.config import OriginalsSettings
from ragvigil.knowledge.originals import OriginalMissing, build_original_store, read_original
from ragvigil.knowledge.s3_originals import (
    ObjectStoreRefused,
    ObjectStoreUnavailable,
    OriginalCorrupt,
    S3OriginalStore,
)
from tests.conftest import make_settings
from tests.realservers import SeaweedServer

REFUND = b"# Refunds\n\nA refund reaches the card it was paid with within five working days.\n"


def sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def s3_settings(server: SeaweedServer, **overrides: object) -> OriginalsSettings:
    values: dict[str, object] = {
        "backend": "s3",
        "s3_endpoint": server.url,
        "bucket": server.bucket,
        "prefix": f"t{secrets.token_hex(4)}/",  # each test its own prefix: the bucket is shared by the module
        "access_key": server.access_key,
        "secret_key": server.secret_key,
        "connect_timeout_s": 1.0,
        "read_timeout_s": 5.0,
        "retries": 0,
    }
    return OriginalsSettings(**{**values, **overrides})  # type: ignore[arg-type]


@pytest.fixture
def store(seaweedfs: SeaweedServer) -> Iterator[S3OriginalStore]:
    yield S3OriginalStore(s3_settings(seaweedfs))


def keys(server: SeaweedServer, prefix: str) -> list[str]:
    listed = server.client().list_objects_v2(Bucket=server.bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_put_open_exists_delete_and_iter_round_trip(store: S3OriginalStore, seaweedfs: SeaweedServer) -> None:
    digest = store.put(REFUND)
    assert digest == sha(REFUND)
    assert keys(seaweedfs, store.prefix) == [f"{store.prefix}{digest[:2]}/{digest}"]
    assert store.exists(digest)
    with store.open(digest) as f:
        assert f.read() == REFUND
    other = store.put(io.BytesIO(b"a stream, read to its end"))
    assert set(store.iter_digests()) == {digest, other}
    head = seaweedfs.client().head_object(Bucket=seaweedfs.bucket, Key=store.key(digest))
    assert head["Metadata"]["sha256"] == digest  # the ETag is an MD5: the SHA-256 travels as metadata
    store.delete(digest)
    assert not store.exists(digest)
    with pytest.raises(OriginalMissing):
        store.open(digest)
    store.delete(digest)  # deleting what is gone is not an error
    assert list(store.iter_digests()) == [other]


def test_the_same_bytes_are_sent_and_stored_once(store: S3OriginalStore, seaweedfs: SeaweedServer) -> None:
    sent: list[str] = []
    store.client.meta.events.register("before-call.s3.PutObject", lambda **kw: sent.append("put"))
    assert store.put(REFUND) == store.put(io.BytesIO(REFUND)) == sha(REFUND)
    assert sent == ["put"]
    assert len(keys(seaweedfs, store.prefix)) == 1


def test_a_file_over_the_part_size_goes_up_in_parts_and_reads_back_whole(seaweedfs: SeaweedServer) -> None:
    small_spool = s3_settings(seaweedfs, part_bytes=5 * 1024 * 1024, spool_memory_bytes=64 * 1024)
    store = S3OriginalStore(small_spool)
    parts: list[int] = []
    store.client.meta.events.register(
        "provide-client-params.s3.UploadPart", lambda params, **kw: parts.append(params["PartNumber"])
    )
    raw = secrets.token_bytes(11 * 1024 * 1024)  # three parts: 5 + 5 + 1 MiB
    digest = store.put(io.BytesIO(raw))
    assert digest == sha(raw)
    assert parts == [1, 2, 3]
    assert read_original(store, digest, len(raw)) == raw
    with pytest.raises(ValueError, match="more than"):
        read_original(store, digest, len(raw) - 1)


def test_bytes_that_do_not_hash_to_their_key_are_refused_on_read(
    store: S3OriginalStore, seaweedfs: SeaweedServer
) -> None:
    digest = sha(REFUND)
    client = seaweedfs.client()
    client.put_object(Bucket=seaweedfs.bucket, Key=store.key(digest), Body=b"tampered")  # no sha256 metadata
    with pytest.raises(OriginalCorrupt) as caught, store.open(digest) as f:
        f.read()
    assert caught.value.code == "original_corrupt"
    client.put_object(
        Bucket=seaweedfs.bucket, Key=store.key(digest), Body=REFUND, Metadata={"sha256": sha(b"something else")}
    )
    with pytest.raises(OriginalCorrupt):
        store.open(digest)  # the metadata already disagrees: refused before a byte is read


def test_a_wrong_secret_is_refused_with_a_clear_error(seaweedfs: SeaweedServer) -> None:
    store = S3OriginalStore(s3_settings(seaweedfs, secret_key="not-the-secret"))
    with pytest.raises(ObjectStoreRefused) as caught:
        store.put(REFUND)
    assert caught.value.status == 503
    assert caught.value.code == "object_store_refused"
    assert caught.value.retry_after  # every 503 says when to come back
    assert "originals.secret_key" in str(caught.value)
    assert "not-the-secret" not in str(caught.value)
    with pytest.raises(ObjectStoreRefused):
        store.check_bucket()


def test_a_missing_bucket_is_unavailable_and_names_it(seaweedfs: SeaweedServer) -> None:
    store = S3OriginalStore(s3_settings(seaweedfs, bucket="no-such-bucket-here"))
    with pytest.raises(ObjectStoreUnavailable, match="no-such-bucket-here does not exist"):
        store.check_bucket()
    with pytest.raises(ObjectStoreUnavailable):
        store.put(REFUND)


def test_a_stopped_server_is_unavailable_within_the_timeouts(seaweedfs: SeaweedServer) -> None:
    store = S3OriginalStore(s3_settings(seaweedfs))
    digest = store.put(REFUND)
    seaweedfs.stop()
    try:
        for call in (lambda: store.put(b"new bytes"), lambda: store.exists(digest), lambda: store.open(digest)):
            with pytest.raises(ObjectStoreUnavailable) as caught:
                call()
            assert caught.value.code == "object_store_unavailable"
            assert caught.value.status == 503 and caught.value.retry_after
    finally:
        seaweedfs.start()
    assert store.exists(digest)  # back by itself once the server is: no state to reset


def test_the_backend_is_chosen_by_configuration_alone(seaweedfs: SeaweedServer, tmp_path) -> None:
    assert type(build_original_store(make_settings(tmp_path / "data"))).__name__ == "FilesystemOriginalStore"
    settings = make_settings(tmp_path / "data", originals=s3_settings(seaweedfs).model_dump())
    store = build_original_store(settings)
    assert isinstance(store, S3OriginalStore)
    assert store.put(REFUND) == sha(REFUND)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"backend": "s3", "bucket": "abc"}, "originals.s3_endpoint\n"),  # the location is the field itself
        ({"backend": "s3", "s3_endpoint": "http://127.0.0.1:9000"}, "originals.bucket\n"),
        ({"backend": "s3", "s3_endpoint": "ftp://x", "bucket": "abc"}, "originals.s3_endpoint"),
        ({"backend": "s3", "s3_endpoint": "http://h:1", "bucket": "abc", "access_key": "k"}, "originals.secret_key"),
        ({"prefix": "no-slash"}, "prefix"),
    ],
)
def test_an_incomplete_s3_configuration_is_an_error_naming_the_field(values: dict, field: str, tmp_path) -> None:
    with pytest.raises(ValidationError) as caught:
        make_settings(tmp_path / "data", originals=values)
    assert field in str(caught.value)


def test_the_secret_key_is_never_shown(tmp_path) -> None:
    from ragvigil.config import masked_dump

    settings = make_settings(
        tmp_path / "data",
        originals={
            "backend": "s3",
            "s3_endpoint": "http://h:1",
            "bucket": "abc",
            "access_key": "k",
            "secret_key": "sss",
        },
    )
    assert masked_dump(settings)["originals"]["secret_key"] == "********"
    assert "sss" not in repr(settings.originals)
