"""6. Two gateways, one firewall hole: edge and core over mutual TLS.

    client netns rpcg-tls-cli          edge netns rpcg-tls-edge              root namespace          rpcg-srv
    10.98.0.2  --veth--  10.98.0.1 [edge rpcgate]  10.97.0.1  --veth--  10.97.0.2 [core rpcgate] -- 10.99.0.2 Samba
                                    nftables: out of the edge segment only
                                    TCP 10.97.0.2:8443 (plus replies)

The client segment reaches only the edge (no route anywhere else); the edge reaches only the core's
TLS port (nftables in the edge netns drops everything else, and it has no route to 10.99.0.0/24);
the core (root namespace) reaches the DC. impacket and rpcclient run in the client netns.
The client segment also has IPv6 (client fd98::2, edge fd98::1): the edge's second route
(dc1-v6) listens there; towers carry IPv4 only, so an IPv6 client is told 0.0.0.0 and the gateway
port, and connects to that port at the address it already uses (as Windows and impacket do: only
the endpoint is taken from the tower).
The core's policy allows only sources 10.98.0.0/24: the edge's own address (10.97.0.1) would be
denied, so calls that work prove the core evaluates the REAL client address from the PROXY v2
header; the core's audit log records it.
"""

import json
import os
import socket
import subprocess
import time

import pytest

import rpcgate_interop as ri
from gateway import Gateway, GatewayError, Metrics, http_get

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
LIB = os.path.join(HERE, 'lib')
OUT = os.environ.get('RPCGATE_INTEROP_OUT') or os.path.join(REPO, 'test-output', 'interop')
BINARY = os.environ.get('RPCGATE_BINARY') or os.path.join(REPO, '.build', 'debug', 'rpcgate')
PY = '/usr/bin/python3'

CLI_NS, EDGE_NS = 'rpcg-tls-cli', 'rpcg-tls-edge'
CLIENT, EDGE_CLIENT_SIDE = '10.98.0.2', '10.98.0.1'
CLIENT6, EDGE_CLIENT_SIDE6 = 'fd98::2', 'fd98::1'
EDGE_PORTS6 = (50240, 50259)
EDGE_CORE_SIDE, CORE = '10.97.0.1', '10.97.0.2'
CORE_PORT = 8443
CORE_ADMIN = '127.0.0.1:19236'
EDGE_ADMIN = '%s:19237' % EDGE_CORE_SIDE
SAMBA = '10.99.0.2'
EDGE_PORTS = (50200, 50219)
ALLOWED = ['samr', 'lsarpc', 'netlogon', 'dssetup', 'drsuapi']


def sh(*cmd, check=True, timeout=20):
    r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError('%s: exit %d: %s %s' % (' '.join(cmd), r.returncode, r.stdout, r.stderr))
    return r


def netns_down():
    for ns in (CLI_NS, EDGE_NS):
        sh('ip', 'netns', 'del', ns, check=False)
    sh('ip', 'link', 'del', 'tlsedge-h', check=False)
    # veths of a deleted namespace disappear asynchronously: wait (bounded)
    for _ in range(50):
        if sh('ip', 'link', 'show', 'tlsedge-h', check=False).returncode != 0:
            break
        time.sleep(0.1)


NFT_RULES = """
table inet rpcg_segments {
    chain output {
        type filter hook output priority 0; policy accept;
        oifname "tlsedge-e" ip daddr %(core)s tcp dport %(port)d accept
        oifname "tlsedge-e" ct state established,related accept
        oifname "tlsedge-e" counter drop
    }
    chain forward {
        type filter hook forward priority 0; policy drop;
    }
}
""" % {'core': CORE, 'port': CORE_PORT}


