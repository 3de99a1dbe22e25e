"""drsuapi (MS-DRSR) on one impacket connection, step by step, for opnum-level policy tests.

    s = DRSSession(host, port)            # NTLM Administrator, PKT_PRIVACY (drsuapi needs it)
    s.bind()                              # rpc bind + IDL_DRSBind (opnum 0)
    s.dc_info()                           # IDL_DRSDomainControllerInfo (opnum 16), level 2
    s.get_nc_changes()                    # IDL_DRSGetNCChanges (opnum 3): the domain NC head only
    s.crack_names()                       # IDL_DRSCrackNames (opnum 12)
    s.close()

Every network operation is bounded by `timeout` (socket timeout of connect and each receive).

IDL_DRSGetNCChanges is the DCSync call. The request built here is the one impacket's
secretsdump (RemoteOperations.DRSGetNCChanges) sends, V8 with EXOP_REPL_OBJ and
cMaxObjects 1, with two differences that keep secrets out of the test: the object is the
domain NC head itself (named by its DN, not a user's GUID) and there is no partial attribute set
of password attributes.

Also a runner for another network namespace (a client at another source address):

    ip netns exec rpcg-cli /usr/bin/python3 drs_session.py --host 10.99.0.1 --epm-port 2135 \
        --steps bind,dc_info,get_nc_changes,dc_info

prints one JSON object: {"port": P, "steps": [{"step", "ok", "elapsed_s", "result" | "error",
"error_class", "error_code"}, ...]}. A step that fails does not stop the following ones (that
is the point of "the connection stays usable"); a step needing DRSBind's handle after a failed
bind fails on its own.
"""

import json
import os
import sys
import time

try:
    import impacket  # noqa: F401
except ImportError:  # pragma: no cover - depends on the interpreter used
    sys.path.append('/usr/lib/python3/dist-packages')

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from impacket.dcerpc.v5 import drsuapi, transport, epm  # noqa: E402
from impacket.dcerpc.v5.dtypes import NULL  # noqa: E402
from impacket.dcerpc.v5.rpcrt import RPC_C_AUTHN_LEVEL_PKT_PRIVACY  # noqa: E402
from impacket.uuid import uuidtup_to_bin  # noqa: E402

DRSUAPI = ('e3514235-4b06-11d1-ab04-00c04fc2dcd2', '4.0')
OPNUM = {'bind': 0, 'get_nc_changes': 3, 'crack_names': 12, 'dc_info': 16}

DEFAULT_USER = 'Administrator'
DEFAULT_PASSWORD = 'Passw0rd!Test'
DEFAULT_DOMAIN = 'EXAMPLE'
DEFAULT_DNS_DOMAIN = 'example.test'
DEFAULT_TIMEOUT = 10


def domain_dn(dns_domain):
    return ','.join('DC=%s' % p for p in dns_domain.split('.'))


def ept_map_port(host, epm_port, timeout=DEFAULT_TIMEOUT):
    """drsuapi's port as the endpoint mapper at host:epm_port tells it (anonymous ept_map)."""
    t = transport.DCERPCTransportFactory('ncacn_ip_tcp:%s[%d]' % (host, int(epm_port)))
    t.set_connect_timeout(timeout)
    dce = t.get_dce_rpc()
    dce.connect()
    try:
        binding = epm.hept_map(host, uuidtup_to_bin(DRSUAPI), protocol='ncacn_ip_tcp', dce=dce)
    finally:
        dce.disconnect()
    return int(binding.rsplit('[', 1)[1].rstrip(']'))


def _fail_on_eof(t):
    """impacket 0.10's TCPTransport.recv(count=N) loops for ever once the peer has closed
    (socket.recv returns b'' and it keeps asking). Make end of stream an error instead."""
    def recv(forceRecv=0, count=0):
        sock = t.get_socket()
        if not count:
            data = sock.recv(8192)
            if not data:
                raise ConnectionError('connection closed by the peer')
            return data
        buf = b''
        while len(buf) < count:
            chunk = sock.recv(count - len(buf))
            if not chunk:
                raise ConnectionError('connection closed by the peer (%d of %d bytes received)' % (len(buf), count))
            buf += chunk
        return buf
    t.recv = recv


