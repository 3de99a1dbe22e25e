"""1. ept_map through the gateway's endpoint mapper (10.99.0.1:135), impacket as the client."""

import pytest

import rpcgate_interop as ri
from interop_env import SAMBA_REAL_PORTS

NOT_REGISTERED = 0x16c9a0d6
ALLOWED = ['samr', 'lsarpc', 'netlogon', 'drsuapi', 'dssetup']


def _is_not_registered(err):
    return err.code == NOT_REGISTERED or 'ept_s_not_registered' in str(err)


@pytest.mark.parametrize('iface', ALLOWED)
def test_ept_map_returns_a_range_port_and_the_same_one_twice(dc1, iface):
    host, port = ri.ept_map(dc1.host, dc1.epm_port, *ri.IFACES[iface])
    assert host == dc1.host
    assert port in dc1.ports, 'ept_map %s through the gateway gave port %d, not in %d-%d' % (
        iface, port, dc1.first, dc1.last)
    _, again = ri.ept_map(dc1.host, dc1.epm_port, *ri.IFACES[iface])
    assert again == port, 'ept_map %s asked twice: %d then %d' % (iface, port, again)


@pytest.mark.parametrize('iface', ALLOWED)
def test_ept_map_tower_points_at_the_gateway(dc1, iface):
    """The whole reply, not just what impacket keeps: status 0, every tower TCP to a range
    port, IP floor = the address the client connected to."""
    status, towers = ri.ept_map_towers(dc1.host, dc1.epm_port, *ri.IFACES[iface])
    assert status == 0, 'status 0x%08x' % status
    assert towers, 'no towers in the ept_map reply'
    for t in towers:
        assert t['protocol'] == 'ncacn_ip_tcp', t
        assert t['uuid'].lower() == ri.IFACES[iface][0], t
        assert t['port'] in dc1.ports, t
        assert t['port'] not in SAMBA_REAL_PORTS, t
        assert t['ip'] == dc1.host, 'IP floor %s, expected the gateway address %s: %r' % (t['ip'], dc1.host, t)


def test_ept_map_gateway_ports_follow_server_endpoints(dc1, direct):
    """Interfaces that share a server endpoint share a gateway port, and only those."""
    gw = {name: dc1.map(name) for name in ALLOWED}
    real = {name: direct['ports'][name] for name in ALLOWED}
    for a in ALLOWED:
        for b in ALLOWED:
            assert (real[a] == real[b]) == (gw[a] == gw[b]), \
                'server ports %r vs gateway ports %r' % (real, gw)


def test_ept_map_denied_interface_is_not_registered(dc1, direct):
    # The DC does register wkssvc (on the samr endpoint): the refusal comes from the gateway.
    assert direct['ports']['wkssvc'] in SAMBA_REAL_PORTS
    with pytest.raises(ri.RPCError) as ei:
        ri.ept_map(dc1.host, dc1.epm_port, *ri.IFACES['wkssvc'])
    assert _is_not_registered(ei.value), 'expected ept_s_not_registered, got %r (%s)' % (ei.value.code, ei.value)
    status, towers = ri.ept_map_towers(dc1.host, dc1.epm_port, *ri.IFACES['wkssvc'])
    assert status == NOT_REGISTERED and towers == [], (hex(status), towers)


def test_ept_map_unknown_version_is_not_registered(dc1):
    with pytest.raises(ri.RPCError) as ei:
        ri.ept_map(dc1.host, dc1.epm_port, ri.IFACES['samr'][0], '2.0')
    assert _is_not_registered(ei.value), 'expected ept_s_not_registered, got %r (%s)' % (ei.value.code, ei.value)


def test_ept_map_on_second_route_denies_drsuapi(nodrs, direct):
    assert direct['ports']['drsuapi'] in SAMBA_REAL_PORTS
    with pytest.raises(ri.RPCError) as ei:
        ri.ept_map(nodrs.host, nodrs.epm_port, *ri.IFACES['drsuapi'])
    assert _is_not_registered(ei.value), 'expected ept_s_not_registered, got %r (%s)' % (ei.value.code, ei.value)
    port = nodrs.map('lsarpc')
    assert port in nodrs.ports
