"""The short ways a file's rows take are exact: EmailNormaliser (each domain checked once) accepts, refuses and
normalises every address as plain email-validator does through `normalise_email`, with the same message; a
name left as it is when it is on one line already is the name `one_line` would give."""

from __future__ import annotations

from hypothesis import example, given, strategies as st

from newsletter.sources.subscribers import (EmailNormaliser, SubscriberError, normalise_email, one_line,
                                            subscriber_cleaner)

#: One normaliser for the whole run with a tiny cache, so that domains are found in it, evicted and checked
#: again, as in a long file with many domains.
SHARED = EmailNormaliser(domains=8)

#: Characters of an unquoted local part (RFC 5322 atext), a few of each kind.
ATEXT_CHARS = "abcxyzABCXYZ0189!#$%&'*+-/=?^_`{|}~"
LABELS = ["example", "EXAMPLE", "mail", "b\u00fccher", "xn--bcher-kva", "xn--bcher", "xn--", "ex-ample", "-ex",
          "ex-", "a--b", "ab--cd", "xn--4dbc", "1", "123", "\u05d0\u05d1", "\u4e2d\u6587", "caf\u00e9", "cafe\u0301",
          "x" * 63, "x" * 64, "\uff21", "a\u200db", "", "_dmarc", "com", "org", "co.uk", "local", "localhost",
          "invalid", "test", "onion", "arpa", "example.com", "e\u0308", "\u2488", "a\u3002b"]
TLDS = ["com", "org", "de", "io", "test", "local", "localhost", "invalid", "onion", "arpa", "123", "c0m", "xn--p1ai",
        "\u0440\u0444", "COM", ""]


@st.composite
def addresses(draw) -> str:
    local = draw(st.one_of(
        st.text(alphabet=ATEXT_CHARS + ".", min_size=0, max_size=70),
        st.text(alphabet=ATEXT_CHARS + ".\"\\ @<>()[],;:\u00e9\u00df\u4e2d\u0301\u200b\x00\t", max_size=20),
        st.sampled_from(["postmaster", "Abuse", "a..b", ".a", "a.", '"quoted"', '"a b"', '"a@b"', '"a\\"b"',
                         "x" * 64, "x" * 65, "\u00e9l\u00e8ve", "\uff41", "a\u0338"])))
    labels = draw(st.lists(st.sampled_from(LABELS), min_size=0, max_size=4))
    domain = ".".join([*labels, draw(st.sampled_from(TLDS))])
    domain = draw(st.one_of(st.just(domain), st.just(domain.upper()), st.just(domain + "."),
                            st.sampled_from(["[1.2.3.4]", "[IPv6:::1]", "[300.1.1.1]", "b@c.com", "", "x" * 250 + ".com",
                                             "x" * 200 + ".example.com", ("a" * 62 + ".") * 4 + "com"])))
    at = draw(st.sampled_from(["@", "@", "@", "@@", "\uff20", " @ ", "@\u0338"]))
    around = draw(st.sampled_from(["", " ", "\t", "\n", "Name <", "\u00a0"]))
    return f"{around}{local}{at}{domain}{'>' if around == 'Name <' else around}"


def outcome(normalise, address: str) -> tuple[str, str]:
    try:
        return "accepted", normalise(address)
    except SubscriberError as exc:
        return "refused", str(exc)


@given(st.one_of(addresses(), st.emails(), st.text(max_size=40)))
@example("Maria.Lopez@Example.ORG")
@example("maria@xn--bcher-kva.de")
@example("maria@B\u00fccher.de")
@example("Postmaster@example.org")
@example("a@localhost")
@example("a@example.test")
@example("a@sub.example.invalid")
@example("a@[1.2.3.4]")
@example("x" * 64 + "@" + "y" * 63 + "." + "z" * 63 + "." + "w" * 61 + ".com")  # 254 and more
@example("x" * 64 + "@" + "y" * 63 + "." + "z" * 63 + "." + "w" * 58 + ".com")
@example("ab@xn--4dbc.1.com")
def test_the_short_way_accepts_refuses_and_normalises_as_email_validator_does(address):
    assert outcome(SHARED, address) == outcome(normalise_email, address)
    assert outcome(EmailNormaliser(), address) == outcome(normalise_email, address)


def test_ordinary_addresses_take_the_short_way():
    """Not a timing: the second address's domain comes from the cache, so the short way is really taken."""
    normalise = EmailNormaliser()
    assert normalise("ana@example.org") == "ana@example.org"
    assert normalise(" Ben.Okoro@example.org") == "ben.okoro@example.org"
    info = normalise._domain.cache_info()
    assert (info.hits, info.misses) == (1, 1)


CLEAN = subscriber_cleaner(["patients"])


@given(st.one_of(st.text(max_size=220), st.text(alphabet=" \t\n\r\x0b\x0c\x1c\x85\xa0\u2028\u3000\u200bab<", max_size=12)))
@example("Ana  Silva")
@example(" Ana")
@example("Ana\u00a0Silva")
@example("Ana\x1fSilva")
def test_a_name_is_the_one_line_of_itself(name):
    expected = one_line(name)
    try:
        cleaned = CLEAN({"email": "a@example.org", "segment": "patients", "name": name})["name"]
    except SubscriberError as exc:
        assert len(expected) > 200 or "<" in expected or ">" in expected, exc
        return
    assert cleaned == expected
