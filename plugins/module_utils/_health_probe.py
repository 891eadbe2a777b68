# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Health probes of a colour's servers, all at once: the one probe the cutover (through traffic_window,
on the load balancer) and the rollback use. Pure: the HTTP GET is the caller's ``fetch``."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import time


def probe_urls(urls, timeout, fetch):
    """GET every URL in parallel; ``fetch(url, timeout)`` returns the HTTP status or raises.

    Returns one dict per URL, in the order given: ``url``, ``ok`` (a 2xx answer), ``ms``, and
    ``status`` (an answer) or ``error`` (none: the exception's text, or ``no answer within <t> s``
    when the fetch did not return in time)."""
    results = [None] * len(urls)
    start = time.monotonic()

    def one(index, url):
        began = time.monotonic()
        try:
            status = int(fetch(url, timeout))
        except Exception as exc:  # pylint: disable=broad-except  # any failure to answer is the finding
            results[index] = {"url": url, "ok": False, "error": str(exc) or exc.__class__.__name__,
                              "ms": _ms_since(began)}
            return
        results[index] = {"url": url, "ok": 200 <= status < 300, "status": status, "ms": _ms_since(began)}

    threads = [threading.Thread(target=one, args=(i, url)) for i, url in enumerate(urls)]
    for thread in threads:
        thread.daemon = True  # a fetch that hangs past its timeout must not keep the process alive
        thread.start()
    for index, thread in enumerate(threads):
        thread.join(max(0.0, timeout + 1 - (time.monotonic() - start)))
        if thread.is_alive() or results[index] is None:
            results[index] = {"url": urls[index], "ok": False, "timed_out": True,
                              "error": "no answer within %g s" % timeout, "ms": _ms_since(start)}
    return results


def failure_reason(result):
    """One line for a failed probe: ``HTTP 503``, ``no answer within 2 s`` or ``no answer (<why>)``."""
    if "status" in result:
        return "HTTP %s" % result["status"]
    if result.get("timed_out"):
        return result["error"]
    return "no answer (%s)" % result.get("error")


def _ms_since(began):
    return round(1000 * (time.monotonic() - began), 1)
