"""Hardened Windows clients through the gateway (issue 18): endpoint-mapper lookups protected at
packet level or above (Windows' EnableAuthEpResolution; Windows DCs replicating).

(a) Replays of real Windows byte streams (../shared/captures, INDEX.md section A) through the real
    binary, a fake server answering with the recorded server PDUs (tower addresses patched to the
    fake server's): the unauthenticated NDR64 ept_map is rewritten; the signed NDR64 lookups come
    back byte-identical with `port_mapping: preserve` and in transparent mode with
    `server_ports_listen`, and are refused with reason `authenticated_epm` in pool mode. Skipped,
    saying why, when the captures or tshark are absent.
(b) impacket against Samba through the gateway: an authenticated lookup (an unbound, connected
    DCERPC_v5 with credentials and an auth level, passed as dce= to epm.hept_map), then samr,
    lsarpc and drsuapi calls, at every auth level: pass in preserve and transparent modes; in pool
    mode (the session gateway's route dc1) refused within 2 s.

Gateways here listen on 127.0.0.1 (replays), on 10.99.0.1 with other ports than the session
gateway's, or on 10.96.0.1 (the client namespace of test_modes.py).
"""

import os
import re
import subprocess
import time

import pytest

import rpcgate_interop as ri
import replay
from gateway import Gateway, Metrics, http_get
from interop_env import ADMIN, DC1, GATEWAY_HOST, SAMBA_HOST
from test_modes import CLIENT_IP, HOST_IP, LIB, NS, VETH_H, client_ns, nft, sh  # noqa: F401 (fixture)

from impacket.dcerpc.v5 import epm

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OUT = os.environ.get('RPCGATE_INTEROP_OUT') or os.path.join(REPO, 'test-output', 'interop')
BINARY = os.environ.get('RPCGATE_BINARY') or os.path.join(REPO, '.build', 'debug', 'rpcgate')

ZEROLOGON = 'pcapattack__zerologon_mimikatz_ntlm_privacy_scan_and_exploit_encrypted.pcapng'
DCSHADOW = 'pcapattack__DCShadow_add_primarygroupid_512_to_std_account.pcapng'
# NDR64 bind with NTLM at integrity (5), bind_ack + CHALLENGE, AUTH3, signed ept_map for NETLOGON,
# signed reply with 2 towers (49669, 49667).
SIGNED_IN_BIND = (ZEROLOGON, [1, 2, 3, 4, 5])
# NDR64 bind, unauthenticated map answered not-registered, alter_context with NTLM at integrity,
# alter_context_resp, AUTH3, the map again signed, and its signed answer.
SIGNED_IN_ALTER = (DCSHADOW, [43, 44, 45, 46, 47, 48, 49, 50, 55])
# NDR64 bind [NDR32, NDR64, BTFN], bind_ack, unauthenticated ept_map for DRSUAPI, 1 tower.
UNAUTHENTICATED_NDR64 = (DCSHADOW, [24, 25, 26, 27])

FAKE_HOST, FAKE_PORT = '127.0.0.1', 20135
ADVERTISE = '192.0.2.77'
REPLAY_ADMIN = '127.0.0.1:19260'
POOL_EPM, PRESERVE_EPM = 10135, 10136
POOL_PORTS = (50700, 50709)
PRESERVE_PORTS = (49660, 49668)   # 49667 inside, 49669 outside (zerologon's two towers)

POLICY = ('policies:\n  dc:\n    default: deny\n    rules:\n      - action: allow\n'
          '        interfaces: [samr, lsarpc, netlogon, dssetup, drsuapi]\n')


def skip_without(capture):
    why = replay.available(capture)
    if why:
        pytest.skip(why)


def start(name, routes, admin, extra=''):
    gw = Gateway(BINARY, 'routes:\n' + routes + POLICY + 'admin:\n  listen: %s\n' % admin + extra, OUT, name=name)

    def ready():
        status, _ = http_get('http://%s/healthz' % admin, timeout=2)
        return status == 200
    return gw.start(ready, deadline_s=20)


