"""The rpcgate instance of the adversarial suite (test_adversarial.py): short timeouts, a
small per-route cap, and routes whose upstream is a fake DCE/RPC server (lib/fakerpc.py) or
nothing at all.

Ports are chosen not to collide with the session gateway (135, 1135, 50000-50119, admin 19135)
or test_policy_opnums.py (2135, 3135, 50200-50319, admin 19136). Timeouts are global in the
configuration, hence a separate instance rather than the session gateway: bind 2 s (slow and half-open clients are cut quickly), idle 5 s (a stalled upstream),
connect 2 s, half_close 2 s.

| route        | listen          | EPM  | ports        | upstream                        | notes                      |
|--------------|-----------------|------|--------------|---------------------------------|----------------------------|
| adv-dc       | 10.99.0.1       | 4135 | 50500-50519  | Samba DC 10.99.0.2:135          | attacks + the bystander    |
| adv-cap      | 10.99.0.1       | 4136 | 50520-50521  | Samba DC 10.99.0.2:135          | max_connections 3          |
| adv-fake     | 127.0.0.1       | 4137 | 50530-50539  | fake EPM 127.0.0.2:13135        | malicious replies, faults  |
| adv-exhaust  | 127.0.0.1       | 4138 | 50540-50541  | fake EPM 127.0.0.3:13135        | two ports only             |
| adv-down     | 127.0.0.1       | 4139 | 50550-50550  | 127.0.0.4:13135 (nothing there) | connection refused         |
| adv-ports    | 127.0.0.1       | 4142 | 50580-50581  | fake EPM 127.0.0.6:13135        | server_ports 49152-65535   |
| admin        | 127.0.0.1:19138 |      |              |                                 |                            |
"""

from interop_env import GATEWAY_HOST, SAMBA_HOST

ADMIN = '127.0.0.1:19138'
FAKE_EPM_PORT = 13135
ALLOWED = ['samr', 'lsarpc', 'netlogon', 'dssetup', 'drsuapi']

TIMEOUTS = {'connect': 2, 'idle': 5, 'bind': 2, 'half_close': 2}


class AdvRoute:
    def __init__(self, name, host, epm_port, first, last, upstream, upstream_epm_port=135, max_connections=256,
                 server_ports=None):
        self.name = name
        self.host = host
        self.epm_port = epm_port
        self.first, self.last = first, last
        self.ports = range(first, last + 1)
        self.upstream = upstream
        self.upstream_epm_port = upstream_epm_port
        self.max_connections = max_connections
        self.server_ports = server_ports

    def yaml(self):
        return ('  - name: %s\n    listen: %s\n    epm_port: %d\n    upstream: %s\n    upstream_epm_port: %d\n'
                '    ports: %d-%d\n    policy: dc\n    max_connections: %d\n    mapping_idle_timeout: 10m\n') % (
                    self.name, self.host, self.epm_port, self.upstream, self.upstream_epm_port,
                    self.first, self.last, self.max_connections) + (
                    '    server_ports: %s\n' % self.server_ports if self.server_ports else '')

    def __repr__(self):
        return 'AdvRoute(%s %s:%d -> %s:%d)' % (self.name, self.host, self.epm_port, self.upstream, self.upstream_epm_port)


DC = AdvRoute('adv-dc', GATEWAY_HOST, 4135, 50500, 50519, SAMBA_HOST)
CAP = AdvRoute('adv-cap', GATEWAY_HOST, 4136, 50520, 50521, SAMBA_HOST, max_connections=3)
FAKE = AdvRoute('adv-fake', '127.0.0.1', 4137, 50530, 50539, '127.0.0.2', FAKE_EPM_PORT)
EXHAUST = AdvRoute('adv-exhaust', '127.0.0.1', 4138, 50540, 50541, '127.0.0.3', FAKE_EPM_PORT)
DOWN = AdvRoute('adv-down', '127.0.0.1', 4139, 50550, 50550, '127.0.0.4', FAKE_EPM_PORT)
PORTS = AdvRoute('adv-ports', '127.0.0.1', 4142, 50580, 50581, '127.0.0.6', FAKE_EPM_PORT, server_ports='49152-65535')
ROUTES = [DC, CAP, FAKE, EXHAUST, DOWN, PORTS]


def gateway_config():
    return ('# Written by IntegrationTests/test_adversarial.py\nroutes:\n' + ''.join(r.yaml() for r in ROUTES)
            + 'policies:\n  dc:\n    default: deny\n    rules:\n      - action: allow\n        interfaces: [%s]\n' % ', '.join(ALLOWED)
            + 'admin:\n  listen: %s\n' % ADMIN
            + 'timeouts:\n' + ''.join('  %s: %ds\n' % kv for kv in TIMEOUTS.items()))
