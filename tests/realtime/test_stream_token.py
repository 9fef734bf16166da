from __future__ import annotations

import pytest

from api.stream_token import StreamTokenError, mint, verify

SECRET = b"k" * 32


def test_a_token_names_its_site_user_and_expiry() -> None:
    token, expires = mint(SECRET, "site1", "user1", ttl=60, now=1000)
    grant = verify(SECRET, token, now=1059)
    assert (grant.site_id, grant.user_id, grant.expires) == ("site1", "user1", 1060)
    assert expires == 1060


def test_expired_forged_and_malformed_tokens_are_refused() -> None:
    token, _ = mint(SECRET, "site1", None, ttl=60, now=1000)
    with pytest.raises(StreamTokenError, match="expired"):
        verify(SECRET, token, now=1060)
    with pytest.raises(StreamTokenError, match="invalid"):
        verify(b"x" * 32, token, now=1001)
    body, _, mac = token.partition(".")
    other, _ = mint(SECRET, "site2", None, ttl=60, now=1000)
    with pytest.raises(StreamTokenError):
        verify(SECRET, other.partition(".")[0] + "." + mac, now=1001)
    for bad in ("", "abc", "a.b", body + "."):
        with pytest.raises(StreamTokenError):
            verify(SECRET, bad, now=1001)
