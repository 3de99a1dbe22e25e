"""A fake DCE/RPC server for adversarial tests: just enough of the connection-oriented protocol
(C706 ch. 12) for rpcgate to use it as a route's upstream, and then misbehave.

    srv = FakeServer('127.0.0.2', 13135, on_request=lambda conn, req: conn.send(...))
    srv.start()
    ...
    srv.stop()

It answers every bind / alter_context with a bind_ack / alter_context_resp accepting each
context that offers NDR32 (rejecting the others), and hands every request to `on_request`
(a callable taking the FakeConnection and the request Request). The helpers below build the
malicious endpoint-mapper replies (ept_map responses with crafted towers).

Every socket operation has a timeout and every loop is bounded: `stop()` ends the accept loop
and closes every connection within about a second. Little-endian NDR32 only.
"""

import socket
import struct
import threading
import time
import uuid as _uuid

import rawrpc

NDR32_UUID = '8a885d04-1ceb-11c9-9fe8-08002b104860'
EPM_OPNUM_MAP = 3

# Tower floor protocol identifiers (C706 Appendix L / I)
FLOOR_UUID = 0x0D
FLOOR_RPC_CO = 0x0B
FLOOR_TCP = 0x07
FLOOR_IP = 0x09


# ------------------------------------------------------------------ PDUs the server sends

def pdu(ptype, body, call_id, flags=rawrpc.PFC_FIRST_FRAG | rawrpc.PFC_LAST_FRAG):
    return struct.pack('<BBBB4sHHI', 5, 0, ptype, flags, b'\x10\x00\x00\x00', 16 + len(body), 0, call_id) + body


def bind_ack(call_id, contexts, alter=False, port=49154):
    """Accept every context whose transfer syntaxes include NDR32 (with NDR32), reject the rest."""
    sec_addr = (b'%d\x00' % port) if not alter else b''
    body = struct.pack('<HHIH', 4280, 4280, 0x1234, len(sec_addr)) + sec_addr
    body += b'\x00' * ((-(16 + len(body))) % 4)
    body += struct.pack('<B3x', len(contexts))
    ndr = rawrpc.syntax_id(NDR32_UUID, 2, 0)
    for _ctx_id, transfers in contexts:
        if ndr in transfers:
            body += struct.pack('<HH', 0, 0) + ndr
        else:
            body += struct.pack('<HH', 2, 2) + b'\x00' * 20  # provider rejection, transfer syntaxes not supported
    return pdu(rawrpc.PTYPE_ALTER_CONTEXT_RESP if alter else rawrpc.PTYPE_BIND_ACK, body, call_id)


def response_fragments(call_id, context_id, stub, max_stub=4256):
    """A response split into fragments of at most `max_stub` stub bytes (FIRST ... LAST)."""
    chunks = [stub[i:i + max_stub] for i in range(0, len(stub), max_stub)] or [b'']
    out = []
    for i, chunk in enumerate(chunks):
        flags = (rawrpc.PFC_FIRST_FRAG if i == 0 else 0) | (rawrpc.PFC_LAST_FRAG if i == len(chunks) - 1 else 0)
        body = struct.pack('<IHBB', len(stub) - i * max_stub, context_id, 0, 0) + chunk
        out.append(pdu(rawrpc.PTYPE_RESPONSE, body, call_id, flags))
    return out


# ------------------------------------------------------------------ towers and ept_map replies

def _floor(lhs, rhs):
    return struct.pack('<H', len(lhs)) + lhs + struct.pack('<H', len(rhs)) + rhs


def tcp_tower(iface_uuid, major, minor, port, ip):
    """A 5-floor ncacn_ip_tcp tower (75 bytes): interface, NDR32, RPC CO, TCP port, IPv4 address."""
    floors = [
        _floor(bytes([FLOOR_UUID]) + _uuid.UUID(iface_uuid).bytes_le + struct.pack('<H', major), struct.pack('<H', minor)),
        _floor(bytes([FLOOR_UUID]) + _uuid.UUID(NDR32_UUID).bytes_le + struct.pack('<H', 2), struct.pack('<H', 0)),
        _floor(bytes([FLOOR_RPC_CO]), struct.pack('<H', 0)),
        _floor(bytes([FLOOR_TCP]), struct.pack('>H', port)),
        _floor(bytes([FLOOR_IP]), socket.inet_aton(ip)),
    ]
    return struct.pack('<H', len(floors)) + b''.join(floors)


def twr(tower, claimed_length=None):
    """twr_t in NDR32: conformance, tower_length, octets, padded to 4. `claimed_length` lies about
    the length (both fields) to make it run past the stub."""
    n = len(tower) if claimed_length is None else claimed_length
    data = struct.pack('<II', n, n) + tower
    return data + b'\x00' * ((-len(data)) % 4)


