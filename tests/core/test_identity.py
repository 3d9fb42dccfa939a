"""Signed requests, replay cache, private-key files and enrollment tokens, with real Ed25519."""

from __future__ import annotations

import os
import re
import stat
import threading
from pathlib import Path

import pytest

from fedft.core.errors import UsageError
from fedft.core.identity import (
    HEADER_CLIENT_ID,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    HEADERS,
    AuthError,
    NonceCache,
    generate_key,
    hash_token,
    load_private_key,
    load_public_key,
    new_token,
    public_key_bytes,
    save_private_key,
    sign_request,
    signing_string,
    token_matches,
    verify_request,
)

METHOD = "/fedft.proto.v1.Coordinator/SubmitUpdate"
NOW = 1_750_000_000.0
NONCE = bytes(range(16))


def signed(client_id: str = "client-7") -> tuple[dict[str, str], bytes]:
    """Return the metadata of one request signed at NOW, and the signer's raw public key."""
    key = generate_key()
    pairs = sign_request(key, METHOD, client_id, now=NOW, nonce=NONCE)
    return dict(pairs), public_key_bytes(key)


def test_signing_string_is_the_documented_format() -> None:
    expected = (
        b"fedft-sig-v1\n/fedft.proto.v1.Coordinator/SubmitUpdate\nclient-7\n1750000000000\n"
        + NONCE.hex().encode()
    )
    assert signing_string(METHOD, "client-7", 1_750_000_000_000, NONCE.hex()) == expected


@pytest.mark.parametrize(
    ("method", "client_id", "nonce"),
    [
        ("Coordinator/Join", "c", "00" * 16),  # not a full method name
        ("/a/b\n", "c", "00" * 16),
        (METHOD, "bad\nid", "00" * 16),
        (METHOD, "", "00" * 16),
        (METHOD, "c", "00" * 15),
        (METHOD, "c", "AB" * 16),  # only lowercase hex is canonical
    ],
)
def test_signing_string_refuses_ambiguous_fields(method: str, client_id: str, nonce: str) -> None:
    with pytest.raises(ValueError, match=r"must|not a full"):
        signing_string(method, client_id, 1, nonce)


def test_round_trip_returns_client_id() -> None:
    metadata, public = signed()
    assert list(metadata) == list(HEADERS)
    assert metadata[HEADER_TIMESTAMP] == "1750000000000"
    assert re.fullmatch(r"[0-9a-f]{32}", metadata[HEADER_NONCE])
    assert re.fullmatch(r"[0-9a-f]{128}", metadata[HEADER_SIGNATURE])
    assert verify_request(public, METHOD, metadata, now=NOW) == "client-7"


def test_default_clock_and_random_nonce() -> None:
    key = generate_key()
    first = dict(sign_request(key, METHOD, "c1"))
    second = dict(sign_request(key, METHOD, "c1"))
    assert first[HEADER_NONCE] != second[HEADER_NONCE]
    assert verify_request(public_key_bytes(key), METHOD, first) == "c1"


@pytest.mark.parametrize("header", HEADERS)
def test_missing_header(header: str) -> None:
    metadata, public = signed()
    del metadata[header]
    with pytest.raises(AuthError, match=f"missing header {header}") as info:
        verify_request(public, METHOD, metadata, now=NOW)
    assert info.value.reason == f"missing header {header}"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (HEADER_TIMESTAMP, "-5"),
        (HEADER_TIMESTAMP, "01750000000000"),  # leading zero: a second spelling of one request
        (HEADER_TIMESTAMP, "1e12"),
        (HEADER_NONCE, "xyz"),
        (HEADER_SIGNATURE, "00"),
        (HEADER_CLIENT_ID, "has space"),
    ],
)
def test_malformed_header(header: str, value: str) -> None:
    metadata, public = signed()
    metadata[header] = value
    with pytest.raises(AuthError, match=f"malformed header {header}"):
        verify_request(public, METHOD, metadata, now=NOW)


def test_tampered_method_is_a_bad_signature() -> None:
    metadata, public = signed()
    with pytest.raises(AuthError, match="bad signature"):
        verify_request(public, "/fedft.proto.v1.Coordinator/Enroll", metadata, now=NOW)


