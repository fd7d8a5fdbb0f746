"""`gateway keys generate` and `rotate`: tokens signed before a rotation still verify with the
retired key listed under tokens.previous_public_keys, and stop once it is dropped."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import jwt
import pytest

from gateway import parse_config
from gateway.auth.tokens import TokenService
from gateway.errors import Unauthorized
from tests.support.processes import run_gateway


def tokens_for(tmp: Path, **tokens: object) -> TokenService:
    config = parse_config(
        {
            "database": {"url": f"sqlite:///{tmp / 'gw.db'}"},
            "tokens": tokens,
            "upstreams": {"demo": {"url": "http://127.0.0.1:9"}},
            "routes": [],
        },
        environ={},
        base_dir=tmp,
    )
    return TokenService(config.tokens)


def access(tokens: TokenService) -> str:
    token, _ = tokens.access_token(user_id=1, username="guang", session_id="a" * 32, not_after=2e9)
    return token


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA", "RS256"])
def test_generate_then_rotate_keeps_old_tokens_verifying(tmp_path: Path, algorithm: str) -> None:
    env = dict(os.environ)
    made = run_gateway(tmp_path, env, "keys", "generate", "signing.pem", "--algorithm", algorithm)
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE((tmp_path / "signing.pem").stat().st_mode) == 0o600
    before = tokens_for(tmp_path, private_key_file="signing.pem")
    old_token = access(before)
    again = run_gateway(tmp_path, env, "keys", "generate", "signing.pem")
    assert again.returncode == 1 and "exists" in again.stderr

    rotated = run_gateway(tmp_path, env, "keys", "rotate", "signing.pem")
    assert rotated.returncode == 0, rotated.stderr
    retired = [p.name for p in tmp_path.glob("signing.*.pub.pem")]
    assert len(retired) == 1 and retired[0] in rotated.stdout
    after = tokens_for(tmp_path, private_key_file="signing.pem", previous_public_keys=retired)
    assert after.verify_access(old_token).username == "guang"  # signed by the retired key
    new_token = access(after)
    assert (
        jwt.get_unverified_header(new_token)["kid"] != jwt.get_unverified_header(old_token)["kid"]
    )
    assert after.jwks is not None and len(after.jwks["keys"]) == 2

    dropped = tokens_for(tmp_path, private_key_file="signing.pem")
    assert dropped.verify_access(new_token).username == "guang"
    with pytest.raises(Unauthorized):
        dropped.verify_access(old_token)


def test_previous_keys_need_an_asymmetric_key(tmp_path: Path) -> None:
    run_gateway(tmp_path, dict(os.environ), "keys", "generate", "k.pem")
    with pytest.raises(Exception, match="previous_public_keys: needs private_key_file"):
        tokens_for(tmp_path, secret="s" * 40, previous_public_keys=["k.pem"])
