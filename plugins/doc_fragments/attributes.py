# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""What the action attributes of the collection's modules mean, written once.

A module lists ``extends_documentation_fragment: [greenflow.platform.attributes]`` and then states
only its own ``support`` per attribute; ansible-doc merges the two (the module's keys win).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """Documentation fragments named greenflow.platform.attributes[.<lower-case attribute>]."""

    # Every module: check mode and diff mode (the module sets support), and the platform, the same for
    # all of them: they run on the Linux hosts the platform manages.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: In check mode the module changes nothing and reports whether it would have changed something.
  diff_mode:
    description: In diff mode the module returns the change it made (or would make in check mode) as before and after.
  platform:
    description: The target systems the module can run against.
    support: full
    platforms: posix
"""

    # Modules that state whether a second run with the same arguments reports no change.
    IDEMPOTENT = r"""
options: {}
attributes:
  idempotent:
    description:
      - Run twice in a row with the same arguments (outside check mode), the second run reports no change,
        provided nothing else changed the managed state in between.
"""

    # Modules backed by an action plugin of the same name, which runs on the controller.
    ACTION = r"""
options: {}
attributes:
  action:
    description: An action plugin of the same name runs on the controller and drives the module on the target.
  async:
    description: Can run in the background with the C(async) keyword.
"""
