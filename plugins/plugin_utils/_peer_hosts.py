# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run modules on other inventory hosts from inside an action plugin, as ``delegate_to`` would.

greenflow.platform.release_cutover runs on the first load balancer of the group (where the release record
lives) and must switch, read and lease every other load balancer at each step, in the same run, so that one
decision covers all of them. An action plugin has only its task's connection; ``PeerHosts`` opens one more per
peer, the way ansible-core's task executor does for a delegated task: the peer's connection plugin
(``ansible_connection``), its options and its shell's from the peer's variables (``hostvars``), and become
when the peer (``ansible_become``) or the task asks for it. ``on(host)`` then points the action's module runs
(``_execute_module``) at that peer for the length of a ``with`` block.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.loader import become_loader


class PeerError(AnsibleError):
    """A peer host is unknown, or no connection to it could be set up."""


class _Plain:
    """The templar the option readers expect: the values come already templated (hostvars does it)."""

    @staticmethod
    def template(value):
        return value


class PeerHosts:
    """Connections to other inventory hosts for one action plugin run. Close them with ``close()``."""

    def __init__(self, action, task_vars):
        self._action = action
        self._task_vars = task_vars
        self._connections = {}

    def _vars_of(self, host):
        hostvars = self._task_vars.get("hostvars") or {}
        if host not in hostvars:
            raise PeerError("%s is not a host of the inventory" % host)
        return hostvars[host]

    @staticmethod
    def _options(peer_vars, plugin_type, name):
        out = {}
        for var_name in C.config.get_plugin_vars(plugin_type, name):
            if var_name in peer_vars:
                out[var_name] = peer_vars[var_name]
        return out

    def _open(self, host):
        action = self._action
        peer_vars = self._vars_of(host)
        play_context = action._play_context.copy()
        conn_type = peer_vars.get("ansible_connection") or action._task.connection or play_context.connection
        play_context.connection = conn_type
        play_context.remote_addr = peer_vars.get("ansible_host") or host
        connection = action._shared_loader_obj.connection_loader.get(
            conn_type, play_context, new_stdin=None, task_uuid=action._task._uuid,
            ansible_playbook_pid=str(os.getppid()))
        if not connection:
            raise PeerError("the connection plugin %r of %s was not found" % (conn_type, host))
        become = peer_vars.get("ansible_become")
        become = boolean(become) if become is not None else action._task.become
        if become:
            method = peer_vars.get("ansible_become_method") or action._task.become_method
            plugin = become_loader.get(method)
            if not plugin:
                raise PeerError("the become plugin %r of %s was not found" % (method, host))
            connection.set_become_plugin(plugin)
        task_keys = action._task.dump_attrs()
        task_keys["timeout"] = play_context.timeout
        task_keys.pop("retries", None)
        if play_context.password:
            task_keys["password"] = play_context.password
        connection.set_options(task_keys=task_keys,
                               var_options=connection._resolve_option_variables(peer_vars, _Plain()))
        connection._shell.set_options(task_keys=task_keys,
                                      var_options=self._options(peer_vars, "shell", connection._shell._load_name))
        if connection.become is not None:
            if play_context.become_pass:
                task_keys["become_pass"] = play_context.become_pass
            connection.become.set_options(
                task_keys=task_keys, var_options=self._options(peer_vars, "become", connection.become._load_name))
        return connection

    def connection(self, host):
        if host not in self._connections:
            try:
                self._connections[host] = self._open(host)
            except PeerError:
                raise
            except Exception as exc:  # pylint: disable=broad-except  # any plugin error: say whose
                raise PeerError("cannot set up a connection to %s: %s" % (host, exc))
        return self._connections[host]

    @contextlib.contextmanager
    def on(self, host):
        """Within the block, the action's module runs go to ``host`` (None: the task's own host)."""
        if host is None:
            yield
            return
        action = self._action
        connection = self.connection(host)
        saved = action._connection, action._play_context
        action._connection, action._play_context = connection, connection._play_context
        try:
            yield
        finally:
            action._connection, action._play_context = saved

    def close(self):
        """Remove what the module runs left on the peers and close their connections (never raises)."""
        for host, connection in list(self._connections.items()):
            try:
                with self.on(host):
                    self._action._remove_tmp_path(connection._shell.tmpdir)
                connection.close()
            except Exception:  # pylint: disable=broad-except  # clean-up only
                pass
        self._connections = {}
