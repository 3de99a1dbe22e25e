"""Addresses, routes and policies of the interop suite's gateway (shared by conftest and tests)."""

import rpcgate_interop as ri

SAMBA_HOST = '10.99.0.2'
GATEWAY_HOST = '10.99.0.1'
ADMIN = '127.0.0.1:19135'

EPM_UUID = ri.IFACES['epm'][0].upper()
SAMBA_REAL_PORTS = (49152, 49153, 49154)


class Route:
    def __init__(self, name, epm_port, first, last, allowed):
        self.name = name
        self.host = GATEWAY_HOST
        self.epm_port = epm_port
        self.ports = range(first, last + 1)
        self.first, self.last = first, last
        self.allowed = list(allowed)

    def allows(self, uuid, version=None):
        """Whether the policy allows an interface (uuid + major version, as the catalog matches)."""
        for name in self.allowed:
            u, v = ri.IFACES[name]
            if u.upper() == uuid.upper() and (version is None or v.split('.')[0] == str(version).split('.')[0]):
                return True
        return False

    def map(self, iface, **kw):
        """ept_map through this route's EPM listener -> gateway port."""
        return ri.ept_map(self.host, self.epm_port, *ri.IFACES[iface], **kw)[1]

    def __repr__(self):
        return 'Route(%s %s:%d %d-%d)' % (self.name, self.host, self.epm_port, self.first, self.last)


DC1 = Route('dc1', 135, 50000, 50019, ['samr', 'lsarpc', 'netlogon', 'dssetup', 'drsuapi'])
NODRS = Route('dc1-nodrs', 1135, 50100, 50119, ['samr', 'lsarpc', 'netlogon', 'dssetup'])


def gateway_config():
    def route(r, policy):
        return ('  - name: %s\n    listen: %s\n    epm_port: %d\n    upstream: %s\n'
                '    ports: %d-%d\n    policy: %s\n    mapping_idle_timeout: 10m\n') % (
                    r.name, r.host, r.epm_port, SAMBA_HOST, r.first, r.last, policy)

    def policy(name, allowed):
        return ('  %s:\n    default: deny\n    rules:\n      - action: allow\n'
                '        interfaces: [%s]\n') % (name, ', '.join(allowed))

    return ('# Written by IntegrationTests/conftest.py\nroutes:\n' + route(DC1, 'dc') + route(NODRS, 'nodrs')
            + 'policies:\n' + policy('dc', DC1.allowed) + policy('nodrs', NODRS.allowed)
            + 'admin:\n  listen: %s\n' % ADMIN)
