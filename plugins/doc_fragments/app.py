# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The app option of the release modules, documented once (the release model's name rule)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """Documentation fragment greenflow.platform.app."""

    DOCUMENTATION = r"""
options:
  app:
    description: Name of the app; 1-48 lowercase letters, digits, C(-) and C(_), starting with a letter (the rule of the whole collection).
    type: str
    required: true
"""