def test_tampered_client_id_is_a_bad_signature() -> None:
    metadata, public = signed()
    metadata[HEADER_CLIENT_ID] = "client-8"
    with pytest.raises(AuthError, match="bad signature"):
        verify_request(public, METHOD, metadata, now=NOW)


def test_tampered_timestamp_and_nonce_are_bad_signatures() -> None:
    metadata, public = signed()
    moved = dict(metadata, **{HEADER_TIMESTAMP: "1750000000001"})
    with pytest.raises(AuthError, match="bad signature"):
        verify_request(public, METHOD, moved, now=NOW)
    other_nonce = dict(metadata, **{HEADER_NONCE: "ff" * 16})
    with pytest.raises(AuthError, match="bad signature"):
        verify_request(public, METHOD, other_nonce, now=NOW)


def test_wrong_key_is_a_bad_signature() -> None:
    metadata, _ = signed()
    other = public_key_bytes(generate_key())
    with pytest.raises(AuthError, match="bad signature"):
        verify_request(other, METHOD, metadata, now=NOW)


def test_unusable_stored_key_is_refused() -> None:
    metadata, _ = signed()
    with pytest.raises(AuthError, match="bad request"):
        verify_request(b"short", METHOD, metadata, now=NOW)


@pytest.mark.parametrize(("offset", "side"), [(-301.0, "ahead of"), (301.0, "behind")])
def test_timestamp_outside_window(offset: float, side: str) -> None:
    metadata, public = signed()
    with pytest.raises(AuthError, match="timestamp outside the allowed window") as info:
        verify_request(public, METHOD, metadata, now=NOW + offset)
    assert info.value.reason == "timestamp outside the allowed window"
    assert side in str(info.value)


def test_timestamp_at_the_window_edge_and_custom_skew() -> None:
    metadata, public = signed()
    assert verify_request(public, METHOD, metadata, now=NOW + 300.0) == "client-7"
    assert verify_request(public, METHOD, metadata, now=NOW - 300.0) == "client-7"
    with pytest.raises(AuthError, match="timestamp outside"):
        verify_request(public, METHOD, metadata, now=NOW + 31.0, skew=30.0)


def test_replayed_nonce_is_rejected_through_verify() -> None:
    metadata, public = signed()
    cache = NonceCache()
    assert verify_request(public, METHOD, metadata, now=NOW, nonce_cache=cache) == "client-7"
    with pytest.raises(AuthError, match="replayed nonce"):
        verify_request(public, METHOD, metadata, now=NOW + 1, nonce_cache=cache)


def test_forged_requests_do_not_enter_the_cache() -> None:
    metadata, public = signed()
    cache = NonceCache()
    forged = dict(metadata, **{HEADER_SIGNATURE: "00" * 64})
    with pytest.raises(AuthError, match="bad signature"):
        verify_request(public, METHOD, forged, now=NOW, nonce_cache=cache)
    assert len(cache) == 0
    assert verify_request(public, METHOD, metadata, now=NOW, nonce_cache=cache) == "client-7"


def test_cache_window_must_cover_the_skew() -> None:
    metadata, public = signed()
    with pytest.raises(ValueError, match="below the skew"):
        verify_request(public, METHOD, metadata, now=NOW, nonce_cache=NonceCache(window=60.0))


def test_nonce_cache_is_per_client_and_expires() -> None:
    cache = NonceCache(window=300.0)
    assert cache.check_and_add("a", "n1", NOW, NOW)
    assert not cache.check_and_add("a", "n1", NOW, NOW + 10)
    assert cache.check_and_add("b", "n1", NOW, NOW + 10)  # same nonce, other client
    # Past the window the entry is gone, and the old timestamp alone now rejects the request.
    assert not cache.check_and_add("a", "n1", NOW, NOW + 301)
    assert len(cache) == 0
    assert cache.check_and_add("a", "n2", NOW + 301, NOW + 301)