class DRSSession:
    """One ncacn_ip_tcp connection bound to drsuapi v4.0 (NTLM, privacy by default)."""

    def __init__(self, host, port, user=DEFAULT_USER, password=DEFAULT_PASSWORD, domain=DEFAULT_DOMAIN,
                 dns_domain=DEFAULT_DNS_DOMAIN, auth_level=RPC_C_AUTHN_LEVEL_PKT_PRIVACY, timeout=DEFAULT_TIMEOUT):
        self.host, self.port = host, int(port)
        self.dns_domain = dns_domain
        t = transport.DCERPCTransportFactory('ncacn_ip_tcp:%s[%d]' % (host, self.port))
        t.set_connect_timeout(timeout)   # also each receive's timeout
        t.set_credentials(user, password, domain)
        self.dce = t.get_dce_rpc()
        self.dce.set_auth_level(auth_level)
        self.dce.connect()
        _fail_on_eof(t)
        self.hdrs = None
        self.dsa_guid = None

    def local_address(self):
        """(ip, port) of this connection's client side."""
        return self.dce.get_rpc_transport().get_socket().getsockname()

    def bind(self):
        """RPC bind to drsuapi, then IDL_DRSBind (opnum 0). Returns the server extension length."""
        self.dce.bind(uuidtup_to_bin(DRSUAPI))
        req = drsuapi.DRSBind()
        req['puuidClientDsa'] = drsuapi.NTDSAPI_CLIENT_GUID
        ext = drsuapi.DRS_EXTENSIONS_INT()
        ext['cb'] = len(ext)
        ext['dwFlags'] = (drsuapi.DRS_EXT_GETCHGREQ_V6 | drsuapi.DRS_EXT_GETCHGREPLY_V6
                          | drsuapi.DRS_EXT_GETCHGREQ_V8 | drsuapi.DRS_EXT_STRONG_ENCRYPTION)
        ext['SiteObjGuid'] = drsuapi.NULLGUID
        ext['Pid'] = 0
        ext['dwReplEpoch'] = 0
        ext['dwFlagsExt'] = 0
        ext['ConfigObjGUID'] = drsuapi.NULLGUID
        ext['dwExtCaps'] = 0xffffffff
        req['pextClient']['cb'] = len(ext)
        req['pextClient']['rgb'] = list(ext.getData())
        resp = self.dce.request(req)
        self.hdrs = resp['phDrs']
        return resp['ppextServer']['cb']

    def dc_info(self):
        """IDL_DRSDomainControllerInfo (opnum 16), info level 2. Returns
        {'count', 'netbios_name', 'dns_host_name', 'ntds_dsa_guid' (hex of the wire bytes)} and
        remembers the DSA GUID for get_nc_changes."""
        resp = drsuapi.hDRSDomainControllerInfo(self.dce, self.hdrs, self.dns_domain, 2)
        v2 = resp['pmsgOut']['V2']
        out = {'count': v2['cItems']}
        if v2['cItems'] > 0:
            item = v2['rItems'][0]
            self.dsa_guid = item['NtdsDsaObjectGuid']
            out.update(netbios_name=str(item['NetbiosName']).rstrip('\x00'),
                       dns_host_name=str(item['DnsHostName']).rstrip('\x00'),
                       ntds_dsa_guid=bytes(self.dsa_guid).hex())
        return out

    def crack_names(self, name=None):
        """IDL_DRSCrackNames (opnum 12): NT4 account name -> DN. Returns [(status, name)]."""
        name = name or '%s\\' % DEFAULT_DOMAIN
        resp = drsuapi.hDRSCrackNames(self.dce, self.hdrs, 0, drsuapi.DS_NAME_FORMAT.DS_NT4_ACCOUNT_NAME,
                                      drsuapi.DS_NAME_FORMAT.DS_FQDN_1779_NAME, (name,))
        items = resp['pmsgOut']['V1']['pResult']['rItems']
        return [(i['status'], str(i['pName']).rstrip('\x00') if i['pName'] != NULL else None) for i in items]

    def get_nc_changes(self):
        """IDL_DRSGetNCChanges (opnum 3), V8, EXOP_REPL_OBJ for the domain NC head, at most one
        object. Returns {'out_version', 'objects'} (whatever the server answers; it raises
        DCERPCException for a fault)."""
        if self.dsa_guid is None:
            self.dc_info()
        dn = domain_dn(self.dns_domain)
        req = drsuapi.DRSGetNCChanges()
        req['hDrs'] = self.hdrs
        req['dwInVersion'] = 8
        req['pmsgIn']['tag'] = 8
        v8 = req['pmsgIn']['V8']
        v8['uuidDsaObjDest'] = self.dsa_guid
        v8['uuidInvocIdSrc'] = self.dsa_guid
        ds = drsuapi.DSNAME()
        ds['SidLen'] = 0
        ds['Guid'] = drsuapi.NULLGUID
        ds['Sid'] = ''
        ds['NameLen'] = len(dn)
        ds['StringName'] = dn + '\x00'
        ds['structLen'] = len(ds.getData())
        v8['pNC'] = ds
        v8['usnvecFrom']['usnHighObjUpdate'] = 0
        v8['usnvecFrom']['usnHighPropUpdate'] = 0
        v8['pUpToDateVecDest'] = NULL
        v8['ulFlags'] = drsuapi.DRS_INIT_SYNC | drsuapi.DRS_WRIT_REP
        v8['cMaxObjects'] = 1
        v8['cMaxBytes'] = 0
        v8['ulExtendedOp'] = drsuapi.EXOP_REPL_OBJ
        v8['pPartialAttrSet'] = NULL
        v8['pPartialAttrSetEx1'] = NULL
        v8['PrefixTableDest']['PrefixCount'] = 0
        v8['PrefixTableDest']['pPrefixEntry'] = NULL
        resp = self.dce.request(req)
        out = {'out_version': resp['pdwOutVersion']}
        try:
            out['objects'] = resp['pmsgOut']['V%d' % resp['pdwOutVersion']]['cNumObjects']
        except Exception:  # another reply version: the count does not matter to the tests
            out['objects'] = None
        return out

    def close(self):
        try:
            self.dce.disconnect()
        except Exception:
            pass


