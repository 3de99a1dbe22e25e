"""Run an rpcgate binary for interop tests, and read its admin endpoints.

    gw = Gateway(binary, config_text, outdir)
    gw.start(ready=lambda: ...)      # bounded; raises GatewayError with the log tail
    ...
    gw.stop()                        # SIGTERM our PID, bounded, then SIGKILL

Only the process this object started is ever signalled (by its PID).
"""

import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request


class GatewayError(Exception):
    pass


class Gateway:
    # Every gateway started and not yet stopped, so conftest can attach each one's log to the
    # report of a failed test (the session gateway and the ones a test module starts itself).
    running = []

    def __init__(self, binary, config_text, outdir, name='gateway', log_level='debug', extra_args=()):
        self.binary = binary
        self.name = name
        self.outdir = outdir
        self.config_path = os.path.join(outdir, '%s.yaml' % name)
        self.log_path = os.path.join(outdir, '%s.log' % name)
        # PID file so a wrapper (scripts/interop-tests.sh) can stop this process if the
        # test runner itself is killed before its teardown.
        self.pid_path = os.path.join(outdir, '%s.pid' % name)
        self.config_text = config_text
        self.log_level = log_level
        self.extra_args = list(extra_args)
        self.proc = None
        self._log = None

    @property
    def argv(self):
        argv = [self.binary, 'run', '--config', self.config_path]
        if self.log_level:
            argv += ['--log-level', self.log_level]
        return argv + self.extra_args

    def start(self, ready, deadline_s=30.0, interval_s=0.25):
        """Write the config, start the gateway (stdout+stderr to the log file), and call
        ready() until it returns truthy without raising. Bounded by deadline_s."""
        os.makedirs(self.outdir, exist_ok=True)
        with open(self.config_path, 'w') as f:
            f.write(self.config_text)
        self._log = open(self.log_path, 'wb')
        self._log.write(('--- %s: %s\n' % (time.strftime('%H:%M:%S'), ' '.join(self.argv))).encode())
        self._log.flush()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        with open(self.pid_path, 'w') as f:
            f.write('%d\n' % self.proc.pid)
        Gateway.running.append(self)
        end = time.monotonic() + deadline_s
        last = None
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise GatewayError('%s exited with status %s during start-up; log %s:\n%s' % (
                    self.name, self.proc.returncode, self.log_path, self.log_tail()))
            try:
                if ready():
                    # Another process answering the probe (say, an earlier gateway on the same
                    # admin port) must not pass for this one: it must still be running.
                    time.sleep(interval_s)
                    if self.proc.poll() is not None:
                        continue
                    return self
            except Exception as e:  # not ready yet
                last = e
            time.sleep(interval_s)
        self.stop()
        raise GatewayError('%s not ready after %.0f s (last probe error: %r); log %s:\n%s' % (
            self.name, deadline_s, last, self.log_path, self.log_tail()))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10.0):
        """SIGTERM our gateway, wait (bounded), SIGKILL if needed. Returns its exit status."""
        if self.proc is None:
            return None
        if self in Gateway.running:
            Gateway.running.remove(self)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._log.write(b'--- interop tests: no exit within %d s of SIGTERM; SIGKILL\n' % int(timeout))
                self._log.flush()
                self.proc.kill()
                self.proc.wait(5)
        try:
            os.unlink(self.pid_path)
        except OSError:
            pass
        if self._log and not self._log.closed:
            self._log.write(('--- %s: exited with status %s\n' % (time.strftime('%H:%M:%S'), self.proc.returncode)).encode())
            self._log.close()
        return self.proc.returncode

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_since(self, offset, limit=60000):
        """Log text written since byte `offset` (the last `limit` bytes of it)."""
        try:
            with open(self.log_path, 'rb') as f:
                f.seek(offset)
                data = f.read()
        except OSError as e:
            return '(no log: %s)' % e
        if len(data) > limit:
            data = b'...(truncated)...\n' + data[-limit:]
        return data.decode(errors='replace')

    def log_tail(self, lines=80):
        text = self.log_since(0, limit=400000)
        return '\n'.join(text.splitlines()[-lines:])


# ------------------------------------------------------------------ admin endpoints

def http_get(url, timeout=5.0):
    """(status, body text) of a GET; HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors='replace')
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors='replace')


_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?\s*$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text):
    """Prometheus text format -> list of (name, {label: value}, float)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        labels = {k: v.replace('\\"', '"').replace('\\\\', '\\') for k, v in _LABEL.findall(m.group(2) or '')}
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out.append((m.group(1), labels, value))
    return out


class Metrics:
    """One scrape of /metrics."""

    def __init__(self, text):
        self.text = text
        self.samples = parse_prometheus(text)

    @classmethod
    def scrape(cls, admin, timeout=5.0):
        status, body = http_get('http://%s/metrics' % admin, timeout)
        if status != 200:
            raise AssertionError('GET /metrics: HTTP %s: %s' % (status, body[:500]))
        return cls(body)

    def series(self, name, **labels):
        return [(l, v) for n, l, v in self.samples if n == name and all(l.get(k) == str(x) for k, x in labels.items())]

    def value(self, name, **labels):
        """Sum over every series of `name` whose labels include `labels` (0 if none)."""
        return sum(v for _, v in self.series(name, **labels))

    def lines(self, name):
        """The exposition lines of one metric, for assertion messages."""
        return '\n'.join(l for l in self.text.splitlines() if l.startswith(name)) or '(no %s series)' % name
