"""Route modes against the real Samba AD DC: transparent (nftables REDIRECT + SO_ORIGINAL_DST),
single-port, and two rpcgate replicas behind HAProxy with no shared state.

Topology added here (removed at the end of each test):
  client netns rpcg-tc  10.96.0.2/24 (default route via 10.96.0.1)
      <-- veth rpcg-tcc / rpcg-tch -->  root namespace 10.96.0.1/24 (the gateway host)
  server netns rpcg-srv 10.99.0.2 (Samba, from the session fixture), route to 10.96.0.0/24 via 10.99.0.1
Every gateway here listens on 10.96.0.1 or 127.0.0.1x, so the session gateway (10.99.0.1) is untouched.
"""

import json
import os
import subprocess
import time

import pytest

import rpcgate_interop as ri
from gateway import Gateway, Metrics, http_get
from interop_env import SAMBA_HOST

HERE = os.path.dirname(os.path.abspath(__file__))
LIB = os.path.join(HERE, 'lib')
REPO = os.path.dirname(HERE)
OUT = os.environ.get('RPCGATE_INTEROP_OUT') or os.path.join(REPO, 'test-output', 'interop')
BINARY = os.environ.get('RPCGATE_BINARY') or os.path.join(REPO, '.build', 'debug', 'rpcgate')
NS = 'rpcg-tc'
VETH_H, VETH_C = 'rpcg-tch', 'rpcg-tcc'
HOST_IP, CLIENT_IP = '10.96.0.1', '10.96.0.2'
NFT_TABLE = 'rpcgate_modes'

POLICY = ('policies:\n  dc:\n    default: deny\n    rules:\n      - action: allow\n'
          '        interfaces: [samr, lsarpc, netlogon, dssetup]\n')


def sh(*cmd, check=True, timeout=20, input=None):
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True, timeout=timeout, input=input)


# ------------------------------------------------------------------ client namespace + nftables

@pytest.fixture
def client_ns(samba):
    sh('ip', 'netns', 'del', NS, check=False)
    for _ in range(50):  # a veth of a just-deleted namespace goes away asynchronously
        if sh('ip', 'link', 'show', VETH_H, check=False).returncode != 0:
            break
        time.sleep(0.1)
    sh('ip', 'link', 'del', VETH_H, check=False)
    sh('ip', 'netns', 'add', NS)
    try:
        sh('ip', 'link', 'add', VETH_H, 'type', 'veth', 'peer', 'name', VETH_C)
        sh('ip', 'link', 'set', VETH_C, 'netns', NS)
        sh('ip', 'addr', 'add', HOST_IP + '/24', 'dev', VETH_H)
        sh('ip', 'link', 'set', VETH_H, 'up')
        sh('ip', 'netns', 'exec', NS, 'ip', 'addr', 'add', CLIENT_IP + '/24', 'dev', VETH_C)
        sh('ip', 'netns', 'exec', NS, 'ip', 'link', 'set', VETH_C, 'up')
        sh('ip', 'netns', 'exec', NS, 'ip', 'link', 'set', 'lo', 'up')
        sh('ip', 'netns', 'exec', NS, 'ip', 'route', 'add', 'default', 'via', HOST_IP)
        sh('ip', 'netns', 'exec', 'rpcg-srv', 'ip', 'route', 'replace', '10.96.0.0/24', 'via', '10.99.0.1')
        yield NS
    finally:
        sh('nft', 'delete', 'table', 'ip', NFT_TABLE, check=False)
        sh('ip', 'netns', 'exec', 'rpcg-srv', 'ip', 'route', 'del', '10.96.0.0/24', check=False)
        sh('ip', 'netns', 'del', NS, check=False)
        sh('ip', 'link', 'del', VETH_H, check=False)


def nft(rules):
    sh('nft', 'delete', 'table', 'ip', NFT_TABLE, check=False)
    sh('nft', '-f', '-', input='table ip %s {\n%s\n}\n' % (NFT_TABLE, rules))


CLIENT = r'''
import json, sys
sys.path.insert(0, %r)
import rpcgate_interop as ri
host, epm = sys.argv[1], int(sys.argv[2])
out = {}
out['samr_port'] = ri.ept_map(host, epm, *ri.IFACES['samr'])[1]
out['samr'] = ri.samr_enumerate_domains(host, out['samr_port'])
out['netlogon_port'] = ri.ept_map(host, epm, *ri.IFACES['netlogon'])[1]
out['netlogon'] = ri.netlogon_server_challenge(host, out['netlogon_port']).hex()
if epm == 135:
    out['rpcclient'] = ri.rpcclient(host, 'enumdomains', 'sign').stdout
    out['rpcclient_netlogon'] = ri.rpcclient(host, 'dsr_getdcname EXAMPLE.TEST', 'sign').stdout
print(json.dumps(out))
''' % LIB