def server_frames(convo, server):
    return [server.server_frame(d) for _, from_client, d in convo if not from_client]


def closed_total(admin, route, reason):
    return Metrics.scrape(admin).value('rpcgate_connections_closed_total', route=route, reason=reason) or 0


def counter(admin, name, **labels):
    return Metrics.scrape(admin).value(name, **labels) or 0


def settled(read, target, tries=40):
    """`read()` once it reaches `target` (a connection's close is counted as the gateway finishes
    it, just after the client saw it), or its last value after `tries` polls of 50 ms."""
    value = read()
    for _ in range(tries):
        if value >= target:
            break
        time.sleep(0.05)
        value = read()
    return value


# ------------------------------------------------------------------ (a) replays

@pytest.fixture(scope='module')
def reserved_ports():
    """The preserve gateways listen on the servers' own ranges, inside Linux's ephemeral range,
    where an outgoing connection's TIME-WAIT socket can stop them from binding (as check-config
    warns): reserve them while the module runs (docs/DEPLOYMENT.md), and put the old list back."""
    before = sh('sysctl', '-n', 'net.ipv4.ip_local_reserved_ports').stdout.strip()
    extra = '%d-%d,%d-%d,%d' % (SAMBA_RANGE[0], SAMBA_RANGE[1], PRESERVE_PORTS[0], PRESERVE_PORTS[1] + 2,
                                SERVER_PORTS_LISTEN)
    sh('sysctl', '-qw', 'net.ipv4.ip_local_reserved_ports=%s' % (before + ',' + extra if before else extra))
    try:
        yield
    finally:
        sh('sysctl', '-qw', 'net.ipv4.ip_local_reserved_ports=%s' % before, check=False)


@pytest.fixture(scope='module')
def replay_gateway(reserved_ports):
    """Two routes in front of the fake server: pool (default) and preserve."""
    for capture in (ZEROLOGON, DCSHADOW):
        skip_without(capture)
    def route(name, epm_port, ports, extra):
        return ('  - name: %s\n    listen: 127.0.0.1\n    epm_port: %d\n    advertise: %s\n'
                '    upstream: %s\n    upstream_epm_port: %d\n    ports: %d-%d\n    policy: dc\n%s') % (
                    name, epm_port, ADVERTISE, FAKE_HOST, FAKE_PORT, ports[0], ports[1], extra)
    gw = start('gateway-replay', route('replay-pool', POOL_EPM, POOL_PORTS, '')
               + route('replay-preserve', PRESERVE_EPM, PRESERVE_PORTS, '    port_mapping: preserve\n'),
               REPLAY_ADMIN)
    try:
        yield gw
    finally:
        gw.stop()


def replay_through(epm_port, capture, frames, host='127.0.0.1', netns=None, fake=(FAKE_HOST, FAKE_PORT)):
    convo = replay.extract(capture, frames)
    server = replay.ScriptedServer(fake[0], fake[1], convo, patch_address=fake[0]).start()
    try:
        out = replay.run_client(host, epm_port, convo, OUT, netns=netns)
    finally:
        server.stop()
    return convo, server, out


@pytest.mark.timeout_s(60)
@pytest.mark.parametrize('route', ['replay-pool', 'replay-preserve'])
def test_replay_unauthenticated_ndr64_map_is_rewritten(replay_gateway, route):
    skip_without(DCSHADOW)
    epm_port = POOL_EPM if route == 'replay-pool' else PRESERVE_EPM
    convo, server, out = replay_through(epm_port, *UNAUTHENTICATED_NDR64)
    expected = server_frames(convo, server)
    assert out['error'] is None and len(out['received']) == 2, out
    assert out['received'][0] == expected[0], 'the EPM bind_ack passes unchanged'
    reply, original = out['received'][1], expected[1]
    assert len(reply) == len(original) and reply != original, 'the NDR64 ept_map reply must be rewritten'
    towers = replay.tower_endpoints(reply)
    (server_port, _), = replay.tower_endpoints(original)
    assert towers, reply.hex()
    for port, address in towers:
        assert address == ADVERTISE, towers
        if route == 'replay-pool':
            assert POOL_PORTS[0] <= port <= POOL_PORTS[1], towers
        else:
            assert port == server_port and PRESERVE_PORTS[0] <= port <= PRESERVE_PORTS[1], towers


