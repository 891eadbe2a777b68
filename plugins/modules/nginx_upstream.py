#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: nginx_upstream
short_description: Weighted blue/green traffic switching of one app on nginx
version_added: 0.1.0
description:
  - Owns one generated nginx file per app (O(conf_path)) holding two upstream pools,
    C(<app>_blue) and C(<app>_green), and a C(split_clients) block that sends each request to
    a pool with the requested share. It never edits a human's C(nginx.conf); the vhost that
    serves the app does C(proxy_pass http://$<app>_backend;) (returned as RV(proxy_pass_target)),
    and the file must be included at C(http) level (C(conf.d/*.conf) is, on Debian).
  - "Why C(split_clients) on C($request_id) and not server weights: nginx weights start at 1,
    so a weight cannot express 0 %, and weights spread over one mixed upstream would let
    C(proxy_next_upstream) retry a failing canary request on the old colour, hiding the canary's
    errors. C($request_id) is 16 random bytes per request, so each request independently lands
    in a pool with exactly the configured probability (no stickiness, same split for every
    worker), retries stay inside the chosen pool, and a pool at 0 % has no entry in the
    C(split_clients) block: it receives no request at all. At 100/0 the variable maps to one
    pool only. The split is random per request: over N requests the observed share deviates
    from the target by about sqrt(p(1-p)/N) (1.1 points at 50 % over 2,000 requests)."
  - "A change never goes live unchecked: the new file is first written beside O(conf_path) under a
    hidden name that no C(include) glob picks up (C(.<file name>.XXXX.candidate); fsync; mode and
    owner of the previous file), then C(nginx -t) checks the whole configuration with the candidate
    in the place of the live file, through a test copy of O(nginx_conf) (see the notes). Only when
    that passes is the candidate renamed over O(conf_path) (atomic), and nginx reloaded."
  - The reload is graceful (SIGHUP to the master; old workers finish their in-flight requests);
    the module waits until the master has started new workers and the old workers have stopped
    accepting connections, so every connection opened after the module returns gets the new
    split (requests still in flight on an old keep-alive connection finish with the old one).
  - When C(nginx -t) fails, O(conf_path) was never touched (the candidate is removed), nginx keeps
    serving the previous split, and the module fails with nginx's own message. When the reload
    fails, the previous file is put back (or the new one removed if there was none).
  - A run that was killed (timeout, lost connection, SIGKILL) leaves at most a candidate and a test
    config behind, never a half-checked live file; the next run on the same file removes them
    (with a warning).
  - Runs on the same app serialize on an C(flock) lock file next to O(conf_path)
    (C(.<file name>.lock)); the validate-and-reload step also takes a lock per directory so that
    two apps sharing one nginx do not validate each other's half-finished change.
  - "Reading only: with neither O(pools) nor O(shares) the module changes nothing and returns
    the current state parsed from the file's C(# greenflow-state:) header (handy for rollback
    and the cutover). With only O(shares), the pools in the file are kept (a pure traffic shift);
    with only O(pools), the shares in the file are kept. O(keepalive), O(max_fails) and
    O(fail_timeout) also keep their values from the file when omitted."
  - The same input twice gives C(changed=false) and no reload.
  - "B(Reload-free switching) (O(split=lua), the nginx_lb role's default): the file keeps the upstream
    blocks and the state header but no C(split_clients); the app's vhost sets C($<app>_backend) per
    request with C(set_by_lua_block) from a C(lua_shared_dict), which nginx seeds from this file's
    C(# greenflow-split:) line whenever it starts or reloads (the role's C(greenflow_split.lua)). A
    change of the shares alone is then the same checked write of the file (candidate, C(nginx -t),
    rename), followed by a C(PUT) on nginx's local control socket (O(control_socket)) that sets the
    new split for every worker at once: no reload, so no idle keep-alive connection of a client is
    closed, and the next request on any connection gets the new split. The result says how the
    change went live (RV(applied)): V(live), V(reload) or V(none)."
  - "A reload still happens when it must: the first install of the file, a change of the pools or
    of O(keepalive), O(max_fails), O(fail_timeout) (they are nginx C(upstream) blocks), a change of
    the split mode, no control socket on the host, or an app the control path does not know yet (its
    file was missing when nginx last started or reloaded). RV(applied_reason) says which."
  - "When the control socket refuses the change (it validates before it changes anything), the
    previous file is put back and the module fails; nginx keeps the previous split. When the socket
    does not answer, the module asks it (C(GET)) what it holds; if that cannot be learnt either, the
    previous file is put back and nginx reloaded, which seeds the split from it again: nginx serves
    the previous split, and the module fails."
author:
  - greenflow platform engineers (@greenflow)
options:
  app:
    description:
      - Name of the app; 1-48 lowercase letters, digits, C(-) and C(_), starting with a letter (the rule
        of the whole collection).
      - Used in the names C(<app>_blue), C(<app>_green) and C($<app>_backend), and in the default
        O(conf_path), with C(-) written as C(_) (nginx variable names cannot take C(-)), so C(my-shop)
        gets C($my_shop_backend). Two apps whose names differ only there (C(my-shop), C(my_shop)) would
        share these names; the second one is refused (the file names the app that owns it).
    type: str
    required: true
  pools:
    description:
      - Servers of each colour, as C(host:port) (IPv4, hostname or C([IPv6])). Colours are
        C(blue) and C(green) only; a missing colour is an empty pool.
      - A pool without servers must have a share of 0 (it gets no upstream block).
      - Omitted, the pools of the existing file are kept.
    type: dict
  shares:
    description:
      - Integer percent of requests per colour, each 0-100, together exactly 100. A missing
        colour is 0.
      - Omitted, the shares of the existing file are kept; with O(pools) and O(split) also omitted the
        module only reads the current state.
    type: dict
  not_after:
    description:
      - A deadline (seconds since the epoch, on the load balancer's clock) after which the change is refused,
        nothing changed. M(greenflow.platform.release_cutover) passes its lease's expiry, so that a cutover
        that stalled between renewing its lease and switching can never switch after the release watchdog
        put traffic back - checked right before the new file goes live, under the app's lock that the
        watchdog's switch takes too.
    type: float
  split:
    description:
      - How nginx splits the requests. V(split_clients) - a C(split_clients) block in the file, every
        change a reload. V(lua) - reload-free, the split in nginx's shared memory (see the description);
        nginx needs the nginx_lb role's reload-free setup (C(nginx_lb_reload_free), the default).
      - Omitted, the mode of the existing file is kept (files without a mode are V(split_clients)); a
        new file gets V(split_clients).
      - A change of the mode is a reload. In V(lua) mode the vhost must set C($<app>_backend) with
        C(set_by_lua_block) (C(nginx -t) fails otherwise, and nothing is changed).
    type: str
    choices: [split_clients, lua]
notes:
  - Check mode computes the new file, the diff and the result, and touches nothing (it does not
    take the lock either, nor run C(nginx -t)).
  - "How the candidate is tested: C(nginx -t -c <test config> [-p <nginx_prefix>]). The test
    config is a copy of O(nginx_conf) in which every C(include) that reaches O(conf_path) (a glob
    such as C(conf.d/*.conf), or an explicit path, at any depth) is spelled out file by file in
    nginx's order, with the candidate in the place of O(conf_path); an included file on the way to
    it is copied and rewritten the same way. It is written in the directory of O(nginx_conf),
    because nginx resolves relative paths from the directory of the C(-c) file, as a hidden
    C(.greenflow-nginx-test-*) file, and removed after the test. The C(pid) and log paths are
    unchanged: C(nginx -t) opens the pid file without truncating or writing it, and the logs for
    appending, so the running master's files keep their content."
  - If no C(include) of O(nginx_conf) reaches O(conf_path), nginx does not load the file; then
    C(nginx -t) checks the configuration as it is, and a warning says so. The same happens when
    the module cannot follow the includes of O(nginx_conf) (e.g. an unbalanced quote, which
    C(nginx -t) then reports).
  - Every input is checked before anything is touched (not even the lock file). A server address
    is written into the nginx file verbatim, so a line break, a tab or a non-ASCII character (such
    as a digit of another script) anywhere in it is refused; shares given as strings take the
    ASCII digits 0-9 only.
  - Run it on the load balancer host, as a user that can write O(conf_path) and signal nginx.
extends_documentation_fragment:
  - greenflow.platform.nginx
  - greenflow.platform.attributes
  - greenflow.platform.attributes.idempotent
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
seealso:
  - name: nginx split_clients
    description: The directive that splits requests between the pools.
    link: https://nginx.org/en/docs/http/ngx_http_split_clients_module.html
  - name: lua-nginx-module
    description: set_by_lua_block, lua_shared_dict and init_by_lua_block (the reload-free split).
    link: https://github.com/openresty/lua-nginx-module
"""

EXAMPLES = r"""
- name: First install of the app on the load balancer, all traffic on blue
  greenflow.platform.nginx_upstream:
    app: demo
    pools:
      blue: ["10.0.0.11:8081", "10.0.0.12:8081"]
      green: ["10.0.0.11:8082", "10.0.0.12:8082"]
    shares:
      blue: 100
      green: 0

- name: Canary - send 5 % of requests to green
  greenflow.platform.nginx_upstream:
    app: demo
    shares:
      blue: 95
      green: 5
  register: canary

- name: Show where the vhost must proxy to
  ansible.builtin.debug:
    msg: "proxy_pass {{ canary.proxy_pass_target }}; (was {{ canary.previous_shares }})"

- name: Read the current split without changing anything
  greenflow.platform.nginx_upstream:
    app: demo
  register: current

- name: Roll back - everything on blue again
  greenflow.platform.nginx_upstream:
    app: demo
    shares:
      blue: 100
      green: 0

- name: Canary without a reload (file in lua mode; the nginx_lb role sets this up)
  greenflow.platform.nginx_upstream:
    app: demo
    split: lua
    shares:
      blue: 75
      green: 25
  register: step

- name: Say how it went live
  ansible.builtin.debug:
    msg: "{{ step.applied }} ({{ step.applied_reason | default('') }})"

- name: Drive an nginx instance with its own config and prefix
  greenflow.platform.nginx_upstream:
    app: demo
    conf_path: /srv/lb/conf/greenflow-upstream-demo.conf
    nginx_conf: /srv/lb/conf/nginx.conf
    nginx_prefix: /srv/lb
    pools:
      blue: ["127.0.0.1:8081"]
      green: ["127.0.0.1:8082"]
    shares:
      blue: 50
      green: 50
"""

RETURN = r"""
conf_path:
  description: The generated file.
  returned: always
  type: str
  sample: /etc/nginx/conf.d/greenflow-upstream-demo.conf
shares:
  description: Shares in effect after the run (the current ones when only reading).
  returned: always
  type: dict
  sample: {"blue": 95, "green": 5}
previous_shares:
  description:
    - Shares read back from the file before the run; empty when the file did not exist.
  returned: always
  type: dict
  sample: {"blue": 100, "green": 0}
pools:
  description: Servers of each pool after the run.
  returned: always
  type: dict
  sample: {"blue": ["10.0.0.11:8081"], "green": ["10.0.0.11:8082"]}
previous_pools:
  description: Servers of each pool before the run; empty when the file did not exist.
  returned: always
  type: dict
  sample: {"blue": ["10.0.0.11:8081"], "green": []}
applied:
  description:
    - How the change reached the running nginx. V(live) - through the control socket, without a reload
      (split V(lua), shares only); V(reload) - nginx reloaded; V(none) - not at all (no change, check
      mode, O(reload=false), or nginx not running, which uses the file when it starts).
  returned: always
  type: str
  sample: live
applied_reason:
  description: Why the change went live that way (e.g. C(pool members changed), C(only the shares changed)).
  returned: when the file was written
  type: str
  sample: only the shares changed
live_serial:
  description: Changes the control path has taken for this app since nginx last seeded it (V(live) only).
  returned: when applied is live
  type: int
  sample: 3
split:
  description: The split mode of the file after the run (V(split_clients) or V(lua); empty when there is no file).
  returned: always
  type: str
  sample: lua
reloaded:
  description: Whether nginx was reloaded (and loaded the new configuration).
  returned: always
  type: bool
  sample: true
validated:
  description: Whether C(nginx -t) ran and passed on the new configuration.
  returned: always
  type: bool
  sample: true
proxy_pass_target:
  description:
    - The exact target a vhost puts after C(proxy_pass) to reach the app; the variable is set by
      the C(split_clients) block in the generated file.
  returned: always
  type: str
  sample: http://$demo_backend
backend_variable:
  description: The nginx variable naming the chosen pool; log it to see the pool per request.
  returned: always
  type: str
  sample: $demo_backend
upstreams:
  description: Names of the upstream blocks in the file (a pool without servers has none).
  returned: always
  type: list
  elements: str
  sample: ["demo_blue", "demo_green"]
timings:
  description:
    - How long the switch took on the load balancer itself, in seconds; the task's wall time adds
      Ansible's own work (connection, module transfer). V(reload_seconds) lasts until the old workers
      stop accepting, so every connection opened afterwards gets the new split. V(control_seconds) (instead
      of V(reload_seconds)) is the control socket call of a change that went live without a reload.
  returned: when the file was written
  type: dict
  sample: {"write_seconds": 0.002, "validate_seconds": 0.041, "reload_seconds": 0.118, "total_seconds": 0.161}

read_only:
  description: True when none of O(pools), O(shares) and O(split) was given and nothing was changed.
  returned: always
  type: bool
  sample: false
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.greenflow.platform.plugins.module_utils import _nginx_switch as switch
from ansible_collections.greenflow.platform.plugins.module_utils._nginx_upstream import UpstreamError


def main():
    argument_spec = dict(
        app=dict(type="str", required=True),
        pools=dict(type="dict"),
        shares=dict(type="dict"),
        not_after=dict(type="float"),
        split=dict(type="str", choices=["split_clients", "lua"]),
    )
    argument_spec.update(switch.argument_spec())
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
    )
    p = module.params
    try:
        switch.check_params(p)
    except UpstreamError as exc:
        module.fail_json(msg=str(exc))
    try:
        if switch.is_read_only(p):
            result = switch.read(p)
        else:
            # the module is the switch's host: run_command, get_bin_path and warn are its own
            result = switch.change(module, p, check_mode=module.check_mode, diff=module._diff)
    except switch.SwitchError as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
