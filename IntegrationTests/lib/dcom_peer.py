"""A DCOM test peer: just enough of a Windows DCOM server (MS-DCOM) for impacket's DCOM client
(`DCOMConnection`, wmiexec-style IWbemLevel1Login -> IWbemServices calls) to run against it.
Samba has no DCOM server; this stands in for one. Stubs are built with impacket's own NDR
structures (impacket.dcerpc.v5.dcomrt, dcom.wmi), so impacket's client parses what it gets.

    peer = DCOMPeer('10.99.0.3', scm_port=135, object_port=50050, announce='10.99.0.3')
    peer.start() ... peer.calls ... peer.stop()

Two listeners:
  * the SCM on `scm_port` (RPCSS's port 135): the endpoint mapper (ept_map answers every
    interface with the object exporter's port, which bind routing needs), IRemoteSCMActivator
    RemoteCreateInstance / RemoteGetClassObject, IObjectExporter ResolveOxid / ResolveOxid2 /
    ServerAlive2 / SimplePing;
  * the object exporter on `object_port`: IRemUnknown2 RemQueryInterface, IWbemLevel1Login
    NTLMLogin (returns an IWbemServices pointer), IWbemServices GetObject (answered
    WBEM_E_NOT_FOUND: harmless) and ExecMethod (answered S_OK if it ever arrives: the test checks
    it never does).

Authentication: NTLM. The peer answers NEGOTIATE with a CHALLENGE and accepts any AUTHENTICATE
without checking it; it derives no keys. Signed requests (integrity: what Windows clients send
since KB5004442, and what impacket uses on object connections) are answered unsigned, without
checking their signature: impacket checks no signature on replies. Sealed requests (privacy) are
answered with a fault (RPC_S_SEC_PKG_ERROR): this peer cannot unseal.

Every call is recorded in `calls` as (listener, interface name, opnum, object uuid). Every socket
has a timeout and every loop is bounded; `stop()` ends everything within about a second.
"""

import socket
import struct
import sys
import threading
import traceback
import uuid as _uuid

from impacket import ntlm
from impacket.dcerpc.v5 import dcomrt
from impacket.dcerpc.v5.dcom import wmi
from impacket.dcerpc.v5.dtypes import NULL
from impacket.uuid import bin_to_string

NDR32 = _uuid.UUID('8a885d04-1ceb-11c9-9fe8-08002b104860').bytes_le + struct.pack('<I', 2)

IFACES = {
    'e1af8308-5d1f-11c9-91a4-08002b14a0fa': 'epmapper',
    '000001a0-0000-0000-c000-000000000046': 'isystemactivator',
    '4d9f4ab8-7d1c-11cf-861e-0020af6e7c57': 'iactivation',
    '99fcfec4-5260-101b-bbcb-00aa0021347a': 'iobjectexporter',
    '00000131-0000-0000-c000-000000000046': 'iremunknown',
    '00000143-0000-0000-c000-000000000046': 'iremunknown2',
    'f309ad18-d86a-11d0-a075-00c04fb68820': 'iwbemlevel1login',
    '9556dc99-828c-11cf-a37e-00aa003240c7': 'iwbemservices',
    '00020400-0000-0000-c000-000000000046': 'idispatch',
}

OXID = 0x0537_7350_7F21_3667
OID = 0x0000_0000_0000_1234
IPID_REMUNKNOWN = _uuid.UUID('0000c000-0530-0000-7d85-2faeeac5c880').bytes_le
IPID_LOGIN = _uuid.UUID('00014006-0530-0000-0333-997691ea98ab').bytes_le
IPID_SERVICES = _uuid.UUID('00014007-0530-0000-0333-997691ea98ab').bytes_le
IPIDS = {bin_to_string(IPID_LOGIN).lower(): 'login', bin_to_string(IPID_SERVICES).lower(): 'services'}

WBEM_E_NOT_FOUND = 0x80041002
E_NOINTERFACE = 0x80004002


def _pdu(ptype, body, call_id, auth=b'', flags=0x03):
    frag_len = 16 + len(body) + len(auth)
    return struct.pack('<BBBB4sHHI', 5, 0, ptype, flags, b'\x10\x00\x00\x00', frag_len,
                       len(auth) - 8 if auth else 0, call_id) + body + auth


def _dual_string_array(addresses, principal='host/dcom-peer'):
    """The 16-bit units of a DUALSTRINGARRAY (MS-DCOM 2.2.19): TCP string bindings, then one NTLM
    security binding; returns (units, security offset)."""
    units = []
    for address in addresses:
        units.append(7)
        units += [ord(c) for c in address] + [0]
    units.append(0)
    offset = len(units)
    units += [10, 0xFFFF] + [ord(c) for c in principal] + [0, 0]
    return units, offset