@pytest.mark.timeout_s(60)
@pytest.mark.parametrize('capture,frames', [SIGNED_IN_BIND, SIGNED_IN_ALTER], ids=['ntlm-in-bind', 'ntlm-in-alter'])
def test_replay_signed_lookup_is_byte_identical_in_preserve_mode(replay_gateway, capture, frames):
    skip_without(capture)
    before = counter(REPLAY_ADMIN, 'rpcgate_epm_protected_replies_total', route='replay-preserve')
    convo, server, out = replay_through(PRESERVE_EPM, capture, frames)
    assert out['error'] is None and not out['closed'], out
    assert out['received'] == server_frames(convo, server), 'every server PDU must reach the client byte for byte'
    assert server.received and len(server.received[0]) == sum(1 for _, c, _ in convo if c), server.received
    assert [p for p in server.received[0]] == [d for _, c, d in convo if c], 'client PDUs reach the server unchanged'
    assert counter(REPLAY_ADMIN, 'rpcgate_epm_protected_replies_total', route='replay-preserve') == before + 1


@pytest.mark.timeout_s(60)
def test_preserve_counts_and_logs_once_a_signed_tower_outside_the_range(replay_gateway):
    skip_without(ZEROLOGON)
    before = counter(REPLAY_ADMIN, 'rpcgate_epm_towers_outside_range_total', route='replay-preserve')
    for _ in range(2):
        _, _, out = replay_through(PRESERVE_EPM, *SIGNED_IN_BIND)
        assert out['error'] is None and len(out['received']) == 2, out
    # Tower 49669 is outside 49660-49668, in each of the two replies; logged once per endpoint.
    assert counter(REPLAY_ADMIN, 'rpcgate_epm_towers_outside_range_total', route='replay-preserve') == before + 2
    # Once over the gateway's whole life (earlier tests of this module may have logged it).
    log = replay_gateway.log_since(0, limit=10_000_000)
    lines = [l for l in log.splitlines() if "outside the route's ports" in l and '127.0.0.1:49669' in l]
    assert len(lines) == 1, lines or log[-3000:]


@pytest.mark.timeout_s(60)
def test_replay_signed_lookup_is_refused_in_pool_mode(replay_gateway):
    skip_without(ZEROLOGON)
    before = closed_total(REPLAY_ADMIN, 'replay-pool', 'authenticated_epm')
    started = time.monotonic()
    convo, server, out = replay_through(POOL_EPM, *SIGNED_IN_BIND)
    assert time.monotonic() - started < 10
    assert out['closed'], out
    assert len(out['received']) == 1, out
    rejection = out['received'][0]
    assert rejection[2] == 12 and rejection != server_frames(convo, server)[0], 'a bind_ack that rejects, made here'
    assert all(not got for got in server.received), 'the signed bind never reaches the server: %r' % server.received
    # The second attempt is refused too, but the warning is logged once per client.
    _, _, again = replay_through(POOL_EPM, *SIGNED_IN_BIND)
    assert again['closed'], again
    assert settled(lambda: closed_total(REPLAY_ADMIN, 'replay-pool', 'authenticated_epm'), before + 2) == before + 2
    # Every replay client is 127.0.0.1: one warning over the gateway's whole life.
    warnings = [l for l in replay_gateway.log_since(0, limit=10_000_000).splitlines()
                if 'authenticated endpoint-mapper lookup refused' in l and 'port_mapping: preserve' in l]
    assert len(warnings) == 1, warnings


