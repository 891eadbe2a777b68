"""Run inside a lab host (python3 only, standard library): try every TCP target given at once and print
one JSON object per target. Input: a JSON list of [address, port] on stdin's first line; optional
argv[1], the connect timeout in seconds.

    reachable  the port answered: connected, or refused (a reset - the host let the packet in and no
               one listens: the firewall did not drop it)
    blocked    no answer within the timeout (dropped)
    error      anything else (no route, ...)

Also sends UDP datagrams: lines of [address, port, "udp", count] send `count` datagrams (their fate is
read on the target from nftables counters, see test_firewall.py)."""
import errno
import json
import socket
import sys
import threading

TIMEOUT = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0


def tcp(address, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        code = sock.connect_ex((address, port))
    except socket.timeout:
        return "blocked", "timeout"
    finally:
        sock.close()
    if code == 0:
        return "reachable", "connected"
    if code == errno.ECONNREFUSED:
        return "reachable", "refused"
    if code in (errno.EAGAIN, errno.ETIMEDOUT, errno.EINPROGRESS):
        return "blocked", "timeout"
    return "error", errno.errorcode.get(code, str(code))


def udp(address, port, count):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(count):
            sock.sendto(b"greenflow-firewall-probe", (address, port))
        return "sent", str(count)
    except OSError as exc:
        return "error", str(exc)
    finally:
        sock.close()


def main():
    targets = json.loads(sys.stdin.readline())
    results = [None] * len(targets)

    def one(index, target):
        if len(target) > 2 and target[2] == "udp":
            results[index] = udp(target[0], int(target[1]), int(target[3]))
        else:
            results[index] = tcp(target[0], int(target[1]))

    threads = [threading.Thread(target=one, args=(i, t)) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT + 5)
    print(json.dumps([{"target": t, "result": (r or ("error", "no result"))[0], "detail": (r or ("", ""))[1]}
                      for t, r in zip(targets, results)]))


if __name__ == "__main__":
    main()
