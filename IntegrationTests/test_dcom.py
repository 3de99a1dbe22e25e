"""DCOM and WMI through a transparent gateway: impacket's DCOM client (`DCOMConnection`, the
wmiexec sequence IWbemLevel1Login -> NTLMLogin -> IWbemServices) against the DCOM test peer
(lib/dcom_peer.py), with `block-remote-exec`.

Topology: the client namespace of test_modes.py (rpcg-tc, 10.96.0.2, routed through the gateway
host 10.96.0.1); the peer on a second address of the server namespace, 10.99.0.3 (Samba keeps
10.99.0.2:135). nftables redirects the client's TCP 135 and the object exporter's port towards
10.99.0.0/24 to rpcgate. The object exporter listens on a port of the route's `ports` range, so
the existing transparent mode routes its connection by the first bind (the peer's endpoint mapper
places every interface there). When the gateway supports `server_ports` (transparent mode for the
servers' own RPC range, `server_ports_listen`), the route uses it instead, with `pinholes: learned`:
the peer announces 49670, and only the pinhole the readable activation reply opened admits the
client's connection there.

What is checked: activation (RemoteCreateInstance of WbemLevel1Login), RemQueryInterface (impacket
sends it on IRemUnknown; IRemUnknown2 derives from it), IWbemLevel1Login NTLMLogin and a harmless IWbemServices call (GetObject,
answered "not found" by the peer) pass; ExecMethod (Win32_Process.Create) and an MMC20.Application
activation are refused by the gateway and never reach the peer; a sealed activation (impacket's
default level) cannot be read and is audited, not refused; the audit log carries the CLSID, the
OXID and the announced port, `sealed`, and the IPID of the refused call.
"""

import json
import os
import subprocess
import sys
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
LIB = os.path.join(HERE, 'lib')
sys.path.insert(0, LIB)

from dcom_peer import IPID_SERVICES, OXID  # noqa: E402
from gateway import Metrics  # noqa: E402
from test_modes import HOST_IP, NS, OUT, BINARY, VETH_H, client_ns, nft, sh  # noqa: E402,F401

PEER_IP = '10.99.0.3'
SERVER_VETH = 'rpcg-s'
RANGE = (50000, 50099)
OBJECT_PORT_IN_RANGE = 50050
OBJECT_PORT_SERVER_RANGE = 49670
SERVER_PORTS = '49660-49680'
SERVER_PORTS_LISTEN = 40136

POLICY = '''policies:
  dcom:
    default: deny
    rules:
      - profile: block-remote-exec
      - action: allow
        interfaces: [isystemactivator, iobjectexporter, iremunknown, iremunknown2, iwbemlevel1login, iwbemservices]
'''

CLIENT = r'''
import json, sys
from impacket.dcerpc.v5.dcomrt import DCOMConnection
from impacket.dcerpc.v5.dcom import wmi
from impacket.dcerpc.v5.dtypes import NULL
from impacket.dcerpc.v5.rpcrt import RPC_C_AUTHN_LEVEL_PKT_INTEGRITY, RPC_C_AUTHN_LEVEL_PKT_PRIVACY
from impacket.uuid import string_to_bin

host = sys.argv[1]
out = {}
def attempt(name, fn):
    try:
        out[name] = ['ok', fn()]
    except Exception as e:
        out[name] = ['error', str(e)]

dcom = DCOMConnection(host, 'Administrator', 'Passw0rd-interop', 'EXAMPLE', authLevel=RPC_C_AUTHN_LEVEL_PKT_INTEGRITY,
                      oxidResolver=False)
try:
    iface = dcom.CoCreateInstanceEx(wmi.CLSID_WbemLevel1Login, wmi.IID_IWbemLevel1Login)
    out['activation'] = ['ok', None]
    attempt('remqueryinterface', lambda: bool(iface.RemQueryInterface(1, [wmi.IID_IWbemLevel1Login])))
    login = wmi.IWbemLevel1Login(iface)
    holder = {}
    def ntlm_login():
        holder['services'] = login.NTLMLogin('//./root/cimv2', NULL, NULL)
        return True
    attempt('ntlmlogin', ntlm_login)
    services = holder.get('services')
    def get_object():
        services.GetObject('Win32_Process')
        return True
    attempt('getobject', get_object)
    def exec_method():
        request = wmi.IWbemServices_ExecMethod()
        request['strObjectPath']['asData'] = 'Win32_Process'
        request['strMethodName']['asData'] = 'Create'
        request['lFlags'] = 0
        request['pCtx'] = NULL
        request['pInParams'] = NULL
        request.fields['ppCallResult'] = NULL
        request.fields['ppOutParams'].fields['Data'] = NULL
        services.request(request, iid=services._iid, uuid=services.get_iPid())
        return True
    attempt('execmethod', exec_method)
    # dcomexec's first choice: MMC20.Application, asked for IDispatch.
    attempt('mmc20', lambda: bool(dcom.CoCreateInstanceEx(string_to_bin('49B2791A-B1AE-4C90-9B8E-E860BA07F889'),
                                                           string_to_bin('00020400-0000-0000-C000-000000000046'))))
except Exception as e:
    out.setdefault('activation', ['error', str(e)])
finally:
    try:
        dcom.disconnect()
    except Exception:
        pass
# impacket's default: sealed. The gateway cannot read the CLSID; block-remote-exec audits it and
# lets it through (the peer, which cannot unseal, answers with a fault).
sealed = DCOMConnection(host, 'Administrator', 'Passw0rd-interop', 'EXAMPLE', authLevel=RPC_C_AUTHN_LEVEL_PKT_PRIVACY,
                        oxidResolver=False)
try:
    attempt('sealed', lambda: bool(sealed.CoCreateInstanceEx(string_to_bin('49B2791A-B1AE-4C90-9B8E-E860BA07F889'),
                                                             string_to_bin('00020400-0000-0000-C000-000000000046'))))
finally:
    try:
        sealed.disconnect()
    except Exception:
        pass
print(json.dumps(out))
'''