@pytest.mark.timeout_s(60)
def test_replay_signed_alter_context_is_refused_in_pool_mode(replay_gateway):
    skip_without(DCSHADOW)
    before = closed_total(REPLAY_ADMIN, 'replay-pool', 'authenticated_epm')
    convo, server, out = replay_through(POOL_EPM, *SIGNED_IN_ALTER)
    expected = server_frames(convo, server)
    # bind_ack and the unauthenticated not-registered answer pass; the alter_context with NTLM
    # at integrity is rejected here and the connection closed.
    assert out['closed'], out
    assert out['received'][:2] == expected[:2], out
    assert len(out['received']) == 3 and out['received'][2][2] == 15, out
    assert settled(lambda: closed_total(REPLAY_ADMIN, 'replay-pool', 'authenticated_epm'), before + 1) == before + 1


# ------------------------------------------------------------------ (a) replays, transparent

TRANSPARENT_SERVER = '10.95.0.5'
TRANSPARENT_ADMIN = '127.0.0.1:19261'
SERVER_PORTS_LISTEN = 40135


@pytest.fixture
def fake_address():
    sh('ip', 'addr', 'add', TRANSPARENT_SERVER + '/32', 'dev', 'lo', check=False)
    try:
        yield TRANSPARENT_SERVER
    finally:
        sh('ip', 'addr', 'del', TRANSPARENT_SERVER + '/32', 'dev', 'lo', check=False)


def transparent_nft(servers, server_ports):
    nft('''
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "%(veth)s" ip daddr %(servers)s tcp dport 135 counter redirect
    iifname "%(veth)s" ip daddr %(servers)s tcp dport %(ports)s counter redirect to :%(listen)d
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "%(veth)s" counter reject with tcp reset
  }''' % {'veth': VETH_H, 'servers': servers, 'ports': server_ports, 'listen': SERVER_PORTS_LISTEN})


@pytest.mark.timeout_s(90)
def test_replay_signed_lookup_transparent_and_learned_pinholes(client_ns, fake_address, reserved_ports):
    skip_without(ZEROLOGON)
    skip_without(DCSHADOW)
    gw = start('gateway-replay-transparent', (
        '  - name: replay-transparent\n    mode: transparent\n    listen: %s\n    servers: [%s/32]\n'
        '    server_ports: 49660-49670\n    server_ports_listen: %d\n    pinholes: learned\n    policy: dc\n') % (
            HOST_IP, TRANSPARENT_SERVER, SERVER_PORTS_LISTEN), TRANSPARENT_ADMIN)
    try:
        transparent_nft(TRANSPARENT_SERVER, '49660-49670')
        fake = (TRANSPARENT_SERVER, 135)
        for capture, frames in (SIGNED_IN_BIND, SIGNED_IN_ALTER):
            convo, server, out = replay_through(135, capture, frames, host=TRANSPARENT_SERVER, netns=NS, fake=fake)
            assert out['error'] is None and not out['closed'], out
            assert out['received'] == server_frames(convo, server), capture
        # The signed (integrity) reply was readable: its towers opened pinholes for this client.
        # 49667 was named; 49661 never was.
        probe = ('import socket, sys, time\n'
                 's = socket.create_connection((%r, int(sys.argv[1])), timeout=3)\n'
                 's.settimeout(1.5)\n'
                 'try:\n    print("EOF" if s.recv(1) == b"" else "DATA")\n'
                 'except socket.timeout:\n    print("OPEN")\n'
                 'except OSError as e:\n    print("RESET", e)\n') % TRANSPARENT_SERVER
        refused_before = counter(TRANSPARENT_ADMIN, 'rpcgate_connections_refused_total',
                                 route='replay-transparent', reason='no_pinhole')
        learned = sh('ip', 'netns', 'exec', NS, '/usr/bin/python3', '-c', probe, '49667', check=False, timeout=15)
        unknown = sh('ip', 'netns', 'exec', NS, '/usr/bin/python3', '-c', probe, '49661', check=False, timeout=15)
        assert 'OPEN' in learned.stdout, learned.stdout + learned.stderr
        assert 'OPEN' not in unknown.stdout, unknown.stdout + unknown.stderr
        assert counter(TRANSPARENT_ADMIN, 'rpcgate_connections_refused_total', route='replay-transparent',
                       reason='no_pinhole') == refused_before + 1
        assert counter(TRANSPARENT_ADMIN, 'rpcgate_epm_protected_replies_total', route='replay-transparent') >= 2
    finally:
        sh('nft', 'delete', 'table', 'ip', 'rpcgate_modes', check=False)
        gw.stop()


