"""3. Samba's rpcclient through the gateway: it asks 10.99.0.1:135 (the gateway) for the
samr endpoint, then connects to the gateway port it got."""

import pytest

import rpcgate_interop as ri


@pytest.mark.timeout_s(90)
@pytest.mark.parametrize('options', ['sign', 'seal', 'spnego,seal'])
def test_rpcclient_enumdomains(dc1, metrics, options):
    before = metrics()
    r = ri.rpcclient(dc1.host, 'enumdomains', options, timeout=60)
    assert 'name:[EXAMPLE]' in r.stdout, 'rpcclient output:\n%s\n%s' % (r.stdout, r.stderr)
    after = metrics()
    for listener in ('epm', 'mapped'):
        name = 'rpcgate_connections_total'
        b = before.value(name, route=dc1.name, listener=listener)
        a = after.value(name, route=dc1.name, listener=listener)
        assert a > b, 'rpcclient did not go through the gateway %s listener (%s %g -> %g)\n%s' % (
            listener, name, b, a, after.lines(name))
