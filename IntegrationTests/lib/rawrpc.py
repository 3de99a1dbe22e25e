"""Minimal raw DCE/RPC connection-oriented PDUs (C706 ch. 12) for tests that must send
what no well-behaved client sends (a request on a context that was never accepted)
or must see the exact bytes a peer answers.

Little-endian NDR, no authentication. Every socket operation is bounded by a timeout.
"""

import socket
import struct
import time
import uuid as _uuid

PTYPE_REQUEST = 0
PTYPE_RESPONSE = 2
PTYPE_FAULT = 3
PTYPE_BIND = 11
PTYPE_BIND_ACK = 12
PTYPE_BIND_NAK = 13
PTYPE_ALTER_CONTEXT = 14
PTYPE_ALTER_CONTEXT_RESP = 15

PFC_FIRST_FRAG = 0x01
PFC_LAST_FRAG = 0x02

NDR32 = ('8a885d04-1ceb-11c9-9fe8-08002b104860', 2, 0)

# fault status codes (C706 appendix E, MS-RPCE 2.2.2.11)
NCA_S_INVALID_PRES_CONTEXT_ID = 0x1C00001C
NCA_S_UNK_IF = 0x1C010003


def syntax_id(uuid, major, minor=0):
    """p_syntax_id_t: uuid (little-endian wire order) + u16 major + u16 minor."""
    return _uuid.UUID(uuid).bytes_le + struct.pack('<HH', major, minor)


def uuid_wire_bytes(uuid):
    """The 16 bytes a uuid occupies on the wire in a little-endian PDU."""
    return _uuid.UUID(uuid).bytes_le


def _header(ptype, body_len, call_id, flags=PFC_FIRST_FRAG | PFC_LAST_FRAG, auth_len=0):
    # rpc_vers 5, minor 0, ptype, flags, drep little-endian/ASCII/IEEE, frag_length, auth_length, call_id
    return struct.pack('<BBBB4sHHI', 5, 0, ptype, flags, b'\x10\x00\x00\x00', 16 + body_len, auth_len, call_id)


def bind_pdu(call_id, contexts, alter=False, max_xmit=4280, max_recv=4280, assoc_group=0):
    """A bind (or alter_context) offering `contexts`: list of (context_id, uuid, major, minor),
    each with NDR32 as the only transfer syntax."""
    body = struct.pack('<HHI', max_xmit, max_recv, assoc_group)
    body += struct.pack('<B3x', len(contexts))
    for ctx_id, uuid, major, minor in contexts:
        body += struct.pack('<HBx', ctx_id, 1) + syntax_id(uuid, major, minor) + syntax_id(*NDR32)
    return _header(PTYPE_ALTER_CONTEXT if alter else PTYPE_BIND, len(body), call_id) + body


def request_pdu(call_id, context_id, opnum, stub=b'\x00' * 8):
    """A single-fragment request without object uuid or authentication."""
    body = struct.pack('<IHH', len(stub), context_id, opnum) + stub
    return _header(PTYPE_REQUEST, len(body), call_id) + body


EPM_UUID = ('e1af8308-5d1f-11c9-91a4-08002b14a0fa', 3, 0)


def ept_map_request(call_id, uuid, major, minor=0, max_towers=1, context_id=0):
    """ept_map (opnum 3) as impacket sends it (NDR32): object pointer (nil UUID), tower pointer
    with a 5-floor ncacn_ip_tcp tower for `uuid` vmajor.minor (port 0, 0.0.0.0), null
    entry_handle, max_towers."""
    def floor(lhs, rhs):
        return struct.pack('<H', len(lhs)) + lhs + struct.pack('<H', len(rhs)) + rhs
    tower = struct.pack('<H', 5) + b''.join([
        floor(b'\x0d' + _uuid.UUID(uuid).bytes_le + struct.pack('<H', major), struct.pack('<H', minor)),
        floor(b'\x0d' + _uuid.UUID(NDR32[0]).bytes_le + struct.pack('<H', 2), struct.pack('<H', 0)),
        floor(b'\x0b', b'\x00\x00'),
        floor(b'\x07', b'\x00\x00'),
        floor(b'\x09', b'\x00' * 4),
    ])
    stub = struct.pack('<I', 1) + b'\x00' * 16 + struct.pack('<III', 2, len(tower), len(tower)) + tower
    stub += b'\x00' * ((-len(stub)) % 4)
    stub += b'\x00' * 20 + struct.pack('<I', max_towers)
    return request_pdu(call_id, context_id, 3, stub)


