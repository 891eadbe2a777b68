# -*- coding: utf-8 -*-
# Copyright: greenflow platform engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Gate decisions of the health-gated cutover (pure logic, no Ansible imports).

The gates judge the *new* colour's numbers for the window of one step (see
``_traffic_stats.candidate_view``: its pool's requests, 5xx, error rate and p95, with unattributed
5xx charged to it).

Lines and verdicts
    - ``abort`` -- at any poll: a health probe of the new colour failed, or the error rate is
      >= ``abort_error_rate``, or p95 is >= ``abort_p95_ms``, or (``resource_breaches``, when the
      cutover reads the new colour's tasks) a task's CPU is >= ``abort_cpu_percent`` of its limit or its
      memory >= ``abort_memory_percent`` of its limit on ``abort_resource_samples`` samples in a row.
      Acted on at once: traffic goes back.
    - ``watch`` -- during the dwell, nothing crossed an abort line: keep watching.
    - at the end of the dwell:
        - ``pass`` -- at least ``min_requests`` requests, error rate <= ``max_error_rate`` and
          p95 <= ``max_p95_ms`` (a value equal to the limit passes; a value equal to an abort line
          aborts).
        - ``wait`` -- fewer than ``min_requests`` requests (no data is not a pass, as Flagger
          counts "no data" as a failed check), or no latency sample: the dwell is extended, at
          most by ``max_wait_seconds``; the window keeps growing and the abort lines still apply
          at every poll. Too few requests are never judged on the pass lines.
        - ``fail`` -- between the pass line and the abort line at the end of the dwell
          (inconclusive: Argo Rollouts would pause for a human; an unattended cutover does not move
          more traffic on doubt and goes back), or still too few requests when the wait is over.

Minimum sample for an abort
    An abort line is only acted on when the breach rests on at least ``abort_min_failures``
    bad requests (default 5): 5xx for the error rate, responses at or over ``abort_p95_ms`` for
    the latency. One unlucky request among three is a 33 % error rate but no evidence; five failures
    are. A pool that answers every request with 500 aborts at its 5th request; with a true error
    rate of 1 % the chance of five 5xx among the first 100 requests (the most that a 5 % abort line
    allows) is about 0.3 %. Below that sample the end-of-dwell gates still apply: a step never passes
    on numbers over the pass line.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.greenflow.platform.plugins.module_utils import _release_model as model

PASS = "pass"
WAIT = "wait"
FAIL = "fail"
ABORT = "abort"
WATCH = "watch"

# The judging gates and their defaults are the release model's (one home for every default).
DEFAULT_GATES = model.gate_defaults(model.JUDGING_GATES)


class GateError(ValueError):
    """Invalid gate settings."""


def check_gates(gates):
    """Return a complete, validated gates dict (defaults filled in) or raise GateError."""
    out = dict(DEFAULT_GATES)
    for key, value in (gates or {}).items():
        if key not in DEFAULT_GATES:
            raise GateError("unknown gate %r (known: %s)" % (key, ", ".join(sorted(DEFAULT_GATES))))
        if value is None:
            continue
        out[key] = value
    for key in ("max_error_rate", "abort_error_rate"):
        try:
            out[key] = float(out[key])
        except (TypeError, ValueError):
            raise GateError("%s must be a number between 0 and 1, got %r" % (key, out[key]))
        if not 0.0 <= out[key] <= 1.0:
            raise GateError("%s must be between 0 and 1 (a fraction, 0.01 = 1 %%), got %r"
                            % (key, out[key]))
    for key in ("max_p95_ms", "abort_p95_ms"):
        try:
            out[key] = float(out[key])
        except (TypeError, ValueError):
            raise GateError("%s must be a number of milliseconds, got %r" % (key, out[key]))
        if not out[key] > 0:
            raise GateError("%s must be > 0 ms, got %r" % (key, out[key]))
    for key, top in (("abort_cpu_percent", model.MAX_CPU_PERCENT), ("abort_memory_percent", model.MAX_MEMORY_PERCENT)):
        try:
            if isinstance(out[key], bool):
                raise ValueError()
            out[key] = float(out[key])
        except (TypeError, ValueError):
            raise GateError("%s must be a number (percent; 0 turns the line off), got %r" % (key, out[key]))
        if not 0.0 <= out[key] <= top:
            raise GateError("%s must be between 0 (off) and %g, got %r" % (key, top, out[key]))
    for key in ("min_requests", "abort_min_failures", "abort_resource_samples"):
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, int):
            try:
                if float(value) != int(value):
                    raise ValueError()
                value = int(value)
            except (TypeError, ValueError):
                raise GateError("%s must be a whole number, got %r" % (key, out[key]))
        if value < 1:
            raise GateError("%s must be >= 1, got %r" % (key, value))
        out[key] = value
    if out["max_error_rate"] >= out["abort_error_rate"]:
        raise GateError("max_error_rate (%s) must be below abort_error_rate (%s)"
                        % (out["max_error_rate"], out["abort_error_rate"]))
    if out["max_p95_ms"] >= out["abort_p95_ms"]:
        raise GateError("max_p95_ms (%s) must be below abort_p95_ms (%s)"
                        % (out["max_p95_ms"], out["abort_p95_ms"]))
    return out