def supports_server_ports():
    """Whether this rpcgate accepts `server_ports` on a transparent route (issue 18, item 2)."""
    config = os.path.join(OUT, 'dcom-probe.yaml')
    with open(config, 'w') as f:
        f.write(transparent_route(True) + POLICY)
    r = subprocess.run([BINARY, 'check-config', config], capture_output=True, text=True, timeout=30)
    return r.returncode == 0


def transparent_route(server_ports):
    """The route: with `server_ports`, the servers' range goes to one listener and only the ports a
    readable reply named to the client are admitted (`pinholes: learned`, fed by the DCOM replies);
    without, the gateway range `ports` routed by the first bind."""
    route = ('routes:\n  - name: dcom\n    mode: transparent\n    listen: %s\n    servers: [10.99.0.0/24]\n'
             '    policy: dcom\n') % HOST_IP
    if server_ports:
        return route + '    server_ports: %s\n    server_ports_listen: %d\n    pinholes: learned\n' % (
            SERVER_PORTS, SERVER_PORTS_LISTEN)
    return route + '    ports: %d-%d\n' % RANGE


def audit_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.timeout_s(90)
def test_dcom_wmi_through_transparent_gateway(client_ns):
    from gateway import Gateway, http_get

    os.makedirs(OUT, exist_ok=True)
    server_ports = supports_server_ports()
    object_port = OBJECT_PORT_SERVER_RANGE if server_ports else OBJECT_PORT_IN_RANGE
    admin = '127.0.0.1:19250'
    audit = os.path.join(OUT, 'dcom-audit.jsonl')
    if os.path.exists(audit):
        os.unlink(audit)
    route = transparent_route(server_ports)
    redirected = '135, %d-%d' % RANGE
    config = route + POLICY + 'audit:\n  file: %s\n' % audit + 'admin:\n  listen: %s\n' % admin
    gw = Gateway(BINARY, config, OUT, name='gateway-dcom')

    def ready():
        status, _ = http_get('http://%s/healthz' % admin, timeout=2)
        return status == 200
    gw = gw.start(ready, deadline_s=20)
    sh('ip', 'netns', 'exec', 'rpcg-srv', 'ip', 'addr', 'add', PEER_IP + '/24', 'dev', SERVER_VETH, check=False)
    peer = None
    old_forward = sh('sysctl', '-n', 'net.ipv4.ip_forward').stdout.strip()
    try:
        peer = subprocess.Popen(
            ['ip', 'netns', 'exec', 'rpcg-srv', '/usr/bin/python3', '-c',
             'import sys, time, json; sys.path.insert(0, %r)\n'
             'from dcom_peer import DCOMPeer\n'
             'p = DCOMPeer(%r, 135, %d, %r).start()\n'
             'print("ready", flush=True)\n'
             'sys.stdin.readline()\n'
             'p.stop()\n'
             'print(json.dumps(p.calls), flush=True)\n' % (LIB, PEER_IP, object_port, PEER_IP)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert peer.stdout.readline().strip() == 'ready', peer.stderr.read()
        sh('sysctl', '-qw', 'net.ipv4.ip_forward=1')
        # Transparent server_ports: the servers' own RPC range goes to the one listener
        # (`redirect to :server_ports_listen`); otherwise the gateway range, port for port.
        extra = ''
        if server_ports:
            extra = '\n    iifname "%s" ip daddr 10.99.0.0/24 tcp dport %s counter redirect to :%d' % (
                VETH_H, SERVER_PORTS, SERVER_PORTS_LISTEN)
        nft('''
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "%(veth)s" ip daddr 10.99.0.0/24 tcp dport { %(ports)s } counter redirect%(extra)s
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "%(veth)s" counter reject with tcp reset
  }''' % {'veth': VETH_H, 'ports': '135' if server_ports else redirected, 'extra': extra})
        r = sh('ip', 'netns', 'exec', NS, '/usr/bin/python3', '-c', CLIENT, PEER_IP, check=False, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        out = json.loads(r.stdout.strip().splitlines()[-1])

        peer.stdin.write('\n')
        peer.stdin.flush()
        peer_out, peer_err = peer.communicate(timeout=10)
        calls = json.loads(peer_out.strip().splitlines()[-1])
        summary = 'client %s\npeer calls %s\n%s' % (out, calls, peer_err[-2000:])

        assert out['activation'] == ['ok', None], summary
        assert out['remqueryinterface'][0] == 'ok', summary
        assert out['ntlmlogin'][0] == 'ok', summary
        # GetObject reached the peer and came back with its answer (not found), not the gateway's.
        assert 'WBEM_E_NOT_FOUND' in out['getobject'][1] or out['getobject'][0] == 'ok', summary
        assert out['execmethod'][0] == 'error' and 'access_denied' in out['execmethod'][1].lower(), summary
        assert out['mmc20'][0] == 'error' and 'access_denied' in out['mmc20'][1].lower(), summary
        seen = [(c[1], c[2]) for c in calls]
        assert ('isystemactivator', 4) in seen, summary
        # impacket's RemQueryInterface goes to IRemUnknown (IRemUnknown2 derives from it).
        assert ('iremunknown', 3) in seen or ('iremunknown2', 3) in seen, summary
        assert ('iwbemlevel1login', 6) in seen, summary
        assert ('iwbemservices', 6) in seen, summary
        assert ('iwbemservices', 24) not in seen, summary
        # The readable MMC20 activation never reached the peer; the sealed one did (audited).
        assert sum(1 for c in calls if c[1] == 'isystemactivator') == 2, summary
        assert out['sealed'][0] == 'error' and '00000721' in out['sealed'][1], summary

        lines = audit_lines(audit)
        activations = [l for l in lines if l['event.action'] == 'activation']
        assert any(l.get('rpc.dcom.class') == 'wbemlevel1login' and l['rpc.decision'] == 'allow' for l in activations), activations
        mmc = [l for l in activations if l.get('rpc.dcom.class') == 'mmc20.application']
        assert mmc and mmc[0]['rpc.decision'] == 'deny' and mmc[0]['rule.category'] == 'block-remote-exec', activations
        assert mmc[0]['threat.technique.subtechnique.id'] == ['T1021.003'], mmc
        sealed = [l for l in activations if l.get('rpc.dcom.sealed') is True]
        assert len(sealed) == 1 and sealed[0]['rpc.dcom.clsid'] == 'sealed', activations
        assert sealed[0]['rpc.decision'] == 'audit' and sealed[0]['rule.category'] == 'block-remote-exec', sealed
        assert sealed[0]['rpc.auth_level'] == 'privacy', sealed
        replies = [l for l in lines if l['event.action'] == 'activation_reply']
        assert replies and replies[0]['rpc.dcom.oxid'] == '0x%016x' % OXID, replies
        assert replies[0]['rpc.dcom.ports'] == [object_port], replies
        assert replies[0].get('rpc.dcom.class') == 'wbemlevel1login', replies
        denied = [l for l in lines if l['event.action'] == 'call' and l.get('rpc.opnum') == 24]
        ipid = str(uuid.UUID(bytes_le=IPID_SERVICES))  # the peer's IWbemServices object
        assert denied and denied[0]['rpc.dcom.ipid'] == [ipid] and denied[0]['rpc.interface'] == 'iwbemservices', denied

        m = Metrics.scrape(admin)
        assert m.value('rpcgate_dcom_activations_total', route='dcom', decision='allow', clsid='read') >= 1, \
            m.lines('rpcgate_dcom_activations_total')
        assert m.value('rpcgate_dcom_activations_total', route='dcom', decision='deny', clsid='read') >= 1
        assert m.value('rpcgate_dcom_activations_total', route='dcom', decision='audit', clsid='sealed') >= 1
        assert m.value('rpcgate_dcom_ports_announced_total', route='dcom') >= 1
        if server_ports:
            # The object exporter's connection was admitted by the pinhole the activation reply
            # opened (pinholes: learned), not refused.
            assert (m.value('rpcgate_connections_refused_total', route='dcom', reason='no_pinhole') or 0) == 0, \
                m.lines('rpcgate_connections_refused_total')
    finally:
        if peer is not None and peer.poll() is None:
            peer.kill()
            peer.wait(timeout=5)
        sh('nft', 'delete', 'table', 'ip', 'rpcgate_modes', check=False)
        sh('sysctl', '-qw', 'net.ipv4.ip_forward=%s' % (old_forward or '0'), check=False)
        sh('ip', 'netns', 'exec', 'rpcg-srv', 'ip', 'addr', 'del', PEER_IP + '/24', 'dev', SERVER_VETH, check=False)
        gw.stop()
