# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The options that name and drive one app's nginx file, documented once.

greenflow.platform.nginx_upstream takes them; greenflow.platform.release_cutover passes them on to it
(only those set, so nginx_upstream's defaults, shown here, apply to both).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """Documentation fragment greenflow.platform.nginx."""

    DOCUMENTATION = r"""
options:
  conf_path:
    description:
      - The generated file. Default C(/etc/nginx/conf.d/greenflow-upstream-<app>.conf), with C(-) in
        the app's name written as C(_).
      - One file per app; a file that exists without the module's header is never overwritten.
    type: path
  keepalive:
    description:
      - Idle keep-alive connections to the servers of each pool, cached per nginx worker
        (C(keepalive) directive); 0 disables. The vhost needs C(proxy_http_version 1.1) and
        C(proxy_set_header Connection "") for it to apply.
      - Default 32, or the value in the existing file.
    type: int
  max_fails:
    description:
      - C(max_fails) of every server (0 disables passive health marking). Default 1, or the
        value in the existing file.
    type: int
  fail_timeout:
    description:
      - C(fail_timeout) of every server, in seconds. Default 10, or the value in the existing file.
    type: int
  validate:
    description:
      - Check the new file with C(nginx -t) on the whole configuration before it is put in place
        (nginx_upstream's notes tell how); on failure O(conf_path) is left as it was.
      - With V(false) the new file is renamed into place unchecked.
    type: bool
    default: true
  reload:
    description:
      - Reload nginx (SIGHUP to the master read from the pid file) after a change.
      - If nginx is not running the file is still written and validated, C(reloaded) is
        false and a warning says so.
    type: bool
    default: true
  nginx_bin:
    description: The nginx binary (name in C(PATH) or absolute path).
    type: str
    default: nginx
  nginx_conf:
    description:
      - Main configuration file of the nginx instance to drive, read for its C(pid) directive. The
        test configuration of a change (C(nginx -t -c)) is a copy of it, written for the test in its
        directory, so that directory must be writable too.
    type: path
    default: /etc/nginx/nginx.conf
  nginx_prefix:
    description:
      - Prefix path of the nginx instance (C(-p)), for instances whose config uses relative
        paths. Default the binary's compiled-in prefix.
    type: path
  nginx_pid:
    description:
      - Pid file of the nginx master. Default the C(pid) directive of O(nginx_conf), else the
        binary's compiled-in pid path.
    type: path
  lock_timeout:
    description: Seconds to wait for another run on the same app to release the lock.
    type: int
    default: 60
  reload_timeout:
    description:
      - Seconds to wait, after SIGHUP, for the master to start workers with the new
        configuration. If it does not, the reload is considered failed and the previous file is
        restored.
    type: int
    default: 15
  control_socket:
    description:
      - The unix socket on which nginx takes split changes without a reload (reload-free mode, a file
        in C(split=lua); the nginx_lb role sets it up in a directory only root can enter).
      - When it does not exist, a change that could go live is made with a reload instead.
    type: path
    default: /run/greenflow-nginx/split.sock"""
