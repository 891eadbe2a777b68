# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Traffic statistics from nginx's JSON access log (pure logic, no Ansible imports).

The log has one JSON object per line (``log_format ... escape=json``) with at least
``msec``, ``status``, ``upstream_addr``, ``upstream_status`` and ``upstream_response_time``;
other fields are optional. Values are strings, or unquoted numbers (``"status":$status``).
``match`` keeps only lines whose fields equal given values (e.g. ``{"app": "demo"}`` when
several apps share one log); the others are counted as ``unmatched``.

Attribution
    A request belongs to the pool whose ``host:port`` list contains the *last* element of
    ``upstream_addr`` (after retries nginx writes ``a, b`` or ``a : b``; the last server is the
    one whose answer the client got). The pool lists may also hold nginx upstream *group names*:
    when every server of a group is unavailable nginx writes the group name instead of an address.

Unattributed requests
    ``upstream_addr`` ``-`` (nginx answered by itself: 404 of a static location, ``return``,
    ``limit_req`` 503, a 502 with no upstream reached) or an address that is in no pool. They are
    counted in their own bucket, never in a pool's numbers; ``no_upstream`` / ``no_upstream_5xx``
    count the ``-`` ones. What they mean for a gate is decided by the caller (see
    ``candidate_view``): the cutover counts **5xx with no upstream** as failures of the new colour
    (fail safe: an unexplained server error during a canary is blamed on what changed); answers
    from addresses in no pool (another app's servers) and non-5xx answers are ignored.

Error
    A request is an error when its final status is 5xx: the last ``upstream_status`` when it is a
    number, else the ``status`` nginx sent to the client.

Latency
    The last element of ``upstream_response_time`` (seconds) in milliseconds: the time of the
    server that answered. ``-`` gives no latency sample. Percentiles use the nearest-rank method on
    the sorted samples (p95 of 20 samples is the 19th smallest), so a percentile is always a
    value that was really measured.

Windows
    ``since`` keeps lines whose ``msec`` is >= since (epoch seconds). A saved ``position``
    (``{"inode": .., "offset": ..}``) continues where a previous read stopped, across log
    rotation: when the log's inode differs from the saved one or the log is shorter than the
    saved offset, the rest of the rotated file (``<log>.1``) is read from the saved offset and then
    the new log from 0. An incomplete last line of the live log is not consumed (the returned
    offset stops before it) and is read again next time; an incomplete last line of the rotated
    file is counted as ``partial`` (nginx will not finish it there).
"""

from __future__ import absolute_import, division, print_function

import json
import math
import os
from collections import Counter
from operator import itemgetter

__metaclass__ = type

READ_CHUNK = 4 * 1024 * 1024
ROTATED_SUFFIX = ".1"
PERCENTILES = (50, 95, 99)


def last_element(value):
    """Return the last element of an nginx upstream_* list value, as a string.

    nginx separates retries with ", " and internal redirects with " : "; both end with a space and
    no element contains a space, so the last element is what follows the last space.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value)
    idx = value.rfind(" ")
    if idx >= 0:
        value = value[idx + 1:]
    return value


def percentile(hist_items, total, pct):
    """Nearest-rank percentile of a histogram given as ascending (value, count) pairs."""
    if total <= 0:
        return None
    rank = int(math.ceil(pct / 100.0 * total))
    rank = min(max(rank, 1), total)
    seen = 0
    for value, count in hist_items:
        seen += count
        if seen >= rank:
            return value
    return hist_items[-1][0]


def percentile_of_list(values, pct):
    """Nearest-rank percentile of a plain list of numbers (None when empty)."""
    items = sorted(values)
    return percentile([(v, 1) for v in items], len(items), pct)