def netns_up():
    netns_down()
    sh('ip', 'netns', 'add', CLI_NS)
    sh('ip', 'netns', 'add', EDGE_NS)
    # client <-> edge
    sh('ip', 'link', 'add', 'tlscli-c', 'netns', CLI_NS, 'type', 'veth', 'peer', 'name', 'tlscli-e', 'netns', EDGE_NS)
    sh('ip', '-n', CLI_NS, 'addr', 'add', CLIENT + '/24', 'dev', 'tlscli-c')
    sh('ip', '-n', EDGE_NS, 'addr', 'add', EDGE_CLIENT_SIDE + '/24', 'dev', 'tlscli-e')
    # nodad: usable at once (no duplicate address detection delay on a fresh veth)
    sh('ip', '-n', CLI_NS, 'addr', 'add', CLIENT6 + '/64', 'dev', 'tlscli-c', 'nodad')
    sh('ip', '-n', EDGE_NS, 'addr', 'add', EDGE_CLIENT_SIDE6 + '/64', 'dev', 'tlscli-e', 'nodad')
    # edge <-> root (core)
    sh('ip', 'link', 'add', 'tlsedge-h', 'type', 'veth', 'peer', 'name', 'tlsedge-e', 'netns', EDGE_NS)
    sh('ip', 'addr', 'add', CORE + '/24', 'dev', 'tlsedge-h')
    sh('ip', '-n', EDGE_NS, 'addr', 'add', EDGE_CORE_SIDE + '/24', 'dev', 'tlsedge-e')
    for ns, dev in ((CLI_NS, 'tlscli-c'), (EDGE_NS, 'tlscli-e'), (EDGE_NS, 'tlsedge-e')):
        sh('ip', '-n', ns, 'link', 'set', dev, 'up')
        sh('ip', '-n', ns, 'link', 'set', 'lo', 'up')
    sh('ip', 'link', 'set', 'tlsedge-h', 'up')
    rules = os.path.join(OUT, 'edge-nft.conf')
    with open(rules, 'w') as f:
        f.write(NFT_RULES)
    sh('ip', 'netns', 'exec', EDGE_NS, 'nft', '-f', rules)


class NetnsGateway(Gateway):
    """A Gateway run inside a network namespace (`ip netns exec` execs: the PID is rpcgate's)."""

    def __init__(self, netns, *args, **kw):
        super().__init__(*args, **kw)
        self.netns = netns

    @property
    def argv(self):
        return ['ip', 'netns', 'exec', self.netns] + Gateway.argv.fget(self)