def latency_thresholds(gates):
    """The thresholds (ms) the traffic reader must count responses at or over."""
    return [gates["max_p95_ms"], gates["abort_p95_ms"]]


def _over(stats, threshold):
    """Responses at or over ``threshold`` ms, from the reader's ``over_ms`` counts."""
    over = stats.get("over_ms") or {}
    value = float(threshold)
    for key in (str(int(value)) if value.is_integer() else repr(value), str(threshold)):
        if key in over:
            return int(over[key])
    return None


def _breach(metric, value, op, threshold, **extra):
    item = {"metric": metric, "value": value, "op": op, "threshold": threshold}
    item.update(extra)
    return item


def evaluate(stats, gates, final=False, wait_over=False, health=None):
    """Decide one poll (``final`` false) or the end of a dwell (``final`` true).

    stats   -- the new colour's numbers: requests, errors_5xx, error_rate, p95_ms, over_ms
               (counts of responses >= each latency threshold), latency_samples.
    gates   -- output of check_gates().
    wait_over -- at the end of the dwell, the extra wait for requests is used up.
    health  -- None (not probed) or a list of probe results ({url, ok, status, error, ...}).

    Returns {"verdict": .., "reasons": [..], "breaches": [{metric, value, op, threshold}]}.
    """
    requests = int(stats.get("requests") or 0)
    errors = int(stats.get("errors_5xx") or 0)
    error_rate = (errors / requests) if requests else None
    p95 = stats.get("p95_ms")
    samples = int(stats.get("latency_samples") or 0)

    # -- abort lines (every poll) -----------------------------------------------------------
    aborts = []
    for probe in health or []:
        if not probe.get("ok"):
            aborts.append(_breach("health", probe.get("status") or probe.get("error"), "failed",
                                  probe.get("url")))
    if error_rate is not None and error_rate >= gates["abort_error_rate"]:
        if errors >= gates["abort_min_failures"]:
            aborts.append(_breach("error_rate", error_rate, ">=", gates["abort_error_rate"],
                                  errors_5xx=errors, requests=requests))
    if p95 is not None and p95 >= gates["abort_p95_ms"]:
        slow = _over(stats, gates["abort_p95_ms"])
        if slow is None:
            slow = samples  # reader gave no count: the sample size is the best evidence we have
        if slow >= gates["abort_min_failures"]:
            aborts.append(_breach("p95_ms", p95, ">=", gates["abort_p95_ms"], slow_requests=slow,
                                  latency_samples=samples))
    if aborts:
        return {"verdict": ABORT, "breaches": aborts,
                "reasons": [_describe(b) for b in aborts]}
    if not final:
        return {"verdict": WATCH, "breaches": [], "reasons": []}

    # -- end of the dwell ---------------------------------------------------------------------
    short = []
    if requests < gates["min_requests"]:
        short.append(_breach("requests", requests, "<", gates["min_requests"]))
    elif samples == 0 or p95 is None:
        short.append(_breach("latency_samples", samples, "<", 1))
    if short:
        if wait_over:
            return {"verdict": FAIL, "breaches": short,
                    "reasons": ["too few requests to judge, wait exhausted: " + _describe(b)
                                for b in short]}
        return {"verdict": WAIT, "breaches": short,
                "reasons": ["too few requests to judge: " + _describe(b) for b in short]}

    fails = []
    if error_rate > gates["max_error_rate"]:
        fails.append(_breach("error_rate", error_rate, ">", gates["max_error_rate"],
                             errors_5xx=errors, requests=requests))
    if p95 > gates["max_p95_ms"]:
        fails.append(_breach("p95_ms", p95, ">", gates["max_p95_ms"]))
    if fails:
        return {"verdict": FAIL, "breaches": fails,
                "reasons": ["inconclusive: " + _describe(b) for b in fails]}
    return {"verdict": PASS, "breaches": [], "reasons": []}