def error_info(e):
    """(class name, code or None, text) of an impacket exception."""
    return type(e).__name__, getattr(e, 'error_code', None), str(e)


def run_steps(host, port, steps, timeout=DEFAULT_TIMEOUT, **cred):
    """Open one DRSSession and run `steps` (names of its methods) in order; never raises.
    Returns the JSON-able result described in the module docstring."""
    out = {'port': port, 'steps': []}
    try:
        s = DRSSession(host, port, timeout=timeout, **cred)
    except Exception as e:
        cls, code, text = error_info(e)
        out['steps'].append({'step': 'connect', 'ok': False, 'error': text, 'error_class': cls, 'error_code': code})
        return out
    try:
        out['local'] = list(s.local_address())
        for step in steps:
            t0 = time.monotonic()
            rec = {'step': step, 'opnum': OPNUM.get(step)}
            try:
                rec['result'] = getattr(s, step)()
                rec['ok'] = True
            except Exception as e:
                cls, code, text = error_info(e)
                rec.update(ok=False, error=text, error_class=cls, error_code=code)
            rec['elapsed_s'] = round(time.monotonic() - t0, 3)
            out['steps'].append(rec)
    finally:
        s.close()
    return out


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--host', required=True)
    p.add_argument('--port', type=int, help='drsuapi port (else ask the EPM at --epm-port)')
    p.add_argument('--epm-port', type=int, default=135)
    p.add_argument('--steps', default='bind,dc_info,get_nc_changes,dc_info')
    p.add_argument('--timeout', type=float, default=DEFAULT_TIMEOUT)
    a = p.parse_args(argv)
    try:
        port = a.port or ept_map_port(a.host, a.epm_port, a.timeout)
    except Exception as e:
        cls, code, text = error_info(e)
        print(json.dumps({'port': None, 'steps': [{'step': 'ept_map', 'ok': False, 'error': text,
                                                   'error_class': cls, 'error_code': code}]}))
        return 0
    print(json.dumps(run_steps(a.host, port, [s for s in a.steps.split(',') if s], timeout=a.timeout)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
