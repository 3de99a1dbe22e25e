"""2. Real calls through gateway ports (impacket, NTLM as Administrator where authenticated)."""

import pytest

import rpcgate_interop as ri

LEVELS = [pytest.param(ri.AUTH_NONE, id='anonymous'),
          pytest.param(ri.AUTH_INTEGRITY, id='integrity'),
          pytest.param(ri.AUTH_PRIVACY, id='privacy')]


@pytest.mark.parametrize('level', LEVELS)
def test_samr_enumerate_domains(dc1, direct, level):
    port = dc1.map('samr')
    names = ri.samr_enumerate_domains(dc1.host, port, level)
    assert names == direct['samr_domains'], 'through the gateway %r, directly %r' % (names, direct['samr_domains'])


def test_drsuapi_bind_at_privacy(dc1):
    port = dc1.map('drsuapi')
    n = ri.drsuapi_bind(dc1.host, port, ri.AUTH_PRIVACY)
    assert n > 0, 'IDL_DRSBind returned %r bytes of server extensions' % n


def test_netlogon_server_challenge_anonymous(dc1):
    port = dc1.map('netlogon')
    challenge = ri.netlogon_server_challenge(dc1.host, port)
    assert isinstance(challenge, bytes) and len(challenge) == 8, challenge


def test_dssetup_on_the_lsarpc_port(dc1, direct):
    port = dc1.map('lsarpc')
    info = ri.dssetup_primary_domain(dc1.host, port)
    assert info == direct['dssetup'], 'through the gateway %r, directly %r' % (info, direct['dssetup'])


@pytest.mark.parametrize('level', [pytest.param(ri.AUTH_INTEGRITY, id='integrity'),
                                   pytest.param(ri.AUTH_PRIVACY, id='privacy')])
def test_dssetup_authenticated_on_the_lsarpc_port(dc1, direct, level):
    port = dc1.map('lsarpc')
    assert ri.dssetup_primary_domain(dc1.host, port, level) == direct['dssetup']


def test_allowed_alter_context_lsarpc_to_drsuapi(dc1):
    """Positive control for the denied case (test_policy_deny): with drsuapi allowed, an
    alter_context from lsarpc to drsuapi on the lsarpc port is accepted, as by the DC itself."""
    port = dc1.map('lsarpc')
    assert ri.bind_then_alter(dc1.host, port, 'lsarpc', 'drsuapi') is True