def _objref_standard(iid, ipid, addresses):
    """OBJREF_STANDARD bytes (MS-DCOM 2.2.18.4) for `iid` at `ipid`, resolver address `addresses`."""
    objref = dcomrt.OBJREF_STANDARD()
    objref['iid'] = iid
    objref['std']['flags'] = 0
    objref['std']['cPublicRefs'] = 5
    objref['std']['oxid'] = OXID
    objref['std']['oid'] = OID
    objref['std']['ipid'] = ipid
    units, offset = _dual_string_array(addresses)
    objref['saResAddr'] = struct.pack('<HH', len(units), offset) + b''.join(struct.pack('<H', u) for u in units)
    return objref.getData()


class DCOMPeer:
    def __init__(self, address, scm_port, object_port, announce, announce_port=None):
        self.address = address
        self.scm_port = scm_port
        self.object_port = object_port
        # What the string bindings say (`HOST[PORT]`): the client connects there next.
        self.announce = announce
        self.announce_port = announce_port or object_port
        self.calls = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self._sockets = []

    # -------------------------------------------------------------- lifecycle

    def start(self):
        for port, role in ((self.scm_port, 'scm'), (self.object_port, 'object')):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.address, port))
            sock.listen(16)
            sock.settimeout(0.2)
            self._sockets.append(sock)
            thread = threading.Thread(target=self._accept, args=(sock, role), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self):
        self._stop.set()
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass
        for thread in self._threads:
            thread.join(timeout=2)

    def record(self, role, iface, opnum, obj):
        with self._lock:
            self.calls.append((role, iface, opnum, obj))

    def _accept(self, sock, role):
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(0.5)
            thread = threading.Thread(target=self._serve, args=(conn, role), daemon=True)
            thread.start()
            self._threads.append(thread)

    # -------------------------------------------------------------- one connection

    def _read_pdu(self, conn):
        data = b''
        while len(data) < 16 and not self._stop.is_set():
            try:
                chunk = conn.recv(16 - len(data))
            except socket.timeout:
                continue
            if not chunk:
                return None
            data += chunk
        if len(data) < 16:
            return None
        frag_len = struct.unpack('<H', data[8:10])[0]
        while len(data) < frag_len and not self._stop.is_set():
            try:
                chunk = conn.recv(frag_len - len(data))
            except socket.timeout:
                continue
            if not chunk:
                return None
            data += chunk
        return data if len(data) == frag_len else None

    def _serve(self, conn, role):
        contexts = {}
        try:
            for _ in range(10000):
                raw = self._read_pdu(conn)
                if raw is None:
                    return
                ptype, flags = raw[2], raw[3]
                frag_len, auth_len, call_id = struct.unpack('<HHI', raw[8:16])
                if ptype in (11, 14):  # bind, alter_context
                    conn.sendall(self._bind_ack(raw, call_id, contexts, alter=(ptype == 14)))
                elif ptype == 16:  # auth3: any AUTHENTICATE is accepted
                    continue
                elif ptype == 0:
                    conn.sendall(self._request(raw, role, contexts, flags, auth_len, call_id))
                else:
                    return
        except OSError:
            return
        finally:
            conn.close()

    def _bind_ack(self, raw, call_id, contexts, alter):
        auth_len = struct.unpack('<H', raw[10:12])[0]
        body = raw[16:len(raw) - (auth_len + 8 if auth_len else 0)]
        n = body[8]
        offset = 12
        results = b''
        for _ in range(n):
            ctx_id, n_transfer = struct.unpack('<HB', body[offset:offset + 3])
            abstract = body[offset + 4:offset + 24]
            transfers = [body[offset + 24 + 20 * i:offset + 44 + 20 * i] for i in range(n_transfer)]
            offset += 24 + 20 * n_transfer
            iface = str(_uuid.UUID(bytes_le=abstract[:16]))
            if NDR32 in transfers and iface in IFACES:
                contexts[ctx_id] = IFACES[iface]
                results += struct.pack('<HH', 0, 0) + NDR32
            else:
                results += struct.pack('<HH', 2, 2) + b'\x00' * 20
        port = b'' if alter else (b'%d\x00' % self.scm_port)
        ack = struct.pack('<HHIH', 4280, 4280, 0x1234, len(port)) + port
        ack += b'\x00' * ((-(16 + len(ack))) % 4)
        ack += struct.pack('<B3x', n) + results
        auth = b''
        if auth_len:
            trailer = raw[len(raw) - auth_len - 8:len(raw) - auth_len]
            auth_type, auth_level = trailer[0], trailer[1]
            token = raw[len(raw) - auth_len:]
            if auth_type == 10 and token[8:12] == b'\x01\x00\x00\x00':  # NTLM NEGOTIATE
                challenge = self._ntlm_challenge(token)
                auth = struct.pack('<BBBBI', auth_type, auth_level, 0, 0, struct.unpack('<I', trailer[4:8])[0]) + challenge
        return _pdu(15 if alter else 12, ack, call_id, auth)

    @staticmethod
    def _ntlm_challenge(negotiate_token):
        """An NTLM CHALLENGE (MS-NLMP 2.2.1.2) as impacket's SMB server builds one."""
        negotiate = ntlm.NTLMAuthNegotiate()
        negotiate.fromString(negotiate_token)
        flags = (ntlm.NTLMSSP_NEGOTIATE_UNICODE | ntlm.NTLMSSP_NEGOTIATE_NTLM | ntlm.NTLMSSP_TARGET_TYPE_SERVER
                 | ntlm.NTLMSSP_NEGOTIATE_TARGET_INFO | ntlm.NTLMSSP_REQUEST_TARGET
                 | (negotiate['flags'] & (ntlm.NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY | ntlm.NTLMSSP_NEGOTIATE_128
                                         | ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH | ntlm.NTLMSSP_NEGOTIATE_56
                                         | ntlm.NTLMSSP_NEGOTIATE_VERSION)))
        domain = 'EXAMPLE'.encode('utf-16le')
        av_pairs = ntlm.AV_PAIRS()
        av_pairs[ntlm.NTLMSSP_AV_HOSTNAME] = 'DCOMPEER'.encode('utf-16le')
        av_pairs[ntlm.NTLMSSP_AV_DOMAINNAME] = domain
        av_pairs[ntlm.NTLMSSP_AV_DNS_HOSTNAME] = 'dcompeer.example.test'.encode('utf-16le')
        av_pairs[ntlm.NTLMSSP_AV_DNS_DOMAINNAME] = 'example.test'.encode('utf-16le')
        info = av_pairs.getData()
        challenge = ntlm.NTLMAuthChallenge()
        challenge['flags'] = flags
        challenge['domain_len'] = len(domain)
        challenge['domain_max_len'] = len(domain)
        challenge['domain_offset'] = 40 + 16
        challenge['challenge'] = b'\x11\x22\x33\x44\x55\x66\x77\x88'
        challenge['domain_name'] = domain
        challenge['TargetInfoFields_len'] = len(info)
        challenge['TargetInfoFields_max_len'] = len(info)
        challenge['TargetInfoFields'] = info
        challenge['TargetInfoFields_offset'] = 40 + 16 + len(domain)
        challenge['Version'] = b'\xff' * 8
        challenge['VersionLen'] = 8
        return challenge.getData()

    # -------------------------------------------------------------- calls

    def _request(self, raw, role, contexts, flags, auth_len, call_id):
        has_object = bool(flags & 0x80)
        _, ctx_id, opnum = struct.unpack('<IHH', raw[16:24])
        start = 24 + (16 if has_object else 0)
        obj = str(_uuid.UUID(bytes_le=raw[24:40])) if has_object else None
        end = len(raw)
        if auth_len:
            pad = raw[len(raw) - auth_len - 6]
            end = len(raw) - auth_len - 8 - pad
        stub = raw[start:end]
        iface = contexts.get(ctx_id, '?')
        self.record(role, iface, opnum, obj)
        if auth_len and raw[len(raw) - auth_len - 7] >= 6:
            sys.stderr.write('dcom_peer: %s %d is sealed; this peer cannot unseal\n' % (iface, opnum))
            return self._fault(call_id, ctx_id, 0x00000721)  # RPC_S_SEC_PKG_ERROR
        handler = getattr(self, '_%s_%d' % (iface, opnum), None)
        if handler is None:
            return self._fault(call_id, ctx_id, 0x1C010002)  # nca_s_op_rng_error
        try:
            out = handler(stub)
        except Exception as error:  # a peer bug: say so, answer with a fault
            sys.stderr.write('dcom_peer: %s %d: %r\n' % (iface, opnum, error))
            traceback.print_exc()
            return self._fault(call_id, ctx_id, 0x000006F7)  # RPC_X_BAD_STUB_DATA
        if isinstance(out, int):
            return self._fault(call_id, ctx_id, out)
        return _pdu(2, struct.pack('<IHBB', len(out), ctx_id, 0, 0) + out, call_id)

    @staticmethod
    def _fault(call_id, ctx_id, status):
        return _pdu(3, struct.pack('<IHBBII', 0, ctx_id, 0, 0, status, 0), call_id, flags=0x23)

    @staticmethod
    def _orpcthat():
        that = dcomrt.ORPCTHAT()
        that['flags'] = 0
        that['extensions'] = NULL
        return that

    # endpoint mapper: every interface is on the object exporter's port
    def _epmapper_3(self, stub):
        # The request's tower starts with the interface floor: 0x13 0x00 (lhs length 19), 0x0d,
        # the UUID and major version, then 0x02 0x00 and the minor version. Echo it.
        at = stub.find(b'\x13\x00\x0d')
        first = (stub[at + 2:at + 21], stub[at + 23:at + 25]) if at >= 0 and len(stub) >= at + 25 else \
            (b'\x0d' + _uuid.UUID('99fcfec4-5260-101b-bbcb-00aa0021347a').bytes_le + b'\x00\x00', b'\x00\x00')
        floors = [
            first,
            (b'\x0d' + NDR32[:16] + b'\x02\x00', b'\x00\x00'),
            (b'\x0b', b'\x00\x00'),
            (b'\x07', struct.pack('>H', self.object_port)),
            (b'\x09', socket.inet_aton(self.address)),
        ]
        tower = struct.pack('<H', len(floors)) + b''.join(
            struct.pack('<H', len(l)) + l + struct.pack('<H', len(r)) + r for l, r in floors)
        out = struct.pack('<I', 0) + b'\x00' * 16 + struct.pack('<I', 1) + struct.pack('<III', 1, 0, 1)
        out += struct.pack('<I', 0x00020000) + struct.pack('<II', len(tower), len(tower)) + tower
        out += b'\x00' * ((-len(out)) % 4)
        return out + struct.pack('<I', 0)

    # IRemoteSCMActivator
    def _isystemactivator_4(self, stub):
        request = dcomrt.RemoteCreateInstance(stub)
        return self._activation_reply(request, dcomrt.RemoteCreateInstanceResponse())

    def _isystemactivator_3(self, stub):
        request = dcomrt.RemoteGetClassObject(stub)
        return self._activation_reply(request, dcomrt.RemoteGetClassObjectResponse())

    def _activation_reply(self, request, response):
        objref = dcomrt.OBJREF_CUSTOM(b''.join(request['pActProperties']['abData']))
        blob = dcomrt.ACTIVATION_BLOB(objref['pObjectData'])
        info = dcomrt.InstantiationInfoData()
        size = info.fromString(blob['Property'])
        info.fromStringReferents(blob['Property'][size:])
        iid = info['pIID'][0]['Data']

        props = dcomrt.PropsOutInfo()
        props['cIfs'] = 1
        piid = dcomrt.IID()
        piid['Data'] = iid
        props['piid'].append(piid)
        result = dcomrt.HRESULT()
        result['Data'] = 0
        props['phresults'].append(result)
        pointer = dcomrt.PMInterfacePointer()
        data = _objref_standard(iid, IPID_LOGIN, [self.announce])
        pointer['ulCntData'] = len(data)
        pointer['abData'] = list(data)
        props['ppIntfData'].append(pointer)

        scm = dcomrt.ScmReplyInfoData()
        scm['pdwReserved'] = 0
        scm['remoteReply']['Oxid'] = OXID
        units, offset = _dual_string_array(['%s[%d]' % (self.announce, self.announce_port)])
        scm['remoteReply']['pdsaOxidBindings']['wNumEntries'] = len(units)
        scm['remoteReply']['pdsaOxidBindings']['wSecurityOffset'] = offset
        scm['remoteReply']['pdsaOxidBindings']['aStringArray'] = units
        scm['remoteReply']['ipidRemUnknown'] = IPID_REMUNKNOWN
        scm['remoteReply']['authnHint'] = 2  # RPC_C_AUTHN_LEVEL_CONNECT
        scm['remoteReply']['serverVersion']['MajorVersion'] = 5
        scm['remoteReply']['serverVersion']['MinorVersion'] = 7

        out_blob = dcomrt.ACTIVATION_BLOB()
        out_blob['CustomHeader']['destCtx'] = 2
        out_blob['CustomHeader']['pdwReserved'] = NULL
        properties = b''
        for clsid_value, prop in ((dcomrt.CLSID_PropsOutInfo, props), (dcomrt.CLSID_ScmReplyInfo, scm)):
            clsid = dcomrt.CLSID()
            clsid['Data'] = clsid_value
            out_blob['CustomHeader']['pclsid'].append(clsid)
            marshaled = prop.getData() + prop.getDataReferents()
            pad = (8 - (len(marshaled) % 8)) % 8
            dword = dcomrt.DWORD()
            dword['Data'] = len(marshaled) + pad
            out_blob['CustomHeader']['pSizes'].append(dword)
            properties += marshaled + b'\xfa' * pad
        out_blob['Property'] = properties
        custom = dcomrt.OBJREF_CUSTOM()
        custom['iid'] = dcomrt.IID_IActivationPropertiesOut[:-4]
        custom['clsid'] = dcomrt.CLSID_ActivationPropertiesOut
        custom['pObjectData'] = out_blob.getData()
        custom['ObjectReferenceSize'] = len(custom['pObjectData']) + 8
        data = custom.getData()
        response['ORPCthat'] = self._orpcthat()
        response['ppActProperties']['ulCntData'] = len(data)
        response['ppActProperties']['abData'] = list(data)
        response['ErrorCode'] = 0
        return response.getData()

    # IObjectExporter
    def _bindings_response(self, response):
        units, offset = _dual_string_array(['%s[%d]' % (self.announce, self.announce_port)])
        response['ppdsaOxidBindings']['wNumEntries'] = len(units)
        response['ppdsaOxidBindings']['wSecurityOffset'] = offset
        response['ppdsaOxidBindings']['aStringArray'] = units
        response['pipidRemUnknown'] = IPID_REMUNKNOWN
        response['pAuthnHint'] = 2
        response['ErrorCode'] = 0
        return response

    def _iobjectexporter_0(self, stub):
        return self._bindings_response(dcomrt.ResolveOxidResponse()).getData()

    def _iobjectexporter_4(self, stub):
        response = self._bindings_response(dcomrt.ResolveOxid2Response())
        response['pComVersion']['MajorVersion'] = 5
        response['pComVersion']['MinorVersion'] = 7
        return response.getData()

    def _iobjectexporter_1(self, stub):
        return struct.pack('<I', 0)  # SimplePing

    def _iobjectexporter_5(self, stub):
        response = dcomrt.ServerAlive2Response()
        response['pComVersion']['MajorVersion'] = 5
        response['pComVersion']['MinorVersion'] = 7
        units, offset = _dual_string_array([self.announce])
        response['ppdsaOrBindings']['wNumEntries'] = len(units)
        response['ppdsaOrBindings']['wSecurityOffset'] = offset
        response['ppdsaOrBindings']['aStringArray'] = units
        response['pReserved'] = NULL
        response['ErrorCode'] = 0
        return response.getData()

    # IRemUnknown(2) RemQueryInterface: the login object answers for IWbemLevel1Login
    def _iremunknown_3(self, stub):
        return self._iremunknown2_3(stub)

    def _iremunknown2_3(self, stub):
        request = dcomrt.RemQueryInterface(stub)
        response = dcomrt.RemQueryInterfaceResponse()
        response['ORPCthat'] = self._orpcthat()
        response['ppQIResults']['hResult'] = 0
        response['ppQIResults']['std']['flags'] = 0
        response['ppQIResults']['std']['cPublicRefs'] = request['cRefs']
        response['ppQIResults']['std']['oxid'] = OXID
        response['ppQIResults']['std']['oid'] = OID
        response['ppQIResults']['std']['ipid'] = IPID_LOGIN
        response['ErrorCode'] = 0
        return response.getData()

    # IWbemLevel1Login NTLMLogin: an IWbemServices pointer
    def _iwbemlevel1login_6(self, stub):
        response = wmi.IWbemLevel1Login_NTLMLoginResponse()
        response['ORPCthat'] = self._orpcthat()
        data = _objref_standard(wmi.IID_IWbemServices, IPID_SERVICES, [self.announce])
        response['ppNamespace']['ulCntData'] = len(data)
        response['ppNamespace']['abData'] = list(data)
        response['ErrorCode'] = 0
        return response.getData()

    # IWbemServices GetObject: harmless, answered "not found"
    def _iwbemservices_6(self, stub):
        return struct.pack('<II', 0, 0) + struct.pack('<III', 0, 0, WBEM_E_NOT_FOUND)

    # IWbemServices ExecMethod: must never arrive through block-remote-exec
    def _iwbemservices_24(self, stub):
        return struct.pack('<II', 0, 0) + struct.pack('<III', 0, 0, 0)