# ------------------------------------------------------------------ (b) impacket against Samba

# The levels the rig offers for an NTLM lookup: Samba answers hept_map at none, packet,
# integrity and privacy (at connect level it faults the call itself, with or without a gateway).
LEVELS = {'none': ri.AUTH_NONE, 'packet': ri.AUTH_PKT, 'integrity': ri.AUTH_INTEGRITY, 'privacy': ri.AUTH_PRIVACY}
# Refused by the pool at the bind (auth level >= packet).
PROTECTED = ['packet', 'integrity', 'privacy']
# Whose requests and replies carry a verifier: impacket signs PDUs at integrity and privacy only
# (at packet level its bind says 4 but no PDU after it carries a sec_trailer).
VERIFIED = ['integrity', 'privacy']
SAMBA_RANGE = (49152, 49160)
PRESERVE_ADMIN = '127.0.0.1:19262'
SAMBA_PRESERVE_EPM = 2135

AUTHENTICATED_CLIENT = r'''
import json, sys
sys.path.insert(0, %r)
import rpcgate_interop as ri
from impacket.dcerpc.v5 import epm
host, epm_port, level = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def lookup(name):
    # An unbound, connected DCERPC_v5 with credentials at `level`: hept_map binds the endpoint
    # mapper on it, so the bind (and the map and its reply) are authenticated.
    dce = ri.connect(host, epm_port, auth_level=level)
    try:
        binding = epm.hept_map(host, ri._iface_bin(name), protocol='ncacn_ip_tcp', dce=dce)
    finally:
        dce.disconnect()
    return int(binding.split('[')[1].rstrip(']'))

out = {name: lookup(name) for name in ('samr', 'lsarpc', 'drsuapi')}
out['samr_domains'] = ri.samr_enumerate_domains(host, out['samr'], auth_level=level)
out['dssetup'] = list(ri.dssetup_primary_domain(host, out['lsarpc'], auth_level=level))
# Samba refuses LsarOpenPolicy2 over TCP at every level (as Windows does anonymously): the bind
# was accepted and the call answered by Samba, which is what the gateway must let through.
try:
    ri.lsarpc_query_domain(host, out['lsarpc'], auth_level=max(level, ri.AUTH_PKT))
    out['lsarpc_call'] = 'answered'
except ri.RPCError as e:
    out['lsarpc_call'] = str(e)
# Samba serves drsuapi at privacy only.
out['drsuapi_ext'] = ri.drsuapi_bind(host, out['drsuapi'], auth_level=ri.AUTH_PRIVACY)
print(json.dumps(out))
''' % LIB


