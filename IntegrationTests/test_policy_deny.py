"""4. A denied interface (drsuapi on route dc1-nodrs, wkssvc on dc1) is refused by the gateway
with a DCE/RPC rejection (quickly, not by timing out), and the DC never sees the bind.

Where the traffic is: the client and the gateway are both 10.99.0.1 (a local address), so
client -> gateway segments cross `lo`; gateway -> DC segments cross the veth `rpcg-h`.
"""

import os
import time

import pytest
from impacket.dcerpc.v5 import dssp
from impacket.dcerpc.v5.rpcrt import DCERPCException

import rawrpc
import rpcgate_interop as ri
from capture import Capture, streams
from interop_env import SAMBA_HOST

REFUSAL_LIMIT_S = 5.0
DRSUAPI_WIRE = rawrpc.uuid_wire_bytes(ri.IFACES['drsuapi'][0])
LSARPC_WIRE = rawrpc.uuid_wire_bytes(ri.IFACES['lsarpc'][0])
assert DRSUAPI_WIRE == bytes.fromhex('35 42 51 e3 06 4b d1 11 ab 04 00 c0 4f c2 dc d2')


def _assert_refused(fn, what):
    """fn() must raise a DCE/RPC context rejection (abstract syntax not supported) in < 5 s."""
    t0 = time.monotonic()
    with pytest.raises((DCERPCException, ri.RPCError)) as ei:
        fn()
    elapsed = time.monotonic() - t0
    text = str(ei.value)
    assert 'abstract_syntax_not_supported' in text or "interface isn't listening" in text, \
        '%s: expected a bind_ack rejecting the context, got %r' % (what, text)
    assert elapsed < REFUSAL_LIMIT_S, '%s: refusal took %.2f s' % (what, elapsed)
    return text


def test_denied_binds_are_refused_and_never_reach_the_server(nodrs, metrics, outdir):
    port = nodrs.map('lsarpc')   # lsarpc, dssetup and drsuapi share this server endpoint
    before = metrics()
    srv_pcap = os.path.join(outdir, 'deny-rpcg-h.pcap')
    cli_pcap = os.path.join(outdir, 'deny-lo.pcap')
    with Capture('rpcg-h', 'tcp and host %s' % SAMBA_HOST, srv_pcap) as srv, \
            Capture('lo', 'tcp and host %s and port %d' % (nodrs.host, port), cli_pcap) as cli:
        # (a) alter_context to drsuapi on an lsarpc connection (anonymous)
        dce = ri.connect(nodrs.host, port)
        try:
            dce.bind(rawrpc.syntax_id(ri.IFACES['lsarpc'][0], 0, 0))
            _assert_refused(lambda: dce.alter_ctx(rawrpc.syntax_id(ri.IFACES['drsuapi'][0], 4, 0)),
                            'alter_context lsarpc -> drsuapi')
        finally:
            dce.disconnect()
        # (b) a direct bind to drsuapi on the mapped port, anonymous
        def bind_anon():
            d = ri.connect(nodrs.host, port)
            try:
                d.bind(rawrpc.syntax_id(ri.IFACES['drsuapi'][0], 4, 0))
            finally:
                d.disconnect()
        _assert_refused(bind_anon, 'bind drsuapi (anonymous)')
        # (c) the DCSync way: bind at privacy with NTLM, then IDL_DRSBind
        _assert_refused(lambda: ri.drsuapi_bind(nodrs.host, port, ri.AUTH_PRIVACY),
                        'bind drsuapi (NTLM, privacy)')

    to_server = {k: v for k, v in streams(srv.segments()).items() if k[2] == SAMBA_HOST}
    from_client = {k: v for k, v in streams(cli.segments()).items() if k[3] == port}
    # The captures work: the lsarpc bind was forwarded, the client did send drsuapi.
    assert any(LSARPC_WIRE in v for v in to_server.values()), \
        'capture on rpcg-h saw no lsarpc bind to the DC (flows: %r); is the capture broken?' % list(to_server)
    sent = [k for k, v in from_client.items() if DRSUAPI_WIRE in v]
    assert len(sent) >= 3, 'drsuapi UUID seen in only %d client->gateway flows (%r) of %r' % (
        len(sent), sent, list(from_client))
    leaked = [k for k, v in to_server.items() if DRSUAPI_WIRE in v]
    assert not leaked, 'drsuapi UUID reached the DC in %r (pcap %s)' % (leaked, srv_pcap)

    after = metrics()
    name = 'rpcgate_binds_total'
    b = before.value(name, route=nodrs.name, interface='drsuapi', decision='deny')
    a = after.value(name, route=nodrs.name, interface='drsuapi', decision='deny')
    assert a - b >= 3, 'binds_total{drsuapi,deny} went %g -> %g\n%s' % (b, a, after.lines(name))
    assert after.value(name, route=nodrs.name, interface='drsuapi', decision='allow') == \
        before.value(name, route=nodrs.name, interface='drsuapi', decision='allow')


