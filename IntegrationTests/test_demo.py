"""`rpcgate demo`: the README's first command. Needs no DC and no root.

The demo runs for a few seconds on fixed loopback ports (outside every other test's); the test
reads its narration while it runs, checks the status page and /metrics against it, and after it
exits checks that no process and no listening port is left.
"""

import json
import os
import re
import selectors
import signal
import socket
import subprocess
import time

import pytest

from gateway import Metrics, http_get

HOST = '127.0.0.1'


class Demo:
    """One `rpcgate demo` process (its own session, so only it is ever signalled)."""

    def __init__(self, binary, outdir, name, epm_port, first_port, admin_port, extra=()):
        self.argv = [binary, 'demo', '--epm-port', str(epm_port), '--first-port', str(first_port),
                     '--admin-port', str(admin_port), '--interval', '1'] + list(extra)
        self.admin = '%s:%d' % (HOST, admin_port)
        self.epm_port, self.first_port, self.admin_port = epm_port, first_port, admin_port
        self.log_path = os.path.join(outdir, '%s.log' % name)
        self.pid_path = os.path.join(outdir, '%s.pid' % name)
        self.err = open(os.path.join(outdir, '%s.stderr' % name), 'wb')
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.err, start_new_session=True)
        with open(self.pid_path, 'w') as f:
            f.write('%d\n' % self.proc.pid)
        self.text = ''
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)

    def read_until(self, pattern, deadline_s):
        """Output so far once `pattern` appears in it (bounded); fails with the output otherwise."""
        end = time.monotonic() + deadline_s
        while not re.search(pattern, self.text, re.M):
            left = end - time.monotonic()
            if left <= 0:
                pytest.fail('no %r within %d s; demo output:\n%s' % (pattern, deadline_s, self.text))
            if self._selector.select(timeout=min(left, 0.5)):
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    pytest.fail('demo output ended (exit %s) before %r:\n%s' % (self.proc.poll(), pattern, self.text))
                self.text += chunk.decode(errors='replace')
        return self.text

    def wait(self, timeout):
        """Rest of the output and the exit status (bounded; SIGKILL and fail after `timeout`)."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate(timeout=5)
            pytest.fail('demo did not exit within %d s:\n%s' % (timeout, self.text))
        self.text += out.decode(errors='replace')
        return self.proc.returncode

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._selector.close()
        self.err.close()
        with open(self.log_path, 'w') as f:
            f.write(self.text)
        try:
            os.unlink(self.pid_path)
        except OSError:
            pass


def listening(port):
    """Whether anything accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((HOST, port)) == 0


def assert_nothing_left(demo, server_ports):
    assert demo.proc.poll() is not None
    try:
        os.kill(demo.proc.pid, 0)
        pytest.fail('demo process %d still exists' % demo.proc.pid)
    except ProcessLookupError:
        pass
    ports = [demo.epm_port, demo.admin_port] + list(server_ports) + list(range(demo.first_port, demo.first_port + 20))
    still = [p for p in ports if listening(p)]
    assert not still, 'ports still accepting connections after the demo: %s' % still


def server_ports(text):
    m = re.search(r'endpoint mapper 127\.0\.0\.1:(\d+),\n\s+samr, lsarpc, netlogon, drsuapi, spoolss on 127\.0\.0\.1:(\d+)', text)
    assert m, 'banner does not name the demo server ports:\n%s' % text
    return int(m.group(1)), int(m.group(2))


