# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``nginx -t`` on a candidate file before it goes live (used by nginx_upstream).

Private to this collection (the leading underscore): no stable API promise outside it.

The managed file is part of the real configuration through an include, usually a glob
(``include /etc/nginx/conf.d/*.conf;`` in ``http``). To test its next version without putting it
in place, ``NginxTestConfig`` builds a *test configuration*: a copy of the main config in which each
include that reaches the live file is spelled out file by file, in nginx's order, with the
candidate in the live file's place. When the live file is reached through another included file
(main -> ``sites.conf`` -> ``conf.d/*.conf``), that file is copied and rewritten the same way.
Everything else is the operator's configuration, untouched, so ``nginx -t -c <test main>`` sees
what the reload will see once the candidate is renamed into place. A rewritten include stays on
its line, so nginx's line numbers in other files' messages stay right.

Why the copies sit in the main config's own directory: nginx resolves relative paths (``include``,
``ssl_certificate``, ``mime.types``...) against the directory of the ``-c`` file, its "conf
prefix"; a copy elsewhere would resolve them elsewhere. The ``-p`` prefix (relative ``pid``, logs)
is passed unchanged, and so are the ``pid`` and log directives: ``nginx -t`` opens the pid file
without truncating or writing it (it only checks that it could), and the logs for appending, as
every ``nginx -t`` does, so the running master's files keep their content.

Names: ``.greenflow-nginx-test-<tag>.XXXX`` with a tag per managed file. Hidden, so no include glob
of the operator's (``*.conf``, ``*``) can match them, and per managed file, so that a run removes
what a killed run on the same file left (``remove_leftovers``) and never another run's files.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fnmatch
import glob
import hashlib
import os
import tempfile

from ansible_collections.greenflow.platform.plugins.module_utils._atomic_file import remove_matching

_SPACE = " \t\r\n"
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}
_GLOB_CHARS = "*?["
_MAX_DEPTH = 32


class ConfigBuildError(Exception):
    """The test configuration cannot be built; the message is meant for the operator."""


class ConfSyntaxError(ValueError):
    pass


def statements(text):
    """Every directive ending in ``;`` of an nginx config text, at any depth.

    Returns (words, start, end): ``words`` unquoted and unescaped, ``text[start:end]`` the
    directive from its name through its ``;``. Reads like nginx's ngx_conf_read_token: ``#`` starts
    a comment only at the start of a word, a quote opens a string only at the start of a word, a
    backslash escapes the next character, ``${`` belongs to the word.
    """
    out = []
    words = []
    start = None
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _SPACE:
            i += 1
            continue
        if ch == "#":
            nl = text.find("\n", i)
            i = n if nl < 0 else nl + 1
            continue
        if ch in ";{}":
            if ch == ";" and words:
                out.append((words, start, i + 1))
            words, start = [], None
            i += 1
            continue
        if start is None:
            start = i
        buf = []
        if ch in "\"'":
            j = i + 1
            while j < n and text[j] != ch:
                if text[j] == "\\" and j + 1 < n and text[j + 1] in _ESCAPES:
                    buf.append(_ESCAPES[text[j + 1]])
                    j += 2
                    continue
                buf.append(text[j])
                j += 1
            if j >= n:
                raise ConfSyntaxError("unbalanced %s quote" % ch)
            i = j + 1
        else:
            j = i
            while j < n:
                c = text[j]
                if c == "\\" and j + 1 < n:
                    buf.append(_ESCAPES.get(text[j + 1], "\\" + text[j + 1]))
                    j += 2
                    continue
                if c == "{" and j > i and text[j - 1] == "$":
                    buf.append(c)  # "${name}": a variable, not a block
                    j += 1
                    continue
                if c in _SPACE or c in ";{":
                    break
                buf.append(c)
                j += 1
            i = j
        words.append("".join(buf))
    return out


def _expand(pattern):
    """The files an ``include`` of absolute ``pattern`` reads, in nginx's order.

    nginx calls glob(3) without GLOB_NOSORT and never sets a locale: byte order. Like Python's
    glob, ``*`` does not match a leading dot.
    """
    if not any(c in pattern for c in _GLOB_CHARS):
        return [pattern]
    return sorted(glob.glob(pattern), key=os.fsencode)


def _glob_would_match(pattern, path):
    """Whether glob ``pattern`` matches ``path`` even if ``path`` does not exist (a first write)."""
    pparts = os.path.normpath(pattern).split(os.sep)
    cparts = os.path.normpath(path).split(os.sep)
    if len(pparts) != len(cparts):
        return False
    for p, c in zip(pparts, cparts):
        if c.startswith(".") and not p.startswith("."):
            return False
        if not fnmatch.fnmatchcase(c, p):
            return False
    return True


def _quote(path):
    return '"%s"' % path.replace("\\", "\\\\").replace('"', '\\"')


def tag_for(live_path):
    """Short, stable tag of a managed file (its real path) for the test files' names."""
    real = os.path.realpath(live_path)
    return hashlib.sha1(real.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def _prefix(live_path):
    return ".greenflow-nginx-test-%s." % tag_for(live_path)


def remove_leftovers(main_conf, live_path):
    """Remove test files that a killed run on ``live_path`` left next to ``main_conf``.

    Call it holding ``live_path``'s lock: only a run holding it creates such files.
    Returns the names removed.
    """
    prefix = _prefix(live_path)
    return remove_matching(os.path.dirname(os.path.abspath(main_conf)), lambda name: name.startswith(prefix))


class NginxTestConfig:
    """The test configuration of one candidate: ``build()``, run nginx -t, ``cleanup()``."""

    def __init__(self, main_conf, live_path, candidate):
        self.main_conf = os.path.abspath(main_conf)
        self.conf_prefix = os.path.dirname(self.main_conf)
        self.live = os.path.abspath(live_path)
        self.live_real = os.path.realpath(self.live)
        self.candidate = candidate
        self.prefix = _prefix(live_path)
        self.written = []  # test files to remove
        self.stands_for = {candidate: self.live}  # test file -> the file it stands for
        self.reached = False
        self.unreadable = None  # why the main config's includes could not be followed
        self._done = {}  # real path -> its test copy (None: does not reach the live file)
        self._stack = []  # real paths being rewritten (an include cycle stops there)

    def _is_live(self, path):
        return os.path.normpath(path) == self.live or os.path.realpath(path) == self.live_real

    def _write(self, text, stands_for):
        try:
            fd, path = tempfile.mkstemp(dir=self.conf_prefix, prefix=self.prefix)
        except OSError as exc:
            raise ConfigBuildError(
                "cannot create the test configuration in %s, the directory of the main config (nginx "
                "resolves relative paths from there): %s" % (self.conf_prefix, exc.strerror))
        self.written.append(path)
        self.stands_for[path] = stands_for
        try:
            with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write(text)
        except (IOError, OSError) as exc:
            raise ConfigBuildError("cannot write the test configuration %s: %s" % (path, exc.strerror))
        return path

    def _copy_of(self, path):
        """The test copy of included file ``path`` if it reaches the live file, else None.

        Each file is read once (a file included from several places gets one copy), and a file
        that includes itself, directly or not, is not followed again: nginx -t reports the loop.
        """
        real = os.path.realpath(path)
        if real in self._done:
            return self._done[real]
        if real in self._stack or len(self._stack) > _MAX_DEPTH:
            return None
        self._stack.append(real)
        try:
            text = self._rewrite(path)
        except (IOError, OSError, ConfSyntaxError):
            text = None  # nginx -t reads it itself and reports what is wrong with it
        finally:
            self._stack.pop()
        copy = None if text is None else self._write(text, path)
        self._done[real] = copy
        return copy

    def _rewrite(self, path):
        """The text of ``path`` with the live file replaced, or None if it does not reach it."""
        # any bytes round-trip (surrogateescape): a copy must say what the original says,
        # whatever the encoding of its comments and whatever the locale the module runs in
        with open(path, "r", encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
        found = statements(text)
        edits = []
        for words, start, end in found:
            if words[0] != "include" or len(words) != 2:
                continue
            pattern = words[1]
            if not os.path.isabs(pattern):
                pattern = os.path.join(self.conf_prefix, pattern)
            files = _expand(pattern)
            if (any(c in pattern for c in _GLOB_CHARS) and not any(self._is_live(f) for f in files)
                    and _glob_would_match(pattern, self.live)):
                files = sorted(files + [self.live], key=os.fsencode)
            parts, touched = [], False
            for f in files:
                if self._is_live(f):
                    parts.append(self.candidate)
                    touched = True
                    continue
                copy = self._copy_of(f) if os.path.isfile(f) else None
                if copy is None:
                    parts.append(f)
                else:
                    parts.append(copy)
                    touched = True
            if touched:
                # same line count, so nginx's line numbers after this directive stay right
                spelled = " ".join("include %s;" % _quote(p) for p in parts)
                edits.append((start, end, spelled + "\n" * text.count("\n", start, end)))
        if not edits:
            return None
        for start, end, new in reversed(edits):
            text = text[:start] + new + text[end:]
        return text

    def build(self):
        """Write the test configuration; returns its main file, or None when no include of the
        main config (directly or through included files) reaches the live file, or when the main
        config's includes cannot be followed (``unreadable`` says why; nginx -t on the real
        config then reports the error, if it is one)."""
        self._stack.append(os.path.realpath(self.main_conf))
        try:
            text = self._rewrite(self.main_conf)
        except (IOError, OSError) as exc:
            raise ConfigBuildError("cannot read %s: %s" % (self.main_conf, exc.strerror))
        except ConfSyntaxError as exc:
            self.unreadable = str(exc)
            return None
        if text is None:
            return None
        self.reached = True
        return self._write(text, self.main_conf)

    def translate(self, message):
        """nginx's message with the test files' names replaced by the files they stand for."""
        for path in sorted(self.stands_for, key=len, reverse=True):
            message = message.replace(path, self.stands_for[path])
        return message

    def cleanup(self):
        """Remove the test files; those that cannot be removed are left for remove_leftovers."""
        left = []
        for path in self.written:
            try:
                os.unlink(path)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    left.append(path)
        self.written = left
