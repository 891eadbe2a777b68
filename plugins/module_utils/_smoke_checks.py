# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Smoke checks of a new colour before it gets any traffic (pure logic, no Ansible imports).

A check is a request (path, method, body, headers) and what its answer must be (status, a regex the
body must match, regexes response headers must match). ``normalize_checks`` validates the operator's
list before anything changes; ``judge`` compares one answer with its check; ``run_checks`` sends every
check to every endpoint through the caller's ``fetch`` and collects the verdicts.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import threading
import time

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
CHECK_KEYS = ("name", "path", "method", "body", "headers", "status", "body_regex", "response_headers",
              "timeout")
# the most a body is read and shown: a smoke check answers small pages, and a failure message stays short
MAX_BODY_BYTES = 65536
MAX_TIMEOUT = 120.0


class SmokeCheckError(ValueError):
    """A check list that cannot be run; the message names every problem."""


def _regex(value, where, problems):
    try:
        re.compile(value)
    except (re.error, TypeError) as exc:
        problems.append("%s: not a valid regular expression (%s)" % (where, exc))


def _status_list(value, where, problems):
    values = value if isinstance(value, list) else [value]
    out = []
    for item in values:
        try:
            if isinstance(item, bool):
                raise ValueError()
            status = int(item)
            if str(status) != str(item).strip():
                raise ValueError()
        except (TypeError, ValueError):
            problems.append("%s: status must be an HTTP status or a list of them, got %r" % (where, value))
            return []
        if not 100 <= status <= 599:
            problems.append("%s: status %d is not an HTTP status (100-599)" % (where, status))
        out.append(status)
    if not out:
        problems.append("%s: status must not be an empty list" % where)
    return out


def normalize_checks(checks, default_timeout=5.0):
    """Validate and complete the operator's checks. Returns a list of dicts with every key set:
    name, path, method, body (str or None), headers (dict), status (list of ints), body_regex
    (str or None), response_headers (dict header -> regex), timeout (float).
    Raises SmokeCheckError with every problem found."""
    if checks is None:
        return []
    if not isinstance(checks, list):
        raise SmokeCheckError("invalid smoke checks, nothing was sent: they must be a list of checks, got %s"
                              % type(checks).__name__)
    problems = []
    out = []
    names = set()
    for index, check in enumerate(checks, 1):
        where = "check %d" % index
        if not isinstance(check, dict):
            problems.append("%s: must be a dict with at least a path, got %r" % (where, check))
            continue
        unknown = sorted(set(check) - set(CHECK_KEYS))
        path = check.get("path")
        name = str(check.get("name") or "%s %s" % (str(check.get("method") or "GET").upper(), path))
        where = "check %d (%s)" % (index, name)
        if unknown:
            problems.append("%s: unknown keys %s (known: %s)" % (where, ", ".join(unknown), ", ".join(CHECK_KEYS)))
        if not isinstance(path, str) or not path.startswith("/") or any(c.isspace() for c in path):
            problems.append("%s: path must start with / and hold no spaces, got %r" % (where, path))
            path = str(path)
        if name in names:
            problems.append("%s: the name is used twice; give each check its own name" % where)
        names.add(name)
        method = str(check.get("method") or "GET").upper()
        if method not in METHODS:
            problems.append("%s: method must be one of %s, got %r" % (where, ", ".join(METHODS), check.get("method")))
        body = check.get("body")
        if body is not None and not isinstance(body, str):
            problems.append("%s: body must be a string (send JSON as a string), got %s"
                            % (where, type(body).__name__))
        if body is not None and method in ("GET", "HEAD"):
            problems.append("%s: a %s request has no body" % (where, method))
        headers = check.get("headers") or {}
        if not isinstance(headers, dict):
            problems.append("%s: headers must be a dict of header -> value" % where)
            headers = {}
        headers = dict((str(k), str(v)) for k, v in headers.items())
        status = _status_list(check.get("status", 200), where, problems)
        body_regex = check.get("body_regex")
        if body_regex is not None:
            _regex(body_regex, where + " body_regex", problems)
            if method == "HEAD":
                problems.append("%s: a HEAD answer has no body to match body_regex" % where)
        response_headers = check.get("response_headers") or {}
        if not isinstance(response_headers, dict):
            problems.append("%s: response_headers must be a dict of header -> regex" % where)
            response_headers = {}
        for header, pattern in response_headers.items():
            _regex(pattern, "%s response_headers.%s" % (where, header), problems)
        response_headers = dict((str(k), str(v)) for k, v in response_headers.items())
        timeout = check.get("timeout", default_timeout)
        try:
            timeout = float(timeout)
            if not 0 < timeout <= MAX_TIMEOUT:
                raise ValueError()
        except (TypeError, ValueError):
            problems.append("%s: timeout must be > 0 and <= %g seconds, got %r" % (where, MAX_TIMEOUT, timeout))
            timeout = default_timeout
        out.append({"name": name, "path": path, "method": method, "body": body, "headers": headers,
                    "status": status, "body_regex": body_regex, "response_headers": response_headers,
                    "timeout": timeout})
    if problems:
        raise SmokeCheckError("invalid smoke checks, nothing was sent: " + "; ".join(problems))
    return out


