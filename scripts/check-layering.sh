#!/usr/bin/env bash
# Architecture checks that the compiler does not make:
# - RPCWire, RPCPolicy and RPCGateway import no Foundation (only config and the CLI may);
# - RPCWire and RPCPolicy contain no force-unwrap, try!, fatalError or precondition, so nothing
#   reachable from wire input can trap.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
if hits=$(grep -rnE '^\s*(@_exported |public |package |internal )?import (Foundation|FoundationEssentials)\b' Sources/RPCWire Sources/RPCPolicy Sources/RPCGateway); then
  echo "layering: Foundation imported below the config layer:"; echo "$hits"; status=1
fi
if hits=$(grep -rnE '(\btry!|[A-Za-z0-9_)\]]!\.|[A-Za-z0-9_)\]]!\)|fatalError\(|precondition\(|preconditionFailure\()' Sources/RPCWire Sources/RPCPolicy | grep -vE '^\S+:\s*//'); then
  echo "layering: traps in the codec or policy layer:"; echo "$hits"; status=1
fi
[ $status -eq 0 ] && echo "layering: ok (no Foundation below config; no traps in RPCWire/RPCPolicy)"
exit $status
