"""Only the query parameters the product uses are kept, in page and referrer URLs alike."""

from __future__ import annotations

import pytest

from ingest.pipeline import clean_referrer, keep_query_params, split_url


@pytest.mark.parametrize(("query", "extra", "kept"), [
    ("email=a%40b.example&utm_source=news&token=x&ref=hn&page=2", (), "utm_source=news&ref=hn"),
    ("UTM_Medium=mail&utm_campaign=spring%20sale&source=x&via=y", (), "UTM_Medium=mail&utm_campaign=spring%20sale&source=x&via=y"),
    ("email=a&page=2&Page=3", ("page",), "page=2&Page=3"),
    ("ab_color=red&ab_size=xl&abc=1", ("ab_*",), "ab_color=red&ab_size=xl"),
    ("utm%5Fsource=encoded-name&reset_token=1", (), "utm%5Fsource=encoded-name"),
    ("email=someone%40example.com", (), None),
    ("&&utm_term=x&", (), "utm_term=x"),
    ("", (), None),
])
def test_query_keeps_only_the_allowed_parameters(query: str, extra: tuple[str, ...], kept: str | None) -> None:
    assert keep_query_params(query, extra) == kept


def test_referrer_loses_credentials_fragment_and_other_parameters() -> None:
    referrer = "https://user:secret@www.google.com/search?q=private+search&utm_source=x#token=abc"
    assert clean_referrer(referrer, ()) == "https://www.google.com/search?utm_source=x"
    assert clean_referrer("https://news.example.org/a?id=5&ref=feed", ("id",)) == "https://news.example.org/a?id=5&ref=feed"
    assert clean_referrer("android-app://com.google.android.gm/", ()) == "android-app://com.google.android.gm/"
    assert clean_referrer("http://[not-a-host", ()) is None


def test_a_hash_route_keeps_its_path_but_not_its_query() -> None:
    assert split_url("https://app.example/#/reset?token=abc") == ("app.example", "/#/reset", None)
    assert split_url("https://app.example/p?utm_source=x#/a") == ("app.example", "/p/#/a", "utm_source=x")