def test_denied_bind_ack_is_a_provider_rejection(nodrs):
    """The exact answer: a bind_ack (not bind_nak, not a fault, not a close) whose only
    result is provider_rejection (2) / abstract_syntax_not_supported (1)."""
    port = nodrs.map('lsarpc')
    drs_uuid = ri.IFACES['drsuapi'][0]
    with rawrpc.Conn(nodrs.host, port) as c:
        t0 = time.monotonic()
        c.send(rawrpc.bind_pdu(1, [(0, drs_uuid, 4, 0)]))
        pdu = c.recv_pdu(timeout=REFUSAL_LIMIT_S)
        assert pdu is not None, 'gateway closed the connection instead of answering the bind'
        assert time.monotonic() - t0 < REFUSAL_LIMIT_S
        assert pdu.ptype == rawrpc.PTYPE_BIND_ACK, pdu
        assert pdu.call_id == 1, pdu
        assert pdu.bind_ack_results() == [(2, 1)], (pdu.bind_ack_results(), pdu)
        # alter_context with a denied interface on the same connection: alter_context_resp
        c.send(rawrpc.bind_pdu(2, [(1, drs_uuid, 4, 0)], alter=True))
        pdu = c.recv_pdu(timeout=REFUSAL_LIMIT_S)
        assert pdu is not None, 'gateway closed the connection instead of answering the alter_context'
        assert pdu.ptype == rawrpc.PTYPE_ALTER_CONTEXT_RESP, pdu
        assert pdu.bind_ack_results() == [(2, 1)], (pdu.bind_ack_results(), pdu)


def test_denied_alter_context_leaves_the_connection_usable(nodrs, direct):
    """After the refused alter_context, the context accepted before still works."""
    port = nodrs.map('lsarpc')
    dce = ri.connect(nodrs.host, port)
    try:
        dce.bind(dssp.MSRPC_UUID_DSSP)
        _assert_refused(lambda: dce.alter_ctx(rawrpc.syntax_id(ri.IFACES['drsuapi'][0], 4, 0)),
                        'alter_context dssetup -> drsuapi')
        r = dssp.hDsRolerGetPrimaryDomainInformation(
            dce, dssp.DSROLE_PRIMARY_DOMAIN_INFO_LEVEL.DsRolePrimaryDomainInfoBasic)
        assert r['DomainInfo']['DomainInfoBasic']['DomainNameFlat'].rstrip('\x00') == direct['dssetup'][0]
    finally:
        dce.disconnect()


def test_wkssvc_bind_on_the_samr_port_is_refused(dc1, metrics):
    """The DC serves wkssvc on the samr endpoint; the dc policy does not allow it."""
    port = dc1.map('samr')
    before = metrics()

    def bind():
        d = ri.connect(dc1.host, port)
        try:
            d.bind(rawrpc.syntax_id(ri.IFACES['wkssvc'][0], 1, 0))
        finally:
            d.disconnect()
    _assert_refused(bind, 'bind wkssvc on the samr port')
    after = metrics()
    name = 'rpcgate_binds_total'
    assert after.value(name, route=dc1.name, interface='wkssvc', decision='deny') > \
        before.value(name, route=dc1.name, interface='wkssvc', decision='deny'), after.lines(name)