@pytest.mark.timeout_s(90)
def test_demo_runs_explains_and_stops(rpcgate_binary, outdir):
    demo = Demo(rpcgate_binary, outdir, 'demo', epm_port=5135, first_port=52800, admin_port=19150,
                extra=['--duration', '6'])
    try:
        text = demo.read_until(r'^The client now repeats', 60)
        server_epm, server_data = server_ports(text)
        first = demo.first_port

        # the narration of round 1: lookup rewritten, bind allowed, DCSync refused, spoolss refused
        assert re.search(r'^\s+samr\s+server 127\.0\.0\.1:%d\s+->\s+client sees 127\.0\.0\.1:%d\s+rewritten into the gateway\'s range'
                         % (server_data, first), text, re.M), text
        assert re.search(r'^\s+spoolss\s+server 127\.0\.0\.1:%d\s+->\s+client sees 0\.0\.0\.0:0\s+hidden: the policy denies spoolss'
                         % server_data, text, re.M), text
        assert 'ept_map samr: the gateway answers 127.0.0.1:%d (the server said 127.0.0.1:%d; the gateway rewrote it)' % (
            first, server_data) in text
        assert re.search(r'^3\. connect 127\.0\.0\.1:%d, bind samr: allowed \(decided by rule 1\)' % first, text, re.M), text
        assert 'call SamrEnumerateDomainsInSamServer (opnum 6): answered by the server' in text
        assert re.search(r'^5\. call IDL_DRSGetNCChanges \(opnum 3\): refused by the gateway with a fault \(0x00000005, access denied\); '
                         r'decided by rule 0 \(profile block-dcsync\); the server never received it', text, re.M), text
        assert 'call IDL_DRSUnbind (opnum 1): answered by the server' in text
        assert re.search(r'^6\. connect 127\.0\.0\.1:%d, bind spoolss: refused by the gateway \(bind_ack: provider rejection, '
                         r'abstract syntax not supported\); decided by the policy\'s default \(deny\); spoolss never reaches the server'
                         % first, text, re.M), text
        assert 'The demo server itself received: drsuapi opnums 0, 1; samr opnum 6.' in text
        assert 'status page  http://127.0.0.1:%d/' % demo.admin_port in text
        assert 'metrics      http://127.0.0.1:%d/metrics' % demo.admin_port in text

        # the status page and /metrics while it runs
        status, body = http_get('http://%s/status.json' % demo.admin, timeout=5)
        assert status == 200, body
        page = json.loads(body)
        assert page['denials_total'] >= 2, page
        denied = {(d['event'], d['interface'], d['opnum'], d['profile']) for d in page['denials']}
        assert ('call', 'drsuapi', 3, 'block-dcsync') in denied, page['denials']
        assert ('bind', 'spoolss', None, None) in denied, page['denials']
        route = page['routes'][0]
        assert route['name'] == 'demo' and route['ports'] == {'first': first, 'last': first + 19}, route
        assert any(m['gateway_port'] == first and m['server'] == '127.0.0.1:%d' % server_data for m in route['mappings']), route
        status, html = http_get('http://%s/' % demo.admin, timeout=5)
        assert status == 200 and 'drsuapi' in html and 'spoolss' in html

        metrics = Metrics.scrape(demo.admin)
        assert metrics.value('rpcgate_binds_total', route='demo', interface='samr', decision='allow') >= 1
        assert metrics.value('rpcgate_binds_total', route='demo', interface='drsuapi', decision='allow') >= 1
        assert metrics.value('rpcgate_binds_total', route='demo', interface='spoolss', decision='deny') >= 1
        assert metrics.value('rpcgate_calls_denied_total', route='demo', interface='drsuapi') >= 1

        # --duration ends it: a summary, exit 0, nothing left
        assert demo.wait(30) == 0, demo.text
        rounds = [int(n) for n in re.findall(r'^round (\d+): lookup 5 endpoints \(4 rewritten, 1 hidden\); binds 2 allowed, '
                                             r'1 refused; calls 3 answered, 1 refused$', demo.text, re.M)]
        assert rounds and rounds[0] == 2, demo.text
        m = re.search(r'^Summary: (\d+) rounds; binds (\d+) allowed, (\d+) refused; calls (\d+) answered, (\d+) refused; '
                      r'0 failed steps; the status page recorded (\d+) refusals\.$', demo.text, re.M)
        assert m, demo.text
        n, allowed, refused, answered, calls_refused, recorded = map(int, m.groups())
        assert n == 1 + len(rounds) and allowed == 2 * n and refused == n and answered == 3 * n and calls_refused == n
        assert recorded == 2 * n, demo.text
        assert 'Stopped: client, gateway and demo server closed; nothing is left running.' in demo.text
        assert_nothing_left(demo, (server_epm, server_data))
    finally:
        demo.close()


@pytest.mark.timeout_s(60)
def test_demo_stops_on_ctrl_c(rpcgate_binary, outdir):
    demo = Demo(rpcgate_binary, outdir, 'demo-sigint', epm_port=5136, first_port=52820, admin_port=19151)
    try:
        text = demo.read_until(r'^The client now repeats', 45)
        ports = server_ports(text)
        assert listening(demo.epm_port) and listening(demo.admin_port)
        demo.proc.send_signal(signal.SIGINT)
        assert demo.wait(20) == 0, demo.text
        assert re.search(r'^SIGINT: stopping\.$', demo.text, re.M), demo.text
        assert 'nothing is left running' in demo.text
        assert_nothing_left(demo, ports)
    finally:
        demo.close()