def judge(check, status, headers, body):
    """The reasons an answer fails ``check`` (an empty list: it passes).
    ``headers``: dict of the answer's headers (any case); ``body``: text (may be cut)."""
    reasons = []
    if status not in check["status"]:
        reasons.append("HTTP %s, expected %s" % (status, " or ".join(str(s) for s in check["status"])))
    if check["body_regex"] is not None and not re.search(check["body_regex"], body or ""):
        reasons.append("body does not match %r (body: %r)" % (check["body_regex"], (body or "")[:120]))
    lower = dict((str(k).lower(), v) for k, v in (headers or {}).items())
    for header, pattern in sorted(check["response_headers"].items()):
        value = lower.get(header.lower())
        if value is None:
            reasons.append("no %s header (expected to match %r)" % (header, pattern))
        elif not re.search(pattern, value):
            reasons.append("header %s %r does not match %r" % (header, value, pattern))
    return reasons


def run_checks(checks, endpoints, fetch, scheme="http", parallel=8):
    """Send every check to every endpoint; ``fetch(url, check)`` returns (status, headers, body) or raises
    (no answer). At most ``parallel`` requests at once. Returns one result per (check, endpoint), in
    order: check, endpoint, url, ok, status (when answered), ms, reasons."""
    jobs = [(check, endpoint) for check in checks for endpoint in endpoints]
    results = [None] * len(jobs)
    lock = threading.Lock()
    cursor = {"next": 0}

    def worker():
        while True:
            with lock:
                index = cursor["next"]
                cursor["next"] += 1
            if index >= len(jobs):
                return
            check, endpoint = jobs[index]
            url = "%s://%s%s" % (scheme, endpoint, check["path"])
            began = time.monotonic()
            result = {"check": check["name"], "endpoint": endpoint, "url": url}
            try:
                status, headers, body = fetch(url, check)
            except Exception as exc:  # pylint: disable=broad-except  # no answer is the finding
                result.update(ok=False, reasons=["no answer (%s)" % (str(exc) or exc.__class__.__name__)])
            else:
                reasons = judge(check, status, headers, body)
                result.update(ok=not reasons, status=status, reasons=reasons)
            result["ms"] = round(1000 * (time.monotonic() - began), 1)
            results[index] = result

    workers = max(1, min(parallel, len(jobs)))
    threads = [threading.Thread(target=worker) for _worker in range(workers)]
    # a server that trickles its answer could hold a request past its timeout: bound the whole run
    rounds = -(-len(jobs) // workers)
    deadline = time.monotonic() + rounds * (max([c["timeout"] for c in checks] or [0]) + 1) + 1
    for thread in threads:
        thread.daemon = True
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    with lock:
        cursor["next"] = len(jobs)  # workers still out stop after their request
        for index, (check, endpoint) in enumerate(jobs):
            if results[index] is None:
                results[index] = {"check": check["name"], "endpoint": endpoint, "ok": False,
                                  "url": "%s://%s%s" % (scheme, endpoint, check["path"]),
                                  "reasons": ["no answer within %g s" % check["timeout"]]}
    return [dict(r) for r in results]


def summary(results):
    """One line naming every failed check and endpoint, or '' when all passed."""
    bad = [r for r in results if not r["ok"]]
    return "; ".join("%s on %s: %s" % (r["check"], r["endpoint"], ", ".join(r["reasons"])) for r in bad)