class _Bucket:
    """Counters of one pool (or of the unattributed requests)."""

    __slots__ = ("requests", "errors", "retried", "statuses", "latency", "no_upstream",
                 "no_upstream_5xx")

    def __init__(self):
        self.requests = 0
        self.errors = 0
        self.retried = 0
        self.statuses = {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0, "other": 0}
        self.latency = {}  # milliseconds -> count (nginx writes ms resolution: few distinct keys)
        self.no_upstream = 0      # upstream_addr "-" (or absent): nginx answered by itself
        self.no_upstream_5xx = 0

    def summary(self, thresholds_ms=(), histogram=False):
        items = sorted(self.latency.items())
        total = sum(self.latency.values())
        out = {
            "requests": self.requests,
            "errors_5xx": self.errors,
            "error_rate": (self.errors / self.requests) if self.requests else None,
            "retried": self.retried,
            "statuses": dict(self.statuses),
            "latency_samples": total,
        }
        for pct in PERCENTILES:
            value = percentile(items, total, pct)
            out["p%d_ms" % pct] = round(value, 3) if value is not None else None
        out["max_ms"] = round(items[-1][0], 3) if items else None
        out["over_ms"] = dict(
            (threshold_key(t), sum(c for v, c in items if v >= float(t))) for t in thresholds_ms
        )
        if histogram:
            # [[ms, count], ...] ascending: what merge_windows needs for exact percentiles over several logs
            out["latency_histogram"] = [[v, c] for v, c in items]
        return out

    def add_summary(self, summary):
        """Add a pool summary written with ``histogram`` (merge_windows)."""
        self.requests += summary.get("requests") or 0
        self.errors += summary.get("errors_5xx") or 0
        self.retried += summary.get("retried") or 0
        for key, count in (summary.get("statuses") or {}).items():
            self.statuses[key] = self.statuses.get(key, 0) + (count or 0)
        for value, count in summary.get("latency_histogram") or []:
            self.latency[value] = self.latency.get(value, 0) + count
        self.no_upstream += summary.get("no_upstream") or 0
        self.no_upstream_5xx += summary.get("no_upstream_5xx") or 0


def threshold_key(value):
    """The key under which ``over_ms`` reports a threshold (500 -> "500", 0.5 -> "0.5")."""
    value = float(value)
    if value.is_integer():
        return str(int(value))
    return repr(value)


_STATUS_CLASS = {"1": "1xx", "2": "2xx", "3": "3xx", "4": "4xx", "5": "5xx"}
_DECODER = json.JSONDecoder()
_INF = float("inf")
_BLOCK = 4096
_get_msec = itemgetter("msec")
_get_status = itemgetter("status")