def evaluate_watch(recent, gates, health=None, whole=None):
    """Decide one poll of the watch after the last step (all traffic on the new colour, the previous
    colour still running).

    recent -- the new colour's numbers over the rolling window (the last ``watch_window_seconds``):
              the abort lines apply to it at every poll, so a release that breaks late is caught
              within about a window, not diluted by a long good start.
    whole  -- None during the watch; at its end, the numbers of the whole watch: judged on the
              pass lines like the end of a dwell. Thin traffic is no reason to go back from a
              release that already carries everything: fewer than ``min_requests`` requests pass
              (with the reason said), where a step would wait.

    Returns the same shape as ``evaluate``: verdict ``abort``, ``watch``, ``fail`` or ``pass``.
    """
    decision = evaluate(recent, gates, final=False, health=health)
    if decision["verdict"] == ABORT or whole is None:
        return decision
    requests = int(whole.get("requests") or 0)
    if requests < gates["min_requests"] or not int(whole.get("latency_samples") or 0):
        return {"verdict": PASS, "breaches": [],
                "reasons": ["%d requests in the watch, fewer than min_requests %d: nothing crossed an "
                            "abort line" % (requests, gates["min_requests"])]}
    return evaluate(whole, gates, final=True, wait_over=True)


def rolling_start(marks, now, window, first):
    """The log position a rolling window of ``window`` seconds starts at.

    marks -- (time, position) of every read so far, oldest first (time on the caller's monotonic
             clock, position as traffic_window returns it after that read).
    first -- the position the watch started at (used until a mark is old enough).
    Returns the position of the newest mark at or before ``now - window``."""
    start = first
    for when, position in marks:
        if when <= now - window:
            start = position
        else:
            break
    return start


def resources_judged(gates):
    """True when a resource line is on (the cutover then needs the new colour's CPU and memory)."""
    return gates["abort_cpu_percent"] > 0 or gates["abort_memory_percent"] > 0