def test_nonce_cache_memory_is_bounded_and_never_accepts_a_replay() -> None:
    cache = NonceCache(window=300.0, max_entries=100)
    for i in range(250):
        assert cache.check_and_add("c", f"n{i}", NOW + i * 0.1, NOW + 30)
        assert len(cache) <= 100
    assert len(cache) == 100
    # n0 was evicted early; its replay is still refused because its timestamp is below the floor.
    assert not cache.check_and_add("c", "n0", NOW, NOW + 30)
    # An unseen nonce stamped before the floor is refused too; a newer one is accepted.
    assert not cache.check_and_add("c", "fresh-old", NOW + 1.0, NOW + 30)
    assert cache.check_and_add("c", "fresh-new", NOW + 30, NOW + 30)
    assert len(cache) == 100


def test_nonce_cache_is_thread_safe() -> None:
    cache = NonceCache(max_entries=100_000)
    accepted: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        results = [cache.check_and_add("c", f"n{i}", NOW, NOW) for i in range(500)]
        with lock:
            accepted.extend(results)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Each of the 500 nonces is accepted exactly once across all threads.
    assert sum(accepted) == 500
    assert len(cache) == 500


def test_public_key_bytes_and_load() -> None:
    key = generate_key()
    raw = public_key_bytes(key)
    assert len(raw) == 32
    assert public_key_bytes(key.public_key()) == raw
    assert public_key_bytes(load_public_key(raw)) == raw
    with pytest.raises(ValueError, match="32 bytes"):
        load_public_key(raw[:31])


def test_private_key_save_load_round_trip(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "keys" / "client.key"
    save_private_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_key_bytes(load_private_key(path)) == public_key_bytes(key)
    assert [p.name for p in path.parent.iterdir()] == ["client.key"]  # no temp file left
    # Saving again replaces the file atomically and keeps the mode.
    other = generate_key()
    save_private_key(path, other)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert public_key_bytes(load_private_key(path)) == public_key_bytes(other)


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_private_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "client.key"
    save_private_key(path, generate_key())
    path.chmod(mode)
    with pytest.raises(UsageError, match=re.escape(f"chmod 600 {path}")):
        load_private_key(path)


def test_private_key_missing_or_not_ed25519(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_private_key(tmp_path / "nope.key")
    junk = tmp_path / "junk.key"
    junk.write_bytes(b"not a key")
    junk.chmod(0o600)
    with pytest.raises(UsageError, match="not an unencrypted PEM private key"):
        load_private_key(junk)


def test_tokens_are_unique_url_safe_and_hash_stably() -> None:
    tokens = {new_token() for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        assert re.fullmatch(r"fedft_[A-Za-z0-9_-]{32}", token)
    token = "fedft_example"
    digest = hash_token(token)
    # Pinned: the stored digest is plain SHA-256 of the UTF-8 token, hex encoded.
    assert digest == "c8e691ab6b7f82cb37d5a924a0e06a2b7add8df194f492142e708fcd93a26bc8"
    assert hash_token(token) == digest
    assert hash_token(token + "\n") == digest  # a pasted newline is not part of the token
    assert hash_token("fedft_other") != digest
    assert token_matches(token, digest)
    assert token_matches(token, digest.upper())
    assert not token_matches("fedft_other", digest)


def test_one_client_filling_its_window_does_not_lock_out_another() -> None:
    """Defect 2: one global bounded cache let a flood of future-stamped calls refuse everyone."""
    cache = NonceCache(window=30.0, max_entries=100)
    for i in range(1000):
        cache.check_and_add("flood", f"n{i}", NOW + 5, NOW)
    assert not cache.check_and_add("flood", "late", NOW + 1, NOW)  # the flooder locked itself
    assert cache.check_and_add("honest", "h1", NOW, NOW)
    assert cache.check_and_add("honest", "h2", NOW + 0.5, NOW + 0.5)


def test_the_start_floor_refuses_stamps_a_previous_process_accepted() -> None:
    """Defect 8: a restarted server's floor lies after every stamp the old one accepted."""
    cache = NonceCache(window=30.0, floor=NOW + 5)
    assert not cache.check_and_add("a", "n1", NOW + 4.9, NOW)
    assert cache.check_and_add("a", "n2", NOW + 5.001, NOW)
