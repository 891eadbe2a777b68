# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One GET for the modules' probes and reads, without open_url's per-call TLS setup for plain HTTP.

``open_url`` builds a TLS context and loads the system's CA bundle on every call, also for an ``http://``
URL it will never use it for: about 0.1 s of CPU on an idle host and more than a second on a busy one, per
URL. The cutover probes and reads every poll (2 s apart), the rollback probes before it switches: plain-HTTP
URLs share one context that is never used; an ``https://`` URL gets open_url's own, as before.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ssl

from ansible.module_utils.six.moves.urllib.error import HTTPError
from ansible.module_utils.urls import Request

_PLAIN_HTTP_CONTEXT = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def get(url, timeout, validate_certs=True):
    """The response of a GET (no redirects followed, no proxy); raises what urllib raises."""
    return Request().open("GET", url, timeout=timeout, follow_redirects="none", use_proxy=False,
                          validate_certs=validate_certs,
                          context=None if url.startswith("https://") else _PLAIN_HTTP_CONTEXT)


def status(url, timeout, validate_certs=True):
    """The HTTP status of a GET (an error status is returned, not raised); raises when there is no answer."""
    try:
        return get(url, timeout, validate_certs).getcode()
    except HTTPError as exc:
        return exc.code
