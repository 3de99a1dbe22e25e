#!/usr/bin/env bash
# Test PKI for the edge <-> core mutual-TLS hop. NOT for production.
#
#   deploy/tls/make-test-ca.sh DIR
#
# Writes into DIR (created if needed):
#   ca.pem ca.key                 the test CA
#   core.pem core.key             core gateway: DNS:core1.example.test, spiffe://example.test/core1
#   edge.pem edge.key             edge gateway: DNS:edge1.example.test, spiffe://example.test/edge1
#   edge-spiffe.pem/.key          edge gateway with only the URI SAN spiffe://example.test/edge1
#   rogue.pem rogue.key           from ANOTHER CA (rogue-ca.pem): SAN edge1.example.test, must be refused
#   stranger.pem stranger.key     from the test CA but SAN edge9.example.test (not allowed), must be refused
# Keys are EC P-256, certificates valid for 30 days.
set -euo pipefail
dir=${1:?usage: make-test-ca.sh DIR}
mkdir -p "$dir"
cd "$dir"
days=30

ca() { # name subject
    openssl ecparam -name prime256v1 -genkey -noout -out "$1.key"
    openssl req -x509 -new -key "$1.key" -sha256 -days "$days" -subj "/CN=$2" -out "$1.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}

leaf() { # name CN SAN usage ca
    openssl ecparam -name prime256v1 -genkey -noout -out "$1.key"
    openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
    cat > "$1.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=$4
subjectAltName=$3
EXT
    openssl x509 -req -in "$1.csr" -CA "$5.pem" -CAkey "$5.key" -CAcreateserial -days "$days" -sha256 \
        -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

ca ca "RPCGate test CA"
ca rogue-ca "Some other CA"
leaf core core1.example.test "DNS:core1.example.test,URI:spiffe://example.test/core1" serverAuth,clientAuth ca
leaf edge edge1.example.test "DNS:edge1.example.test,URI:spiffe://example.test/edge1" clientAuth,serverAuth ca
leaf edge-spiffe edge1 "URI:spiffe://example.test/edge1" clientAuth ca
leaf rogue edge1.example.test "DNS:edge1.example.test" clientAuth rogue-ca
leaf stranger edge9.example.test "DNS:edge9.example.test" clientAuth ca
chmod 600 ./*.key
echo "test PKI written to $dir"
