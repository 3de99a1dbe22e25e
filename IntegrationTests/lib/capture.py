"""Packet capture for interop tests: dumpcap (Debian's tshark package) writing classic
pcap, and a small pcap reader that yields TCP segments with their payload.

Only the dumpcap process this module starts is ever signalled (by its PID).
"""

import os
import signal
import socket
import struct
import subprocess
import time

DUMPCAP = '/usr/bin/dumpcap'


class Capture:
    """dumpcap -i IFACE -f FILTER -w PATH, started and stopped around a test step.

        with Capture('lo', 'tcp and host 10.99.0.1', path) as cap:
            ...            # traffic
        segs = cap.segments()
    """

    def __init__(self, iface, bpf, path, start_timeout=10.0):
        self.iface = iface
        self.bpf = bpf
        self.path = path
        self.start_timeout = start_timeout
        self.proc = None
        self.stderr_path = path + '.stderr'

    def start(self):
        for p in (self.path, self.stderr_path):
            if os.path.exists(p):
                os.unlink(p)
        self._err = open(self.stderr_path, 'w+b')
        # -P: classic pcap; -q: no packet counts; -n: no name resolution (not used by dumpcap, harmless)
        self.proc = subprocess.Popen(
            [DUMPCAP, '-q', '-P', '-i', self.iface, '-f', self.bpf, '-w', self.path],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._err)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError('dumpcap on %s exited with %s: %s' % (self.iface, self.proc.returncode, self.stderr()))
            if b'Capturing on' in self._read_err() and os.path.exists(self.path):
                time.sleep(0.3)  # the filter is attached before the banner; give the ring a moment
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError('dumpcap on %s did not start within %.0f s: %s' % (self.iface, self.start_timeout, self.stderr()))

    def _read_err(self):
        self._err.flush()
        with open(self.stderr_path, 'rb') as f:
            return f.read()

    def stderr(self):
        return self._read_err().decode(errors='replace').strip()

    def stop(self, timeout=10.0):
        """SIGINT our dumpcap (it flushes and exits), bounded; SIGKILL if it lingers."""
        if self.proc is None:
            return
        time.sleep(0.3)  # let the last packets reach the capture buffer
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._err.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def segments(self):
        return list(read_pcap_tcp(self.path))


class Segment:
    __slots__ = ('src', 'sport', 'dst', 'dport', 'flags', 'payload')

    def __init__(self, src, sport, dst, dport, flags, payload):
        self.src, self.sport, self.dst, self.dport, self.flags, self.payload = src, sport, dst, dport, flags, payload

    def __repr__(self):
        return '%s:%d > %s:%d flags=0x%02x len=%d' % (self.src, self.sport, self.dst, self.dport, self.flags, len(self.payload))


_LINK_HEADER = {1: 14, 113: 16, 276: 20, 101: 0, 228: 0, 0: 4}  # EN10MB, LINUX_SLL, LINUX_SLL2, RAW, IPV4, NULL


def read_pcap_tcp(path):
    """Yield a Segment for every IPv4/TCP packet in a classic pcap file."""
    with open(path, 'rb') as f:
        data = f.read()
    if len(data) < 24:
        return
    magic = data[:4]
    if magic in (b'\xd4\xc3\xb2\xa1', b'\x4d\x3c\xb2\xa1'):
        e = '<'
    elif magic in (b'\xa1\xb2\xc3\xd4', b'\xa1\xb2\x3c\x4d'):
        e = '>'
    else:
        raise ValueError('%s: not a classic pcap file (magic %s)' % (path, magic.hex()))
    linktype = struct.unpack(e + 'I', data[20:24])[0] & 0x0FFFFFFF
    if linktype not in _LINK_HEADER:
        raise ValueError('%s: unsupported link type %d' % (path, linktype))
    lh = _LINK_HEADER[linktype]
    off = 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(e + 'IIII', data[off:off + 16])
        pkt = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if linktype == 1:
            ethertype = struct.unpack('>H', pkt[12:14])[0]
            if ethertype == 0x8100:
                lh_pkt, ethertype = 18, struct.unpack('>H', pkt[16:18])[0]
            else:
                lh_pkt = 14
            if ethertype != 0x0800:
                continue
        elif linktype == 113:
            if struct.unpack('>H', pkt[14:16])[0] != 0x0800:
                continue
            lh_pkt = lh
        elif linktype == 276:
            if struct.unpack('>H', pkt[0:2])[0] != 0x0800:
                continue
            lh_pkt = lh
        else:
            lh_pkt = lh
        ip = pkt[lh_pkt:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
            continue
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack('>H', ip[2:4])[0]
        tcp = ip[ihl:total]
        if len(tcp) < 20:
            continue
        doff = (tcp[12] >> 4) * 4
        sport, dport = struct.unpack('>HH', tcp[:4])
        yield Segment(socket.inet_ntoa(ip[12:16]), sport, socket.inet_ntoa(ip[16:20]), dport, tcp[13], bytes(tcp[doff:]))


def streams(segments):
    """Concatenate payloads per (src, sport, dst, dport) flow, in capture order."""
    out = {}
    for s in segments:
        if s.payload:
            key = (s.src, s.sport, s.dst, s.dport)
            out[key] = out.get(key, b'') + s.payload
    return out
