#!/usr/bin/env python3
"""Log in to PostgreSQL with SCRAM-SHA-256 using the standard library only, and run one query.

The lab hosts have python3 and nothing else; this lets verify try a login from any of them without
installing a client. Input from the environment (the password never appears on a command line):
PROBE_HOST, PROBE_PORT, PROBE_USER, PROBE_DATABASE, PROBE_PASSWORD; for TLS PROBE_SSLMODE (disable, the
default, or verify-full), PROBE_SSLROOTCERT (the CA file) and PROBE_SSLHOST (the name the certificate must
carry, PROBE_HOST by default: libpq's verify-full, with Python's own host name check).
Prints one JSON object: {"result": "accepted" | "refused" | "error", "message": ..., "row": [...], "tls": ...}.
"accepted" means authenticated and `SELECT current_user, current_database()` answered.
"""
import base64
import hashlib
import hmac
import json
import os
import socket
import ssl
import struct


def _recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("server closed the connection")
        data += chunk
    return data


def _read_message(sock):
    kind = _recv_exact(sock, 1)
    (length,) = struct.unpack("!I", _recv_exact(sock, 4))
    return kind, _recv_exact(sock, length - 4)


def _send(sock, kind, payload):
    sock.sendall(kind + struct.pack("!I", len(payload) + 4) + payload)


def _error_text(payload):
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return "%s: %s" % (fields.get("S", "ERROR"), fields.get("M", ""))


def _start_tls(sock, cafile, server_hostname):
    """PostgreSQL's SSLRequest, then a TLS handshake that verifies the CA and the host name."""
    sock.sendall(struct.pack("!II", 8, 80877103))
    if _recv_exact(sock, 1) != b"S":
        raise ConnectionError("the server does not offer TLS")
    context = ssl.create_default_context(cafile=cafile)
    context.check_hostname = True
    return context.wrap_socket(sock, server_hostname=server_hostname)


def probe(host, port, user, database, password, timeout=5.0, sslmode="disable", sslrootcert=None, sslhost=None):
    sock = socket.create_connection((host, port), timeout=timeout)
    tls = None
    try:
        if sslmode == "verify-full":
            sock = _start_tls(sock, sslrootcert, sslhost or host)
            tls = sock.version()
        params = b"user\0" + user.encode() + b"\0database\0" + database.encode() + b"\0\0"
        startup = struct.pack("!I", 196608) + params
        sock.sendall(struct.pack("!I", len(startup) + 4) + startup)
        nonce = base64.b64encode(os.urandom(18)).decode()
        client_first_bare = "n=,r=" + nonce
        salted = None
        auth_message = b""
        while True:
            kind, payload = _read_message(sock)
            if kind == b"E":
                return {"result": "refused", "message": _error_text(payload)}
            if kind == b"R":
                (code,) = struct.unpack("!I", payload[:4])
                if code == 0:  # AuthenticationOk
                    break
                if code == 10:  # SASL: mechanisms offered
                    if b"SCRAM-SHA-256\0" not in payload[4:]:
                        return {"result": "error", "message": "server does not offer SCRAM-SHA-256"}
                    first = ("n,," + client_first_bare).encode()
                    _send(sock, b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first)
                elif code == 11:  # SASL continue: server-first-message
                    server_first = payload[4:].decode()
                    attrs = dict(item.split("=", 1) for item in server_first.split(","))
                    if not attrs["r"].startswith(nonce):
                        return {"result": "error", "message": "server nonce does not extend ours"}
                    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]),
                                                 int(attrs["i"]))
                    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
                    stored_key = hashlib.sha256(client_key).digest()
                    without_proof = "c=biws,r=" + attrs["r"]
                    auth_message = ",".join([client_first_bare, server_first, without_proof]).encode()
                    signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
                    proof = bytes(a ^ b for a, b in zip(client_key, signature))
                    final = (without_proof + ",p=" + base64.b64encode(proof).decode()).encode()
                    _send(sock, b"p", final)
                elif code == 12:  # SASL final: server signature (checked below)
                    attrs = dict(item.split("=", 1) for item in payload[4:].decode().split(","))
                    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
                    expected = hmac.new(server_key, auth_message, hashlib.sha256).digest()
                    if base64.b64decode(attrs["v"]) != expected:
                        return {"result": "error", "message": "server signature does not match"}
                else:
                    return {"result": "error", "message": "unsupported authentication request %d" % code}
        while True:  # parameter status, backend key, ready for query
            kind, payload = _read_message(sock)
            if kind == b"E":
                return {"result": "refused", "message": _error_text(payload)}
            if kind == b"Z":
                break
        _send(sock, b"Q", b"SELECT current_user, current_database()\0")
        row = None
        while True:
            kind, payload = _read_message(sock)
            if kind == b"E":
                return {"result": "error", "message": _error_text(payload)}
            if kind == b"D":
                (count,) = struct.unpack("!H", payload[:2])
                row, offset = [], 2
                for _ in range(count):
                    (size,) = struct.unpack("!i", payload[offset:offset + 4])
                    offset += 4
                    row.append(payload[offset:offset + size].decode())
                    offset += size
            if kind == b"Z":
                break
        _send(sock, b"X", b"")
        return {"result": "accepted", "message": "authenticated", "row": row, "tls": tls}
    finally:
        sock.close()


def main():
    env = os.environ
    try:
        out = probe(env["PROBE_HOST"], int(env.get("PROBE_PORT", "5432")), env["PROBE_USER"],
                    env["PROBE_DATABASE"], env.get("PROBE_PASSWORD", ""), sslmode=env.get("PROBE_SSLMODE", "disable"),
                    sslrootcert=env.get("PROBE_SSLROOTCERT"), sslhost=env.get("PROBE_SSLHOST"))
    except (OSError, ConnectionError, KeyError, ValueError) as exc:
        out = {"result": "error", "message": "%s: %s" % (type(exc).__name__, exc)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