def ept_map_status(pdu):
    """The status word (last 4 stub bytes) of an ept_map response PDU."""
    return struct.unpack('<I', pdu.raw[-4:])[0]


class PDU:
    """A received PDU: header fields plus the raw bytes."""

    def __init__(self, raw):
        self.raw = raw
        (self.vers, self.vers_minor, self.ptype, self.flags, drep,
         self.frag_length, self.auth_length, self.call_id) = struct.unpack('<BBBB4sHHI', raw[:16])
        self.little_endian = bool(drep[0] & 0x10)
        if not self.little_endian:  # re-read the integers big-endian
            self.frag_length, self.auth_length, self.call_id = struct.unpack('>HHI', raw[8:16])
        self.body = raw[16:]

    @property
    def fault_status(self):
        """For a fault PDU: the status word (after alloc_hint u32, p_cont_id u16, cancel_count u8, reserved u8)."""
        if self.ptype != PTYPE_FAULT or len(self.body) < 12:
            return None
        return struct.unpack('<I' if self.little_endian else '>I', self.body[8:12])[0]

    def secondary_address(self):
        """For a bind_ack / alter_context_resp: sec_addr without its NUL, as bytes."""
        e = '<' if self.little_endian else '>'
        sec_len = struct.unpack(e + 'H', self.body[8:10])[0]
        return self.body[10:10 + sec_len].rstrip(b'\x00')

    def bind_ack_results(self):
        """For a bind_ack / alter_context_resp: [(result, reason)] per context."""
        e = '<' if self.little_endian else '>'
        b = self.body
        sec_len = struct.unpack(e + 'H', b[8:10])[0]
        off = 10 + sec_len
        off += (-(16 + off)) % 4  # align to 4 relative to the PDU start
        n = b[off]
        off += 4
        out = []
        for _ in range(n):
            result, reason = struct.unpack(e + 'HH', b[off:off + 4])
            out.append((result, reason))
            off += 24
        return out

    def __repr__(self):
        return 'PDU(ptype=%d flags=0x%02x frag_length=%d call_id=%d bytes=%s)' % (
            self.ptype, self.flags, self.frag_length, self.call_id, self.raw[:64].hex())


class Conn:
    """A raw TCP connection speaking whole PDUs; every receive is bounded by `timeout`."""

    def __init__(self, host, port, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout

    def send(self, data):
        self.sock.sendall(data)

    def _recv_exact(self, n, deadline):
        buf = b''
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout('timed out after %d of %d bytes' % (len(buf), n))
            self.sock.settimeout(left)
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                if not buf:
                    return None
                raise ConnectionError('connection closed inside a PDU (%d of %d bytes): %s' % (len(buf), n, buf.hex()))
            buf += chunk
        return buf

    def recv_pdu(self, timeout=None):
        """The next whole PDU, or None if the peer closed the connection cleanly
        (or reset it) before sending one. Raises socket.timeout after `timeout`."""
        deadline = time.monotonic() + (timeout or self.timeout)
        try:
            head = self._recv_exact(16, deadline)
        except ConnectionResetError:
            return None
        if head is None:
            return None
        frag_length = struct.unpack('<H' if head[4] & 0x10 else '>H', head[8:10])[0]
        rest = self._recv_exact(frag_length - 16, deadline) if frag_length > 16 else b''
        if rest is None:
            raise ConnectionError('connection closed after a PDU header: %s' % head.hex())
        return PDU(head + rest)

    def wait_closed(self, timeout=5.0):
        """True if the peer closes (EOF or reset) within `timeout` without sending more;
        raises AssertionError with the bytes if it sends anything; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                return False
            except ConnectionResetError:
                return True
            if not data:
                return True
            raise AssertionError('expected the connection to close, got %d more bytes: %s' % (len(data), data[:64].hex()))

    def drain_until_closed(self, timeout=5.0, limit=1 << 20):
        """Read (and discard) until the peer closes; True if it closed within `timeout`, False
        on timeout. Returns as soon as EOF or a reset is seen; at most `limit` bytes."""
        deadline = time.monotonic() + timeout
        got = 0
        while got <= limit:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not data:
                return True
            got += len(data)
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