def run_authenticated_client(host, epm_port, level, netns=None):
    argv = ([] if netns is None else ['ip', 'netns', 'exec', netns]) + [
        '/usr/bin/python3', '-c', AUTHENTICATED_CLIENT, host, str(epm_port), str(level)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, 'authenticated client failed:\n%s\n%s' % (r.stdout, r.stderr)
    import json
    return json.loads(r.stdout.strip().splitlines()[-1])


def check_calls(out):
    assert 'EXAMPLE' in out['samr_domains'], out
    assert out['dssetup'][0] == 'EXAMPLE', out
    assert out['lsarpc_call'] == 'answered' or out['lsarpc_call'].startswith('LsarOpenPolicy2: '), out
    assert out['drsuapi_ext'] > 0, out


@pytest.fixture(scope='module')
def preserve_gateway(samba, reserved_ports):
    gw = start('gateway-preserve', (
        '  - name: samba-preserve\n    listen: %s\n    epm_port: %d\n    upstream: %s\n'
        '    ports: %d-%d\n    port_mapping: preserve\n    policy: dc\n') % (
            GATEWAY_HOST, SAMBA_PRESERVE_EPM, SAMBA_HOST, SAMBA_RANGE[0], SAMBA_RANGE[1]), PRESERVE_ADMIN)
    try:
        yield gw
    finally:
        gw.stop()


@pytest.mark.timeout_s(90)
@pytest.mark.parametrize('level', list(LEVELS))
def test_authenticated_lookup_and_calls_in_preserve_mode(preserve_gateway, level):
    before = counter(PRESERVE_ADMIN, 'rpcgate_epm_protected_replies_total', route='samba-preserve')
    out = run_authenticated_client(GATEWAY_HOST, SAMBA_PRESERVE_EPM, LEVELS[level])
    for name in ('samr', 'lsarpc', 'drsuapi'):
        assert SAMBA_RANGE[0] <= out[name] <= SAMBA_RANGE[1], out
    check_calls(out)
    passed = counter(PRESERVE_ADMIN, 'rpcgate_epm_protected_replies_total', route='samba-preserve') - before
    assert passed == (3 if level in VERIFIED else 0), passed


# rpcclient always asks port 135 of the host it is given for the endpoint, even with the port in
# its binding string. The session's pool gateway owns 10.99.0.1:135, so a preserve gateway on 135
# gets a second address of its own on the DC's host-side veth for this test.
PRESERVE_135_HOST = '10.99.0.3'
PRESERVE_135_ADMIN = '127.0.0.1:19264'
SAMBA_VETH_HOST_SIDE = 'rpcg-h'


@pytest.fixture(scope='module')
def preserve_gateway_on_135(samba, reserved_ports):
    sh('ip', 'addr', 'add', PRESERVE_135_HOST + '/32', 'dev', SAMBA_VETH_HOST_SIDE, check=False)
    try:
        gw = start('gateway-preserve-135', (
            '  - name: samba-preserve-135\n    listen: %s\n    epm_port: 135\n    upstream: %s\n'
            '    ports: %d-%d\n    port_mapping: preserve\n    policy: dc\n') % (
                PRESERVE_135_HOST, SAMBA_HOST, SAMBA_RANGE[0], SAMBA_RANGE[1]), PRESERVE_135_ADMIN)
        try:
            yield gw
        finally:
            gw.stop()
    finally:
        sh('ip', 'addr', 'del', PRESERVE_135_HOST + '/32', 'dev', SAMBA_VETH_HOST_SIDE, check=False)


@pytest.mark.timeout_s(90)
@pytest.mark.parametrize('options', ['', 'sign', 'seal'])
def test_rpcclient_through_preserve_mode(preserve_gateway_on_135, options):
    # rpcclient's own (anonymous) lookup on 135 is answered with Samba's port, which the preserve
    # gateway serves as it is; the bind, plain, signed or sealed, and the calls pass unchanged.
    before = counter(PRESERVE_135_ADMIN, 'rpcgate_connections_total', route='samba-preserve-135', listener='mapped')
    r = ri.rpcclient(PRESERVE_135_HOST, 'enumdomains', options, timeout=60)
    assert 'EXAMPLE' in r.stdout, r.stdout
    after = counter(PRESERVE_135_ADMIN, 'rpcgate_connections_total', route='samba-preserve-135', listener='mapped')
    assert after >= before + 1, (before, after)
    with open(preserve_gateway_on_135.log_path) as f:
        assert 'decision=deny' not in f.read()


@pytest.mark.timeout_s(120)
def test_authenticated_lookup_and_calls_in_transparent_mode(client_ns, reserved_ports):
    admin = '127.0.0.1:19263'
    gw = start('gateway-transparent-ports', (
        '  - name: samba-transparent\n    mode: transparent\n    listen: %s\n    servers: [10.99.0.0/24]\n'
        '    server_ports: %d-%d\n    server_ports_listen: %d\n    policy: dc\n') % (
            HOST_IP, SAMBA_RANGE[0], SAMBA_RANGE[1], SERVER_PORTS_LISTEN), admin)
    try:
        transparent_nft('10.99.0.0/24', '%d-%d' % SAMBA_RANGE)
        for level in LEVELS:
            out = run_authenticated_client(SAMBA_HOST, 135, LEVELS[level], netns=NS)
            for name in ('samr', 'lsarpc', 'drsuapi'):
                assert SAMBA_RANGE[0] <= out[name] <= SAMBA_RANGE[1], (level, out)
            check_calls(out)
        # rpcclient (its own anonymous lookup on 135, then the data port) signed and sealed.
        for options in ('sign', 'seal'):
            r = sh('ip', 'netns', 'exec', NS, '/usr/bin/python3', '-c',
                   'import sys; sys.path.insert(0, %r)\nimport rpcgate_interop as ri\n'
                   'print(ri.rpcclient(%r, "enumdomains", %r).stdout)\n' % (LIB, SAMBA_HOST, options),
                   check=False, timeout=90)
            assert 'EXAMPLE' in r.stdout, r.stdout + r.stderr
        # A denied interface (wkssvc, registered by Samba on 49154) never reaches the server:
        # its bind, on a connection redirected to server_ports_listen, is refused by the gateway.
        denied = sh('ip', 'netns', 'exec', NS, '/usr/bin/python3', '-c',
                    'import sys; sys.path.insert(0, %r)\nimport rpcgate_interop as ri\n'
                    'dce = ri.connect(%r, 49154, auth_level=ri.AUTH_PRIVACY)\n'
                    'try:\n    dce.bind(ri._iface_bin("wkssvc"))\n    print("BOUND")\n'
                    'except Exception as e:\n    print("REFUSED", e)\n' % (LIB, SAMBA_HOST), check=False, timeout=30)
        assert 'REFUSED' in denied.stdout, denied.stdout + denied.stderr
        m = Metrics.scrape(admin)
        assert m.value('rpcgate_binds_total', route='samba-transparent', interface='wkssvc', decision='deny') == 1
        # Every data connection came through server_ports_listen (the only data listener).
        assert m.value('rpcgate_connections_total', route='samba-transparent', listener='mapped') >= 4 * len(LEVELS)
        assert m.value('rpcgate_epm_protected_replies_total', route='samba-transparent') == 3 * len(VERIFIED), \
            m.lines('rpcgate_epm_protected_replies_total')
        assert m.value('rpcgate_binds_total', route='samba-transparent', interface='drsuapi', decision='allow') >= 4
    finally:
        sh('nft', 'delete', 'table', 'ip', 'rpcgate_modes', check=False)
        gw.stop()


@pytest.mark.timeout_s(60)
@pytest.mark.parametrize('level', PROTECTED)
def test_authenticated_lookup_is_refused_quickly_in_pool_mode(dc1, level):
    before = closed_total(ADMIN, 'dc1', 'authenticated_epm')
    started = time.monotonic()
    with pytest.raises(Exception):
        dce = ri.connect(dc1.host, dc1.epm_port, auth_level=LEVELS[level])
        try:
            epm.hept_map(dc1.host, ri._iface_bin('samr'), protocol='ncacn_ip_tcp', dce=dce)
        finally:
            dce.disconnect()
    assert time.monotonic() - started < 2.0
    assert settled(lambda: closed_total(ADMIN, 'dc1', 'authenticated_epm'), before + 1) == before + 1
    # An anonymous lookup on the same route still works (rewritten as ever).
    assert dc1.first <= dc1.map('samr') <= dc1.last