def in_client(code, timeout=60):
    """Run Python (with rpcgate_interop as ri) in the client netns; returns its JSON output."""
    prog = 'import sys, json\nsys.path.insert(0, %r)\nimport rpcgate_interop as ri\n%s\n' % (LIB, code)
    r = subprocess.run(['ip', 'netns', 'exec', CLI_NS, PY, '-c', prog], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError('client netns: exit %d\n%s\n%s' % (r.returncode, r.stdout, r.stderr))
    return json.loads(r.stdout.strip().splitlines()[-1])


def client_map(iface, epm_port=135, timeout=10):
    return in_client('print(json.dumps(ri.ept_map(%r, %d, *ri.IFACES[%r], timeout=%d)[1]))' % (
        EDGE_CLIENT_SIDE, epm_port, iface, timeout))


def policy(name, sources):
    return ('  %s:\n    default: deny\n    rules:\n      - action: allow\n        interfaces: [%s]\n'
            '        sources: [%s]\n') % (name, ', '.join(ALLOWED), ', '.join(sources))


def edge_config(tls, cert='edge', epm_port=135, ports=EDGE_PORTS, admin=True, v6=False):
    v6_route = ('  - name: dc1-v6\n    listen: "%s"\n    epm_port: 135\n    ports: %d-%d\n    upstream: %s\n'
                '    policy: dc\n    via: core1\n') % (EDGE_CLIENT_SIDE6, EDGE_PORTS6[0], EDGE_PORTS6[1], SAMBA)
    return ('routes:\n  - name: dc1\n    listen: %s\n    epm_port: %d\n    ports: %d-%d\n    upstream: %s\n'
            '    policy: dc\n    via: core1\n' + (v6_route if v6 else '') +
            'peers:\n  core1:\n    address: %s:%d\n'
            '    tls: { cert: %s/%s.pem, key: %s/%s.key, ca: %s/ca.pem, server_name: core1.example.test }\n'
            'policies:\n%s%s') % (
                EDGE_CLIENT_SIDE, epm_port, ports[0], ports[1], SAMBA, CORE, CORE_PORT, tls, cert, tls, cert, tls,
                policy('dc', ['10.98.0.0/24', '"fd98::/64"']), 'admin:\n  listen: %s\n' % EDGE_ADMIN if admin else '')


def core_config(tls, audit):
    return ('core:\n  listen: %s:%d\n'
            '  tls: { cert: %s/core.pem, key: %s/core.key, ca: %s/ca.pem, '
            'allow: ["edge1.example.test", "spiffe://example.test/edge1"] }\n'
            '  upstreams: [%s]\n  policy: dc\n  header_timeout: 3s\n'
            'policies:\n%s'
            'admin:\n  listen: %s\naudit:\n  file: %s\n') % (
                CORE, CORE_PORT, tls, tls, tls, SAMBA, policy('dc', ['10.98.0.0/24', '"fd98::/64"']), CORE_ADMIN, audit)


@pytest.fixture(scope='module')
def tunnel(samba):
    if not os.access(BINARY, os.X_OK):
        pytest.fail('rpcgate binary %s not found' % BINARY, pytrace=False)
    tls = os.path.join(OUT, 'tls')
    sh('bash', os.path.join(REPO, 'deploy', 'tls', 'make-test-ca.sh'), tls, timeout=60)
    audit = os.path.join(OUT, 'core-audit.jsonl')
    if os.path.exists(audit):
        os.unlink(audit)
    netns_up()
    core = Gateway(BINARY, core_config(tls, audit), OUT, name='core')
    edge = NetnsGateway(EDGE_NS, BINARY, edge_config(tls, v6=True), OUT, name='edge')
    started = []
    try:
        core.start(lambda: http_get('http://%s/healthz' % CORE_ADMIN, timeout=2)[0] == 200, deadline_s=30)
        started.append(core)
        edge.start(lambda: client_map('samr', timeout=3) in range(EDGE_PORTS[0], EDGE_PORTS[1] + 1), deadline_s=40,
                   interval_s=0.5)
        started.append(edge)
        yield {'core': core, 'edge': edge, 'tls': tls, 'audit': audit}
    except GatewayError as e:
        pytest.fail(str(e), pytrace=False)
    finally:
        for gw in (edge, core):
            gw.stop()
        netns_down()


def core_metrics():
    return Metrics.scrape(CORE_ADMIN)


def handshakes(m, result):
    return m.value('rpcgate_tls_handshakes_total', result=result)


@pytest.mark.parametrize('level', [pytest.param(ri.AUTH_NONE, id='anonymous'),
                                   pytest.param(ri.AUTH_INTEGRITY, id='sign'),
                                   pytest.param(ri.AUTH_PRIVACY, id='seal')])
def test_samr_through_edge_and_core(tunnel, direct, level):
    port = client_map('samr')
    assert EDGE_PORTS[0] <= port <= EDGE_PORTS[1], 'ept_map through the edge gave port %r' % port
    names = in_client('print(json.dumps(ri.samr_enumerate_domains(%r, %d, %d)))' % (EDGE_CLIENT_SIDE, port, level))
    assert names == direct['samr_domains']


def test_drsuapi_bind_sealed_through_edge_and_core(tunnel):
    port = client_map('drsuapi')
    assert EDGE_PORTS[0] <= port <= EDGE_PORTS[1]
    n = in_client('print(json.dumps(ri.drsuapi_bind(%r, %d, ri.AUTH_PRIVACY)))' % (EDGE_CLIENT_SIDE, port))
    assert n > 0


@pytest.mark.timeout_s(90)
@pytest.mark.parametrize('options', ['sign', 'seal'])
def test_rpcclient_through_edge_and_core(tunnel, options):
    conf = ri._client_conf(ri.DEFAULT_DOMAIN)
    cmd = ['ip', 'netns', 'exec', CLI_NS, 'rpcclient', '-s', conf, '-U',
           '%s\\%s%%%s' % (ri.DEFAULT_DOMAIN, ri.DEFAULT_USER, ri.DEFAULT_PASSWORD), '--use-kerberos=off',
           'ncacn_ip_tcp:%s[%s]' % (EDGE_CLIENT_SIDE, options), '-c', 'enumdomains']
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and 'name:[EXAMPLE]' in r.stdout, 'rpcclient:\n%s\n%s' % (r.stdout, r.stderr)


def test_core_sees_the_real_client(tunnel):
    client_map('samr')  # at least one tunnelled bind
    records = []
    for _ in range(40):  # the audit writer is asynchronous: bounded wait
        with open(tunnel['audit']) as f:
            records = [json.loads(line) for line in f if line.strip()]
        if any(r.get('event.action') == 'bind' for r in records):
            break
        time.sleep(0.1)
    binds = [r for r in records if r.get('event.action') == 'bind']
    assert binds, 'no bind in the core audit log %s' % tunnel['audit']
    clients = {r['source.ip'] for r in binds}
    assert clients == {CLIENT}, 'core audit clients %r (expected only the real client %s)' % (clients, CLIENT)
    assert all(r['rpc.decision'] != 'deny' for r in binds if r.get('rpc.interface') in ALLOWED + ['epmapper'])
    m = core_metrics()
    assert m.value('rpcgate_connections_total', route='core') > 0, m.lines('rpcgate_connections_total')
    assert handshakes(m, 'success') > 0, m.lines('rpcgate_tls_handshakes_total')


def test_edge_segment_has_one_hole(tunnel):
    """From the edge netns: the DC is unreachable, and any core port but 8443 is dropped."""
    prog = ('import socket, sys\n'
            'def probe(h, p):\n'
            '    try:\n'
            '        socket.create_connection((h, p), timeout=1.5).close(); return "open"\n'
            '    except socket.timeout: return "dropped"\n'
            '    except OSError as e: return "error:%%s" %% e.errno\n'
            'print(probe(%r, 135), probe(%r, 19236), probe(%r, %d))\n') % (SAMBA, CORE, CORE, CORE_PORT)
    r = sh('ip', 'netns', 'exec', EDGE_NS, PY, '-c', prog, timeout=15)
    to_dc, to_core_other, to_core_tls = r.stdout.split()
    assert to_dc != 'open' and to_core_other == 'dropped' and to_core_tls == 'open', r.stdout


def test_plain_tcp_to_core_is_refused(tunnel):
    before = handshakes(core_metrics(), 'not_tls')
    s = socket.create_connection((CORE, CORE_PORT), timeout=5)
    s.sendall(bytes([5, 0, 11, 3, 16, 0, 0, 0, 72, 0, 0, 0, 1, 0, 0, 0]) + bytes(56))
    s.settimeout(5)
    data = b''
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    assert b'\x05\x00\x0c' not in data, 'the core answered a plain DCE/RPC bind'
    for _ in range(30):
        if handshakes(core_metrics(), 'not_tls') > before:
            break
        time.sleep(0.1)
    m = core_metrics()
    assert handshakes(m, 'not_tls') == before + 1, m.lines('rpcgate_tls_handshakes_total')


@pytest.mark.timeout_s(90)
@pytest.mark.parametrize('cert,result', [('rogue', 'bad_certificate'), ('stranger', 'peer_not_allowed')])
def test_core_refuses_edges_it_does_not_trust(tunnel, cert, result):
    before = core_metrics()
    bad = NetnsGateway(EDGE_NS, BINARY, edge_config(tunnel['tls'], cert=cert, epm_port=1135, ports=(50300, 50319),
                                                    admin=False), OUT, name='edge-%s' % cert)
    try:
        bad.start(lambda: 'route listening' in bad.log_tail(200), deadline_s=20)
        with pytest.raises(RuntimeError):
            client_map('samr', epm_port=1135, timeout=5)
    finally:
        bad.stop()
    for _ in range(30):
        if handshakes(core_metrics(), result) > handshakes(before, result):
            break
        time.sleep(0.1)
    after = core_metrics()
    assert handshakes(after, result) > handshakes(before, result), after.lines('rpcgate_tls_handshakes_total')
    assert after.value('rpcgate_connections_refused_total', route='core', reason='tls') > \
        before.value('rpcgate_connections_refused_total', route='core', reason='tls')


def test_sighup_reloads_the_core_and_tunnels_keep_working(tunnel, direct):
    """SIGHUP: the core re-reads its configuration and rebuilds its TLS context from the PEM
    files (renewed certificates take effect for new tunnels); tunnels keep working."""
    import signal
    name = 'rpcgate_config_reloads_total'
    before = core_metrics().value(name, result='success')
    os.kill(tunnel['core'].proc.pid, signal.SIGHUP)  # our own core process, by PID
    for _ in range(50):
        if core_metrics().value(name, result='success') > before:
            break
        time.sleep(0.1)
    assert core_metrics().value(name, result='success') == before + 1
    assert 'core TLS context and settings reloaded' in tunnel['core'].log_tail(400)
    port = client_map('samr')
    names = in_client('print(json.dumps(ri.samr_enumerate_domains(%r, %d, ri.AUTH_PRIVACY)))' % (EDGE_CLIENT_SIDE, port))
    assert names == direct['samr_domains']


RAW_EPM = """
import rawrpc, socket, struct
SAMR = ri.IFACES['samr']

def ept_map(host, port, half_close=False):
    c = rawrpc.Conn(host, port, timeout=10)
    c.send(rawrpc.bind_pdu(1, [(0,) + rawrpc.EPM_UUID]))
    ack = c.recv_pdu(timeout=10)
    assert ack is not None and ack.ptype == rawrpc.PTYPE_BIND_ACK, ack
    c.send(rawrpc.ept_map_request(2, SAMR[0], 1, max_towers=4))
    if half_close:
        c.sock.shutdown(socket.SHUT_WR)
    reply = c.recv_pdu(timeout=10)
    c.close()
    assert reply is not None and reply.ptype == rawrpc.PTYPE_RESPONSE, reply
    raw = reply.raw
    tcp = raw.find(b'\\x01\\x00\\x07\\x02\\x00')
    ip = raw.find(b'\\x01\\x00\\x09\\x04\\x00')
    tower_port = struct.unpack('>H', raw[tcp + 5:tcp + 7])[0] if tcp >= 0 else None
    tower_ip = '.'.join(str(b) for b in raw[ip + 5:ip + 9]) if ip >= 0 else None
    return rawrpc.ept_map_status(reply), tower_port, tower_ip

def bind_samr(host, port):
    c = rawrpc.Conn(host, port, timeout=10)
    c.send(rawrpc.bind_pdu(1, [(0, SAMR[0], 1, 0)]))
    ack = c.recv_pdu(timeout=10)
    c.close()
    return ack.bind_ack_results()[0][0], ack.secondary_address().decode()
"""


def test_ipv6_client_through_edge_and_core(tunnel, direct):
    """An IPv6-only client: ept_map at [fd98::1]:135 gives a gateway port with address 0.0.0.0
    (towers are IPv4); it binds samr on that port at the address it already uses, and impacket's
    EnumerateDomains works there; the core's audit names the IPv6 client (PROXY v2 TCP6)."""
    status, port, ip = in_client(RAW_EPM + 'print(json.dumps(ept_map(%r, 135)))' % EDGE_CLIENT_SIDE6)
    assert status == 0, 'ept_map over IPv6: status 0x%x' % status
    assert EDGE_PORTS6[0] <= port <= EDGE_PORTS6[1], port
    assert ip == '0.0.0.0', 'an IPv6 client was told %s' % ip
    result, secondary = in_client(RAW_EPM + 'print(json.dumps(bind_samr(%r, %d)))' % (EDGE_CLIENT_SIDE6, port))
    assert result == 0 and secondary == str(port), (result, secondary)
    records = []
    for _ in range(40):
        with open(tunnel['audit']) as f:
            records = [json.loads(line) for line in f if line.strip()]
        if any(r.get('source.ip') == CLIENT6 for r in records):
            break
        time.sleep(0.1)
    assert any(r.get('source.ip') == CLIENT6 and r.get('event.action') == 'bind' for r in records), \
        'no bind of %s in the core audit log' % CLIENT6


def test_half_close_across_edge_and_core(tunnel):
    """The client sends its last request and half-closes (SHUT_WR): the edge carries the
    half-close over TLS to the core, and the response still comes back."""
    status, port, ip = in_client(RAW_EPM + 'print(json.dumps(ept_map(%r, 135, half_close=True)))' % EDGE_CLIENT_SIDE)
    assert status == 0 and EDGE_PORTS[0] <= port <= EDGE_PORTS[1], (status, port)
    assert ip == EDGE_CLIENT_SIDE, ip
