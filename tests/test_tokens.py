"""Link tokens: the per-recipient fast path signs exactly what itsdangerous signs and verifies."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given, strategies as st
from itsdangerous import Signer

from newsletter.tokens import MAX_AGE, PURPOSES, Tokens, TokenError, _hmac_pads

import pytest


@given(secret=st.text(min_size=1, max_size=200), subscriber_id=st.integers(min_value=0, max_value=10**12),
       purpose=st.sampled_from([p for p in PURPOSES if p not in MAX_AGE]))
def test_fast_signature_equals_itsdangerous_and_verifies(secret, subscriber_id, purpose):
    tokens = Tokens(secret)
    key = hmac.new(secret.encode(), f"newsletter-link:{purpose}".encode(), hashlib.sha256).digest()
    reference = Signer(key, salt=purpose, key_derivation="none", digest_method=hashlib.sha256)
    token = tokens.sign(purpose, subscriber_id)
    assert token == reference.sign(str(subscriber_id).encode()).decode()
    assert tokens.verify(purpose, token) == subscriber_id


@given(secret=st.text(min_size=1, max_size=200), subscriber_id=st.integers(min_value=0, max_value=10**12))
def test_both_link_tokens_at_once_are_what_sign_makes(secret, subscriber_id):
    tokens = Tokens(secret)
    unsubscribe, preferences = tokens.link_tokens(subscriber_id)
    assert unsubscribe == tokens.sign("unsubscribe", subscriber_id)
    assert preferences == tokens.sign("preferences", subscriber_id)
    assert tokens.verify("preferences", preferences) == subscriber_id


@given(key=st.binary(min_size=0, max_size=200), message=st.binary(max_size=100))
def test_precomputed_pads_give_the_standard_hmac(key, message):
    inner, outer = _hmac_pads(key)
    inner, outer = inner.copy(), outer.copy()
    inner.update(message)
    outer.update(inner.digest())
    assert outer.digest() == hmac.digest(key, message, "sha256")


def test_a_token_for_one_purpose_is_refused_for_another():
    tokens = Tokens("s3cret")
    with pytest.raises(TokenError):
        tokens.verify("preferences", tokens.sign("unsubscribe", 7))