def _as_text(value):
    """A field value as the string nginx wrote (JSON numbers come back as numbers)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _scalar(value):
    if value is None or isinstance(value, (str, int, float)):
        return value
    return json.dumps(value, sort_keys=True)


class TrafficStats:
    """Accumulates log lines into per-pool counters.

    Lines are handled in blocks: a block of well-formed lines is parsed by one C-level
    ``json.loads`` call and counted with ``collections.Counter`` (the distinct
    (address, status) and (address, latency) pairs are few); a block with anything unusual
    (a line that is not one JSON object, a missing field, a non-finite time) is parsed again line
    by line, so every bad line is counted as malformed and the good ones still count.
    """

    def __init__(self, pools=None, since=None, host=None, match=None):
        self.pools = dict(pools or {})
        self.addr_to_pool = {}
        for colour, members in self.pools.items():
            for member in members or []:
                self.addr_to_pool[str(member)] = colour
        self.buckets = dict((colour, _Bucket()) for colour in self.pools)
        self.unattributed = _Bucket()
        self.since = float(since) if since is not None else None
        # only lines whose fields equal these values count (compared as strings)
        self.match = dict((str(k), _as_text(v)) for k, v in (match or {}).items())
        if host is not None:
            self.match["host"] = _as_text(host)
        self.lines = 0          # complete lines seen (including blank, malformed, filtered)
        self.malformed = 0      # not one JSON object, or msec / status missing or unusable
        self.partial = 0        # unterminated last line of a rotated file (never finished)
        self.blank = 0
        self.before_since = 0
        self.unmatched = 0      # filtered out by ``match``
        self.first_msec = None
        self.last_msec = None
        self.malformed_samples = []
        self._outcomes = Counter()   # (upstream_addr, upstream_status, status) -> requests
        self._latencies = Counter()  # (upstream_addr, upstream_response_time) -> requests
        self._settled = True

    # -- lines ------------------------------------------------------------------------------
    def add_line(self, raw):
        """Account one complete log line (bytes or str, without the newline)."""
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        self.add_lines([raw])

    def add_lines(self, lines):
        """Account complete log lines (str, without newlines)."""
        self.lines += len(lines)
        for i in range(0, len(lines), _BLOCK):
            block = lines[i:i + _BLOCK]
            good = [line for line in block if line[:1] == "{" and line[-1:] == "}"]
            if len(good) != len(block):
                # cannot be one JSON object each: blank, cut or garbage (counted there)
                self._slow_block([line for line in block
                                  if not (line[:1] == "{" and line[-1:] == "}")])
            if good and not self._split_block(good) and not self._json_block(good):
                self._slow_block(good)

    def _split_block(self, block):
        """The common case, all in C: nginx's ``escape=json`` lines (no backslash) of one
        log_format, so every line has the same keys in the same order and the same quotes.
        Joined with '"' and split on '"', line i is tokens[i*s:(i+1)*s]; keys, string values and
        the punctuation between them sit at fixed positions, and comparing each column with the
        first line's validates every line. Unquoted values (``"status":$status``) sit in the
        punctuation tokens and must be numbers. Anything else: False (full JSON parsing)."""
        text = '"'.join(block)
        if "\\" in text:
            return False
        n = len(block)
        q = block[0].count('"')
        if q == 0 or q % 2:
            return False
        s = q + 1
        tokens = text.split('"')
        if len(tokens) != n * s:
            return False
        tmpl = tokens[:s]
        if tmpl[0] != "{":
            return False
        fields = {}
        const = [0]
        literals = []
        j = 1
        while True:
            if j + 1 >= s:
                return False
            const.append(j)                        # the key
            sep = tmpl[j + 1]
            if sep == ":":                         # "key":"value"
                if j + 3 >= s:
                    return False
                fields[tmpl[j]] = (False, j + 2)
                const.append(j + 1)
                const.append(j + 3)
                nxt = tmpl[j + 3]
                if nxt == "}":
                    if j + 3 != s - 1:
                        return False
                    break
                if nxt != ",":
                    return False
                j += 4
            elif len(sep) > 2 and sep[0] == ":" and sep[-1] in ",}":   # "key":123,
                fields[tmpl[j]] = (True, j + 1)
                literals.append(j + 1)
                if sep[-1] == "}":
                    if j + 1 != s - 1:
                        return False
                    break
                j += 2
            else:
                return False
        for pos in const:
            if tokens[pos::s] != [tmpl[pos]] * n:
                return False
        try:
            for pos in literals:
                end = tmpl[pos][-1]
                col = tokens[pos::s]
                if not all(t[0] == ":" and t[-1] == end for t in col):
                    return False
                list(map(float, [t[1:-1] for t in col]))  # ValueError unless numbers
        except ValueError:
            return False

        def column(name):
            hit = fields.get(name)
            if hit is None:
                return [None] * n
            literal, pos = hit
            col = tokens[pos::s]
            return [t[1:-1] for t in col] if literal else col

        if "msec" not in fields or "status" not in fields:
            return False  # line by line: each one is counted as malformed
        matches = [(column(k), v) for k, v in self.match.items()]
        return self._feed(column("msec"), column("upstream_addr"), column("upstream_status"),
                          column("status"), column("upstream_response_time"), matches,
                          strings=True)

    def _json_block(self, block):
        """Lines with escapes or other shapes: one C-level json.loads for the whole block."""
        try:
            recs = json.loads("[" + ",".join(block) + "]")
            if len(recs) != len(block):
                return False
            msecs = list(map(_get_msec, recs))
            statuses = list(map(_get_status, recs))
        except (ValueError, KeyError, TypeError):
            return False

        def column(name):
            return [rec.get(name) for rec in recs]

        matches = [([_as_text(x) for x in column(k)], v) for k, v in self.match.items()]
        return self._feed(msecs, column("upstream_addr"), column("upstream_status"), statuses,
                          column("upstream_response_time"), matches)

    def _feed(self, msecs, addrs, ustatuses, statuses, rts, matches, strings=False):
        """Count columns of a block of parsed lines. False (nothing counted) when a value is
        unusable, so that the caller falls back to line by line."""
        try:
            msecs = list(map(float, msecs))
            if not -_INF < sum(msecs) < _INF:
                return False
            if not strings:  # JSON may hold lists or objects where strings belong
                hash(tuple(addrs) + tuple(ustatuses) + tuple(statuses) + tuple(rts))
        except (ValueError, TypeError, OverflowError):
            return False
        outcomes = zip(addrs, ustatuses, statuses)
        latencies = zip(addrs, rts)
        n = len(msecs)
        if n and ((self.since is not None and min(msecs) < self.since) or matches):
            outcomes = list(outcomes)
            latencies = list(latencies)
        if self.since is not None and n and min(msecs) < self.since:
            since = self.since
            if max(msecs) < since:
                self.before_since += n
                return True
            keep = [i for i in range(n) if msecs[i] >= since]
            self.before_since += n - len(keep)
            msecs = [msecs[i] for i in keep]
            outcomes = [outcomes[i] for i in keep]
            latencies = [latencies[i] for i in keep]
            matches = [([col[i] for i in keep], want) for col, want in matches]
            n = len(msecs)
        if matches:
            if len(matches) == 1:
                col, want = matches[0]
                keep = [i for i in range(n) if col[i] == want]
            else:
                keep = [i for i in range(n) if all(col[i] == want for col, want in matches)]
            if len(keep) != n:
                self.unmatched += n - len(keep)
                msecs = [msecs[i] for i in keep]
                outcomes = [outcomes[i] for i in keep]
                latencies = [latencies[i] for i in keep]
        self._account(msecs, outcomes, latencies)
        return True

    def _slow_block(self, block):
        """Line by line: every line that is not one JSON object with msec and status is
        counted as malformed (or blank)."""
        decode = _DECODER.raw_decode
        msecs, outcomes, latencies = [], [], []
        for raw in block:
            try:
                rec, end = decode(raw)
                if end != len(raw) and raw[end:].strip():
                    raise ValueError("trailing data after the JSON object")
                if not isinstance(rec, dict):  # the decoder makes plain dicts only
                    raise ValueError("not a JSON object")
                msec = float(rec["msec"])
                if not -_INF < msec < _INF:
                    raise ValueError("msec is not finite")
                status = rec["status"]
            except (ValueError, KeyError, TypeError, OverflowError) as exc:
                if not raw or raw.isspace():
                    self.blank += 1
                else:
                    self._malformed(raw, exc)
                continue
            if self.since is not None and msec < self.since:
                self.before_since += 1
                continue
            if self.match and any(_as_text(rec.get(k)) != v for k, v in self.match.items()):
                self.unmatched += 1
                continue
            addr = _scalar(rec.get("upstream_addr"))
            msecs.append(msec)
            outcomes.append((addr, _scalar(rec.get("upstream_status")), _scalar(status)))
            latencies.append((addr, _scalar(rec.get("upstream_response_time"))))
        self._account(msecs, outcomes, latencies)

    def _account(self, msecs, outcomes, latencies):
        if msecs:
            lo, hi = min(msecs), max(msecs)
            if self.first_msec is None or lo < self.first_msec:
                self.first_msec = lo
            if self.last_msec is None or hi > self.last_msec:
                self.last_msec = hi
        self._outcomes.update(outcomes)
        self._latencies.update(latencies)
        self._settled = False

    def _pool_of(self, addr_full):
        """(bucket, retried) for an upstream_addr value."""
        addr = last_element(addr_full)
        colour = self.addr_to_pool.get(addr) if addr is not None else None
        bucket = self.buckets[colour] if colour is not None else self.unattributed
        retried = addr_full is not None and addr != (
            addr_full if isinstance(addr_full, str) else str(addr_full))
        return bucket, retried

    @staticmethod
    def _latency_ms(value):
        last = last_element(value)
        if last is None or last == "-":
            return None
        try:
            ms = float(last) * 1000.0
        except ValueError:
            return None
        if not 0.0 <= ms < _INF:
            return None
        return ms

    def _settle(self):
        """Turn the distinct (address, status) and (address, latency) counts into buckets."""
        if self._settled:
            return
        self.buckets = dict((colour, _Bucket()) for colour in self.pools)
        self.unattributed = _Bucket()
        for (addr_full, ustatus, status), count in self._outcomes.items():
            bucket, retried = self._pool_of(addr_full)
            final = last_element(ustatus)
            if not final or not final.isdigit():
                final = status if isinstance(status, str) else str(status)
            klass = _STATUS_CLASS.get(final[:1], "other") if (
                len(final) == 3 and final.isdigit()) else "other"
            bucket.requests += count
            bucket.statuses[klass] += count
            if klass == "5xx":
                bucket.errors += count
            if addr_full in (None, "-", ""):
                bucket.no_upstream += count
                if klass == "5xx":
                    bucket.no_upstream_5xx += count
            if retried:
                bucket.retried += count
        for (addr_full, rt), count in self._latencies.items():
            ms = self._latency_ms(rt)
            if ms is None:
                continue
            bucket = self._pool_of(addr_full)[0]
            bucket.latency[ms] = bucket.latency.get(ms, 0) + count
        self._settled = True

    def _malformed(self, raw, exc):
        self.malformed += 1
        if len(self.malformed_samples) < 5:
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8", "replace")
            self.malformed_samples.append({"line": raw[:200], "error": str(exc)[:120]})

    # -- results ----------------------------------------------------------------------------
    def result(self, thresholds_ms=(), histogram=False):
        self._settle()
        return {
            "pools": dict(
                (colour, bucket.summary(thresholds_ms, histogram)) for colour, bucket in self.buckets.items()
            ),
            "unattributed": dict(self.unattributed.summary(thresholds_ms, histogram),
                                 no_upstream=self.unattributed.no_upstream,
                                 no_upstream_5xx=self.unattributed.no_upstream_5xx),
            "lines": self.lines,
            "malformed": self.malformed,
            "malformed_samples": list(self.malformed_samples),
            "partial": self.partial,
            "blank": self.blank,
            "before_since": self.before_since,
            "unmatched": self.unmatched,
            "first_msec": self.first_msec,
            "last_msec": self.last_msec,
        }


# -- reading the file ---------------------------------------------------------------------------

def _file_id(st):
    return {"inode": st.st_ino, "dev": st.st_dev}


def _read_lines(path, offset, stats, max_lines, final):
    """Feed complete lines of ``path`` from ``offset`` into ``stats``.

    Returns (new_offset, lines_fed, hit_limit). When ``final`` is true (a rotated file that will
    not grow any more), an unterminated last line is counted as partial and consumed.
    """
    fed = 0
    pos = offset
    add = stats.add_lines
    with open(path, "rb") as fh:
        fh.seek(offset)
        rest = b""
        while True:
            chunk = fh.read(READ_CHUNK)
            if not chunk:
                break
            data = rest + chunk if rest else chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 1:]
            block = data[:cut]
            if max_lines is not None and fed + block.count(b"\n") + 1 > max_lines:
                take = max_lines - fed
                blines = block.split(b"\n")[:take]
                add([line.decode("utf-8", "replace") for line in blines])
                pos += sum(len(line) + 1 for line in blines)
                fed += take
                return pos, fed, True
            lines = block.decode("utf-8", "replace").split("\n")
            add(lines)
            fed += len(lines)
            pos += cut + 1
        if rest and final:
            stats.partial += 1
            pos += len(rest)
    return pos, fed, False


def read_window(log_path, pools=None, since=None, position=None, max_lines=None, host=None,
                match=None,
                thresholds_ms=(), from_end=False, rotated_suffix=ROTATED_SUFFIX, histogram=False):
    """Read a window of the access log and return statistics plus the position to go on from.

    ``position`` is a dict from a previous result (``inode``, ``offset``; ``dev`` optional).
    ``from_end`` skips all existing complete lines and returns only the position of the end (use it
    to mark the start of a window). Missing log file: empty window, ``position`` None. ``histogram``
    adds each pool's latency histogram (``latency_histogram``), for merge_windows.
    """
    stats = TrafficStats(pools=pools, since=since, host=host, match=match)
    info = {"rotated": False, "rotation_gap": False, "truncated": False, "files": []}
    try:
        st = os.stat(log_path)
    except OSError:
        st = None

    remaining = max_lines
    new_position = None
    if position is not None:
        pos_inode = int(position.get("inode"))
        pos_offset = int(position.get("offset", 0))
        if pos_offset < 0:
            raise ValueError("position.offset must be >= 0")
        same_file = st is not None and st.st_ino == pos_inode and st.st_size >= pos_offset
        if same_file:
            start_offset = pos_offset
        else:
            # Rotated (new inode) or truncated (copytruncate): finish the old file first.
            info["rotated"] = True
            start_offset = 0
            rotated = log_path + rotated_suffix
            try:
                rst = os.stat(rotated)
            except OSError:
                rst = None
            if rst is None:
                info["rotation_gap"] = True
            else:
                if rst.st_ino == pos_inode or (st is not None and st.st_ino == pos_inode):
                    # renamed file (same inode) or copytruncate copy (same bytes): the offset holds
                    old_offset = pos_offset if rst.st_size >= pos_offset else 0
                    if rst.st_size < pos_offset:
                        info["rotation_gap"] = True
                else:
                    # rotated more than once since: what came between is in .2 and older
                    info["rotation_gap"] = True
                    old_offset = pos_offset if rst.st_size >= pos_offset else 0
                # Without a live log nginx has not reopened yet and may still append to the
                # rotated file: read it like a live one and keep a position in it.
                live_gone = st is None
                end, fed, hit = _read_lines(rotated, old_offset, stats, remaining,
                                            final=not live_gone)
                info["files"].append({"path": rotated, "from": old_offset, "to": end})
                if remaining is not None:
                    remaining -= fed
                if hit or live_gone:
                    info["truncated"] = True
                    new_position = {"inode": rst.st_ino, "dev": rst.st_dev, "offset": end}
                    return _finish(stats, new_position, info, thresholds_ms, histogram)
    else:
        start_offset = 0

    if st is None:
        # No live log (yet): keep the saved position, it still names the file to go on from.
        return _finish(stats, position, info, thresholds_ms, histogram)

    if from_end:
        end = _end_of_complete_lines(log_path, st.st_size)
        new_position = dict(_file_id(st), offset=end)
        return _finish(stats, new_position, info, thresholds_ms, histogram)

    end, fed, hit = _read_lines(log_path, start_offset, stats, remaining, final=False)
    info["files"].append({"path": log_path, "from": start_offset, "to": end})
    info["truncated"] = hit
    new_position = dict(_file_id(st), offset=end)
    return _finish(stats, new_position, info, thresholds_ms, histogram)


def _end_of_complete_lines(path, size):
    """Offset just after the last newline of the file (0 when none)."""
    if size == 0:
        return 0
    block = 65536
    with open(path, "rb") as fh:
        pos = size
        while pos > 0:
            start = max(0, pos - block)
            fh.seek(start)
            data = fh.read(pos - start)
            idx = data.rfind(b"\n")
            if idx >= 0:
                return start + idx + 1
            pos = start
    return 0


def _finish(stats, position, info, thresholds_ms, histogram=False):
    out = stats.result(thresholds_ms, histogram)
    out["position"] = position
    out.update(info)
    return out


# -- several load balancers ------------------------------------------------------------------------

MERGED_COUNTERS = ("lines", "malformed", "partial", "blank", "before_since", "unmatched")
MERGED_SAMPLES = 5


def merge_windows(windows, thresholds_ms=()):
    """One window out of the windows of several access logs (one per load balancer), each read with
    ``histogram``: the counters add up, and the percentiles are worked out again from the summed latency
    histograms, so they are those of all the traffic (not an average of percentiles). ``position`` is
    left out: each log has its own."""
    pools = {}
    unattributed = _Bucket()
    out = dict((key, 0) for key in MERGED_COUNTERS)
    samples, firsts, lasts = [], [], []
    for window in windows:
        for colour, summary in (window.get("pools") or {}).items():
            pools.setdefault(colour, _Bucket()).add_summary(summary)
        unattributed.add_summary(window.get("unattributed") or {})
        for key in MERGED_COUNTERS:
            out[key] += window.get(key) or 0
        samples.extend(window.get("malformed_samples") or [])
        if window.get("first_msec") is not None:
            firsts.append(window["first_msec"])
        if window.get("last_msec") is not None:
            lasts.append(window["last_msec"])
    out["malformed_samples"] = samples[:MERGED_SAMPLES]
    out["pools"] = dict((colour, bucket.summary(thresholds_ms)) for colour, bucket in pools.items())
    out["unattributed"] = dict(unattributed.summary(thresholds_ms), no_upstream=unattributed.no_upstream,
                               no_upstream_5xx=unattributed.no_upstream_5xx)
    out["first_msec"] = min(firsts) if firsts else None
    out["last_msec"] = max(lasts) if lasts else None
    out["windows"] = len(windows)
    return out


# -- views for the gates --------------------------------------------------------------------------

def candidate_view(window, colour, count_unattributed_5xx=True, thresholds_ms=()):
    """The numbers a gate judges for ``colour``: its pool's summary, optionally charged with the
    window's 5xx that nginx answered without reaching any upstream (``upstream_addr`` "-"),
    added to both errors and requests, since each one is a request that failed. 5xx from
    addresses in no pool (another app's servers in a shared log) are not charged. Percentiles
    stay the pool's own (those requests have no upstream latency).
    """
    pool = dict(window["pools"].get(colour) or _Bucket().summary(thresholds_ms))
    pool["unattributed_5xx"] = 0
    if count_unattributed_5xx:
        extra = (window.get("unattributed") or {}).get("no_upstream_5xx", 0) or 0
        if extra:
            pool["unattributed_5xx"] = extra
            pool["requests"] = pool["requests"] + extra
            pool["errors_5xx"] = pool["errors_5xx"] + extra
    pool["error_rate"] = (pool["errors_5xx"] / pool["requests"]) if pool["requests"] else None
    return pool
