#!/usr/bin/env python3
"""Send a bounded burst of HTTPS requests and print the count per status as JSON.

Usage: burst.py HOST PORT [CONNECTIONS] [REQUESTS_PER_CONNECTION]
Keep-alive connections in parallel (default 8 x 100 = 800 requests, a few seconds); each request
times out after 5 s; the certificate is not checked (the lab's is self-signed).
"""
import collections
import concurrent.futures
import http.client
import json
import ssl
import sys

host, port = sys.argv[1], int(sys.argv[2])
conns = int(sys.argv[3]) if len(sys.argv) > 3 else 8
per_conn = int(sys.argv[4]) if len(sys.argv) > 4 else 100
ctx = ssl._create_unverified_context()


def run(_):
    out = collections.Counter()
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=5)
    for _ in range(per_conn):
        try:
            conn.request("GET", "/health")
            resp = conn.getresponse()
            resp.read()
            out[str(resp.status)] += 1
        except (OSError, http.client.HTTPException) as exc:
            out[type(exc).__name__] += 1
            conn.close()
            conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=5)
    conn.close()
    return out


total = collections.Counter()
with concurrent.futures.ThreadPoolExecutor(conns) as pool:
    for counts in pool.map(run, range(conns)):
        total.update(counts)
print(json.dumps(dict(total), sort_keys=True))