def ept_map_stub(towers, status=0, max_towers=None, num_towers=None, twr_bytes=None):
    """An ept_map response stub (NDR32): entry_handle, num_towers, the conformant-varying array of
    tower pointers, the deferred twr_t's, status. `twr_bytes` replaces the encoded towers."""
    count = len(towers) if num_towers is None else num_towers
    out = struct.pack('<I', 0) + b'\x00' * 16                      # entry_handle (null)
    out += struct.pack('<I', count)                                 # num_towers
    out += struct.pack('<III', max(count, max_towers or 0), 0, count)  # max_count, offset, actual_count
    out += b''.join(struct.pack('<I', 0x00020000 + 4 * i) for i in range(count))
    out += twr_bytes if twr_bytes is not None else b''.join(twr(t) for t in towers)
    out += b'\x00' * ((-len(out)) % 4)
    return out + struct.pack('<I', status)


# ------------------------------------------------------------------ the server

class Request:
    """A request PDU as the fake server saw it."""

    def __init__(self, raw):
        self.pdu = rawrpc.PDU(raw)
        self.call_id = self.pdu.call_id
        self.alloc_hint, self.context_id, self.opnum = struct.unpack('<IHH', self.pdu.body[:8])
        self.stub = self.pdu.body[8:]


class FakeConnection:
    def __init__(self, server, sock, peer):
        self.server = server
        self.sock = sock
        self.peer = peer
        self.requests = 0

    def send(self, data):
        self.sock.sendall(data)

    def reset(self):
        """Close with RST (SO_LINGER 0)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        except OSError:
            pass
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _recv_exact(self, n, deadline):
        buf = b''
        while len(buf) < n:
            if self.server._stop.is_set() or time.monotonic() > deadline:
                return None
            try:
                chunk = self.sock.recv(n - len(buf))
            except socket.timeout:
                continue
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    def serve(self):
        """Read PDUs until the peer closes, the server stops, or the connection's lifetime ends."""
        self.sock.settimeout(0.2)
        deadline = time.monotonic() + self.server.connection_lifetime_s
        try:
            for _ in range(10000):  # bounded: PDUs per connection
                head = self._recv_exact(16, deadline)
                if head is None:
                    return
                frag_length = struct.unpack('<H', head[8:10])[0]
                rest = self._recv_exact(frag_length - 16, deadline) if frag_length > 16 else b''
                if rest is None:
                    return
                raw = head + rest
                ptype, call_id = raw[2], struct.unpack('<I', raw[12:16])[0]
                if ptype in (rawrpc.PTYPE_BIND, rawrpc.PTYPE_ALTER_CONTEXT):
                    self.send(bind_ack(call_id, _offered_contexts(raw), alter=ptype == rawrpc.PTYPE_ALTER_CONTEXT))
                elif ptype == rawrpc.PTYPE_REQUEST:
                    self.requests += 1
                    self.server._count_request()
                    if self.server.on_request(self, Request(raw)) == 'stop':
                        return
        except OSError:
            return
        finally:
            self.close()


def _offered_contexts(raw):
    """[(context_id, [transfer syntax bytes])] of a bind / alter_context."""
    body = raw[16:]
    n = body[8]
    off = 12
    out = []
    for _ in range(n):
        ctx_id, n_ts = struct.unpack('<HB', body[off:off + 3])
        off += 4 + 20
        transfers = [body[off + 20 * i: off + 20 * (i + 1)] for i in range(n_ts)]
        off += 20 * n_ts
        out.append((ctx_id, transfers))
    return out


class FakeServer:
    """Listens on (host, port) in a thread; each connection is served in its own thread.

    on_request(conn, request) sends whatever it likes (or nothing); returning 'stop' ends that
    connection (closing it unless the callable already reset it)."""

    def __init__(self, host, port, on_request, connection_lifetime_s=30.0):
        self.host, self.port = host, port
        self.on_request = on_request
        self.connection_lifetime_s = connection_lifetime_s
        self.accepted = 0
        self.request_count = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self._conns = []
        self._sock = None

    def _count_request(self):
        with self._lock:
            self.request_count += 1

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(64)
        s.settimeout(0.2)
        self._sock = s
        t = threading.Thread(target=self._accept_loop, name='fake-%s:%d' % (self.host, self.port), daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                sock, peer = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.accepted += 1
            conn = FakeConnection(self, sock, peer)
            self._conns.append(conn)
            t = threading.Thread(target=conn.serve, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self):
        self._stop.set()
        try:
            self._sock.close()
        except OSError:
            pass
        for c in self._conns:
            c.close()
        for t in self._threads:
            t.join(2.0)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Listener:
    """A plain TCP listener that only counts connection attempts (to prove nobody connects)."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.accepted = 0
        self._stop = threading.Event()
        self._sock = None
        self._thread = None

    def __enter__(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(16)
        s.settimeout(0.2)
        self._sock = s
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self):
        while not self._stop.is_set():
            try:
                c, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            c.close()

    def __exit__(self, *exc):
        self._stop.set()
        self._sock.close()
        self._thread.join(2.0)