def resource_breaches(tasks, gates, streaks):
    """The resource lines at one poll.

    tasks   -- the new colour's tasks as traffic_window reads them (``node``, ``container``, ``task``,
               ``cpu_percent``, ``memory_percent``, the sampler's ``timestamp``).
    streaks -- the caller's dict, kept from poll to poll: per task, the last sample counted and how many
               samples in a row crossed each line. A sample is counted once (polls may be faster than the
               sampler); a task that is gone is forgotten.

    A line is breached when a task is at or over it on ``abort_resource_samples`` samples in a row: one
    busy second is no evidence, a task pinned at its limit for a few samples is. Returns breaches
    (like ``evaluate``'s) for the abort decision, empty when none."""
    breaches = []
    seen = set()
    need = gates["abort_resource_samples"]
    for t in tasks or []:
        key = "%s/%s" % (t.get("node"), t.get("container") or t.get("task"))
        seen.add(key)
        streak = streaks.setdefault(key, {"timestamp": None, "cpu_percent": 0, "memory_percent": 0})
        if t.get("timestamp") is None or t.get("timestamp") == streak["timestamp"]:
            continue
        streak["timestamp"] = t.get("timestamp")
        for metric, line in (("cpu_percent", gates["abort_cpu_percent"]),
                             ("memory_percent", gates["abort_memory_percent"])):
            value = t.get(metric)
            if not line or value is None:
                continue
            streak[metric] = streak[metric] + 1 if value >= line else 0
            if streak[metric] >= need:
                breaches.append(_breach(metric, value, ">=", line, task=t.get("task"), node=t.get("node"),
                                        samples=streak[metric]))
    for key in [k for k in streaks if k not in seen]:
        del streaks[key]
    return breaches


STALE_SAMPLES = 5
STALE_MIN_SECONDS = 15.0


def stale_nodes(tasks, seen, now):
    """Nodes whose sampler stopped: their page still answers, with the same sample, for longer than
    ``STALE_SAMPLES`` intervals (at least ``STALE_MIN_SECONDS``). Such readings are never counted twice by
    ``resource_breaches``, so a stopped sampler is no reading, never a breach; this says so.

    seen -- the caller's dict, kept from poll to poll: per node, (the newest sample's timestamp, ``now`` when
            it was first read). ``now``: the caller's monotonic clock. Returns [(node, seconds unchanged)]."""
    out = []
    named = set()
    for t in tasks or []:
        node, stamp = t.get("node"), t.get("timestamp")
        if node is None or stamp is None:
            continue
        last = seen.get(node)
        if last is None or last[0] != stamp:
            seen[node] = (stamp, now)
            continue
        limit = max(STALE_MIN_SECONDS, STALE_SAMPLES * float(t.get("interval") or 2.0))
        if now - last[1] > limit and node not in named:
            named.add(node)
            out.append((node, round(now - last[1], 1)))
    return out


def with_resource_breaches(decision, breaches):
    """``decision`` (evaluate's or evaluate_watch's) turned into an abort when a resource line is breached."""
    if not breaches:
        return decision
    prior = decision["breaches"] if decision["verdict"] == ABORT else []
    everything = list(prior) + list(breaches)
    return {"verdict": ABORT, "breaches": everything, "reasons": [_describe(b) for b in everything]}


def _fmt(metric, value):
    if value is None:
        return "n/a"
    if metric in ("cpu_percent", "memory_percent"):
        return "%.1f %%" % value
    if metric == "error_rate":
        return "%.2f%%" % (100.0 * value)
    if metric == "p95_ms":
        return "%.0f ms" % value
    return str(value)


def _describe(breach):
    metric = breach["metric"]
    if metric == "health":
        return "health probe %s failed (%s)" % (breach["threshold"], breach["value"])
    text = "%s %s %s %s" % (metric, _fmt(metric, breach["value"]), breach["op"],
                            _fmt(metric, breach["threshold"]))
    if metric == "error_rate" and "requests" in breach:
        text += " (%d of %d requests 5xx)" % (breach["errors_5xx"], breach["requests"])
    if metric == "p95_ms" and "slow_requests" in breach:
        text += " (%d slow of %d)" % (breach["slow_requests"], breach["latency_samples"])
    if metric in ("cpu_percent", "memory_percent") and "samples" in breach:
        text += " (task %s on %s, %d samples in a row; %s)" % (
            breach.get("task"), breach.get("node"), breach["samples"],
            "of its CPU limit, or of one core without one" if metric == "cpu_percent" else "of its memory limit")
    return text
