#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: smoke_checks
short_description: Smoke-check every server of a new colour before it gets traffic
version_added: 0.2.0
description:
  - Sends each of O(checks) to each of O(endpoints) (the new colour's servers directly, not through
    nginx) and compares the answer with what the check expects - the status, a regular expression
    the body must match, regular expressions response headers must match.
  - Fails when any check fails on any endpoint; the message names every failed check, endpoint and
    why (the status got, the body that did not match, the missing header). Runs on the load balancer
    in C(deploy.yml), the path nginx's traffic takes.
  - The checks are validated first - an unknown key, a bad regex, a body on a GET - and nothing is
    sent when one is wrong. O(validate_only) stops there.
  - Changes nothing on the target. A check may send a C(POST) to the app; keep such checks free of
    side effects the live colour would mind.
author:
  - greenflow platform engineers (@greenflow)
options:
  endpoints:
    description: The servers, as C(host:port). Required unless O(validate_only).
    type: list
    elements: str
    default: []
  checks:
    description:
      - The checks. Each is a dict with C(path) (required, starts with C(/)), C(name) (default
        C(<METHOD> <path>)), C(method) (default C(GET)), C(body) (a string, not with GET or HEAD),
        C(headers) (request headers), C(status) (expected status or list of them, default C(200)),
        C(body_regex) (searched in the body), C(response_headers) (header name to a regex searched
        in its value) and C(timeout) (seconds, default O(timeout)).
    type: list
    elements: dict
    required: true
  scheme:
    description: How the servers are reached.
    type: str
    choices: [http, https]
    default: http
  validate_certs:
    description: With O(scheme=https), check the servers' certificates.
    type: bool
    default: true
  timeout:
    description: Seconds a check waits for its answer, unless the check sets its own.
    type: float
    default: 5
  validate_only:
    description: Only validate O(checks) and return them completed (RV(checks)); send nothing.
    type: bool
    default: false
extends_documentation_fragment:
  - greenflow.platform.attributes
attributes:
  check_mode:
    support: full
    details: The checks only read; they run in check mode too.
  diff_mode:
    support: none
seealso:
  - module: greenflow.platform.release_cutover
"""

EXAMPLES = r"""
- name: The new colour answers its pages before any traffic moves
  greenflow.platform.smoke_checks:
    endpoints: ["10.0.0.11:8002", "10.0.0.12:8002"]
    checks:
      - path: /version
        body_regex: '^2\.4\.'
      - name: login page
        path: /login
        response_headers:
          Content-Type: text/html
      - name: API accepts an order (dry run)
        path: /api/orders?dry_run=1
        method: POST
        body: '{"sku": "test", "qty": 1}'
        headers:
          Content-Type: application/json
        status: [200, 201]
"""

RETURN = r"""
results:
  description: One per check and endpoint - check (its name), endpoint, url, ok, status, ms, reasons.
  returned: unless O(validate_only)
  type: list
  elements: dict
  sample: [{"check": "GET /version", "endpoint": "10.0.0.11:8002", "url": "http://10.0.0.11:8002/version",
            "ok": false, "status": 500, "ms": 3.2, "reasons": ["HTTP 500, expected 200"]}]
checks:
  description: The checks as validated, every key filled in.
  returned: always
  type: list
  elements: dict
failed_checks:
  description: The results that failed.
  returned: unless O(validate_only)
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.six.moves.urllib.error import HTTPError
from ansible.module_utils.urls import open_url
from ansible_collections.greenflow.platform.plugins.module_utils import _smoke_checks as smoke


def _fetcher(validate_certs):
    def fetch(url, check):
        data = check["body"].encode("utf-8") if check["body"] is not None else None
        try:
            response = open_url(url, method=check["method"], data=data, headers=check["headers"],
                                timeout=check["timeout"], follow_redirects="none", use_proxy=False,
                                validate_certs=validate_certs)
        except HTTPError as exc:  # an answer all the same: 4xx / 5xx
            response = exc
        body = response.read(smoke.MAX_BODY_BYTES) if check["method"] != "HEAD" else b""
        headers = dict(response.headers.items()) if response.headers is not None else {}
        return response.getcode(), headers, body.decode("utf-8", "replace")
    return fetch


def main():
    module = AnsibleModule(
        argument_spec=dict(
            endpoints=dict(type="list", elements="str", default=[]),
            checks=dict(type="list", elements="dict", required=True),
            scheme=dict(type="str", choices=["http", "https"], default="http"),
            validate_certs=dict(type="bool", default=True),
            timeout=dict(type="float", default=5.0),
            validate_only=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        checks = smoke.normalize_checks(p["checks"], default_timeout=p["timeout"])
    except smoke.SmokeCheckError as exc:
        module.fail_json(msg=str(exc))
    if p["validate_only"]:
        module.exit_json(changed=False, checks=checks,
                         msg="%d smoke checks are valid; nothing was sent" % len(checks))
    bad_endpoints = [e for e in p["endpoints"] if not e or "/" in e or any(c.isspace() for c in e)]
    if not p["endpoints"] or bad_endpoints:
        module.fail_json(msg="endpoints must be a non-empty list of host:port, got %r" % (p["endpoints"],),
                         checks=checks)
    results = smoke.run_checks(checks, p["endpoints"], _fetcher(p["validate_certs"]), scheme=p["scheme"])
    failed = [r for r in results if not r["ok"]]
    if failed:
        module.fail_json(msg="smoke checks failed (%d of %d): %s" % (len(failed), len(results), smoke.summary(results)),
                         results=results, failed_checks=failed, checks=checks)
    module.exit_json(changed=False, results=results, failed_checks=[], checks=checks,
                     msg="%d smoke checks passed on %d endpoints" % (len(checks), len(p["endpoints"])))


if __name__ == "__main__":
    main()