def run_client(host, epm=135, ns=NS):
    r = sh('ip', 'netns', 'exec', ns, '/usr/bin/python3', '-c', CLIENT, host, str(epm), check=False, timeout=60)
    assert r.returncode == 0, 'client in %s failed:\n%s\n%s' % (ns, r.stdout, r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def start_gateway(name, config, admin):
    gw = Gateway(BINARY, config + POLICY + 'admin:\n  listen: %s\n' % admin, OUT, name=name)

    def ready():
        status, _ = http_get('http://%s/healthz' % admin, timeout=2)
        return status == 200
    return gw.start(ready, deadline_s=20)


# ------------------------------------------------------------------ (a) transparent

@pytest.mark.timeout_s(60)
def test_transparent_gateway(client_ns):
    admin = '127.0.0.1:19240'
    gw = start_gateway('gateway-transparent', (
        'routes:\n  - name: segment-a\n    mode: transparent\n    listen: %s\n'
        '    ports: 50000-50099\n    servers: [10.99.0.0/24]\n    policy: dc\n') % HOST_IP, admin)
    old_forward = sh('sysctl', '-n', 'net.ipv4.ip_forward').stdout.strip()
    try:
        sh('sysctl', '-qw', 'net.ipv4.ip_forward=1')
        nft('''
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "%(veth)s" ip daddr { 10.99.0.0/24, 10.97.0.0/24 } tcp dport { 135, 50000-50099 } counter redirect
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "%(veth)s" counter reject with tcp reset
  }''' % {'veth': VETH_H})
        # The client uses the server's real address; nothing reaches it except through rpcgate.
        out = run_client(SAMBA_HOST)
        assert 50000 <= out['samr_port'] <= 50099, out
        assert 50000 <= out['netlogon_port'] <= 50099, out
        assert 'EXAMPLE' in out['samr'], out
        assert len(out['netlogon']) == 16, out
        assert 'EXAMPLE' in out['rpcclient'], out
        assert 'dc1.example.test' in out['rpcclient_netlogon'], out

        m = Metrics.scrape(admin)
        assert m.value('rpcgate_connections_total', route='segment-a', listener='epm') >= 3, m.lines('rpcgate_connections_total')
        assert m.value('rpcgate_connections_total', route='segment-a', listener='mapped') >= 3, m.lines('rpcgate_connections_total')
        assert m.value('rpcgate_binds_total', route='segment-a', interface='samr', decision='allow') >= 1
        assert m.value('rpcgate_binds_total', route='segment-a', interface='netlogon', decision='allow') >= 1

        # A destination outside `servers` (redirected to the gateway too) is refused, never relayed.
        probe = sh('ip', 'netns', 'exec', NS, '/usr/bin/python3', '-c',
                   'import sys; sys.path.insert(0, %r)\nimport rpcgate_interop as ri\n'
                   'try:\n    ri.ept_map("10.97.0.7", 135, *ri.IFACES["samr"], timeout=3)\n    print("ANSWERED")\n'
                   'except Exception as e:\n    print("REFUSED", e)\n' % LIB, check=False, timeout=30)
        assert 'REFUSED' in probe.stdout, probe.stdout + probe.stderr
        m = Metrics.scrape(admin)
        assert m.value('rpcgate_connections_refused_total', route='segment-a', reason='destination_not_allowed') >= 1, \
            m.lines('rpcgate_connections_refused_total')
    finally:
        sh('nft', 'delete', 'table', 'ip', NFT_TABLE, check=False)
        sh('sysctl', '-qw', 'net.ipv4.ip_forward=%s' % (old_forward or '0'), check=False)
        gw.stop()


# ------------------------------------------------------------------ (b) single port

@pytest.mark.timeout_s(60)
def test_single_port(client_ns):
    admin = '127.0.0.1:19243'
    gw = start_gateway('gateway-single-port', (
        'routes:\n  - name: one-port\n    mode: single-port\n    listen: %s\n    epm_port: 135\n'
        '    port: 50000\n    upstream: %s\n    policy: dc\n') % (HOST_IP, SAMBA_HOST), admin)
    try:
        # Only 135 and the one port are admitted from the client segment.
        nft('''
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "%s" tcp dport { 135, 50000 } accept
    iifname "%s" ip protocol tcp counter reject with tcp reset
  }''' % (VETH_H, VETH_H))
        out = run_client(HOST_IP)
        assert out['samr_port'] == 50000 and out['netlogon_port'] == 50000, out
        assert 'EXAMPLE' in out['samr'] and len(out['netlogon']) == 16 and 'EXAMPLE' in out['rpcclient'], out
        assert 'dc1.example.test' in out['rpcclient_netlogon'], out
        m = Metrics.scrape(admin)
        assert m.value('rpcgate_connections_bind_routed_total', route='one-port') >= 3, m.lines('rpcgate_connections_bind_routed_total')
        # alter_context: to an interface of the same endpoint passes (lsarpc -> dssetup, Samba
        # serves both on one port); to one the mapper places elsewhere is refused (samr -> lsarpc).
        assert ri.bind_then_alter(HOST_IP, 50000, 'lsarpc', 'dssetup'), 'alter_context on the same endpoint refused'
        assert not ri.bind_then_alter(HOST_IP, 50000, 'samr', 'lsarpc'), 'alter_context to another endpoint accepted'
    finally:
        sh('nft', 'delete', 'table', 'ip', NFT_TABLE, check=False)
        gw.stop()


# ------------------------------------------------------------------ (c) replicas behind HAProxy

HAPROXY_CFG = '''global
    maxconn 512
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch
listen rpc
    bind 127.0.0.10:135
    bind 127.0.0.10:50600-50619
    balance roundrobin
    server a 127.0.0.11
    server b 127.0.0.12
'''


def replica(name, address, admin):
    return start_gateway(name, (
        'routes:\n  - name: dc\n    listen: %s\n    advertise: 127.0.0.10\n    upstream: %s\n'
        '    ports: 50600-50619\n    policy: dc\n') % (address, SAMBA_HOST), admin)


@pytest.mark.timeout_s(80)
def test_replicas_behind_haproxy(samba):
    admins = {'a': '127.0.0.1:19241', 'b': '127.0.0.1:19242'}
    gws = {'a': replica('gateway-replica-a', '127.0.0.11', admins['a']),
           'b': replica('gateway-replica-b', '127.0.0.12', admins['b'])}
    cfg = os.path.join(OUT, 'haproxy.cfg')
    with open(cfg, 'w') as f:
        f.write(HAPROXY_CFG)
    log = open(os.path.join(OUT, 'haproxy.log'), 'wb')
    proxy = subprocess.Popen(['haproxy', '-db', '-f', cfg], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # The replicas hand out ports independently: b maps netlogon first, so its port numbers
        # differ from a's (shared nothing).
        ri.ept_map('127.0.0.12', 135, *ri.IFACES['netlogon'])
        ri.wait_for_epm('127.0.0.10', 135, deadline_s=10)
        for _ in range(4):
            port = ri.ept_map('127.0.0.10', 135, *ri.IFACES['samr'])[1]
            assert 50600 <= port <= 50619
            assert 'EXAMPLE' in ri.samr_enumerate_domains('127.0.0.10', port)
        routed = sum(Metrics.scrape(a).value('rpcgate_connections_bind_routed_total', route='dc') for a in admins.values())
        assert routed >= 1, 'no data connection reached the instance that did not answer its lookup'

        # Restart one instance between the lookup and the connection; the client retries.
        port = ri.ept_map('127.0.0.10', 135, *ri.IFACES['netlogon'])[1]
        gws['a'].stop()
        gws['a'] = replica('gateway-replica-a', '127.0.0.11', admins['a'])
        last = None
        for _ in range(3):
            try:
                assert len(ri.netlogon_server_challenge('127.0.0.10', port)) == 8
                break
            except Exception as e:  # retried, as a client would
                last = e
                time.sleep(0.5)
        else:
            raise AssertionError('no retry succeeded after the restart: %r' % (last,))
    finally:
        proxy.terminate()
        try:
            proxy.wait(10)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait(5)
        log.close()
        for gw in gws.values():
            gw.stop()


# ------------------------------------------------------------------ (b') one port for everything

@pytest.mark.timeout_s(40)
def test_single_port_equal_to_epm_port(samba):
    """port == epm_port: a first bind to the endpoint mapper makes an EPM connection, any other
    interface is routed by its bind; rpcclient (always 135) and impacket need only TCP 135."""
    admin = '127.0.0.1:19244'
    host = '127.0.0.20'
    gw = start_gateway('gateway-one-port-135', (
        'routes:\n  - name: only-135\n    mode: single-port\n    listen: %s\n    epm_port: 135\n'
        '    port: 135\n    upstream: %s\n    policy: dc\n') % (host, SAMBA_HOST), admin)
    try:
        assert ri.ept_map(host, 135, *ri.IFACES['samr'])[1] == 135
        assert ri.ept_map(host, 135, *ri.IFACES['netlogon'])[1] == 135
        assert 'EXAMPLE' in ri.samr_enumerate_domains(host, 135)
        assert len(ri.netlogon_server_challenge(host, 135)) == 8
        assert 'EXAMPLE' in ri.rpcclient(host, 'enumdomains', 'sign').stdout
        # drsuapi is not in the policy: refused locally, before any upstream connection.
        with pytest.raises(ri.RPCError):
            ri.drsuapi_bind(host, 135, ri.AUTH_NONE)
        m = Metrics.scrape(admin)
        assert m.value('rpcgate_binds_total', route='only-135', interface='drsuapi', decision='deny') >= 1
        assert m.value('rpcgate_connections_bind_routed_total', route='only-135') >= 3
    finally:
        gw.stop()
