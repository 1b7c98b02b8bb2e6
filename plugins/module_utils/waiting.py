# -*- coding: utf-8 -*-
# Copyright: Apex platform team
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Waiting, done one way: a monotonic deadline, and the condition observed.

Nothing here knows about Kubernetes, PostgreSQL or Redis. Two helpers:

* ``poll_until(fetch, done, deadline)``: call ``fetch()`` until ``done(value)`` or the deadline,
  sleeping with a capped exponential backoff between calls (for APIs without a watch).
* ``watch_until(relist, watch, done, deadline)``: observe a value through a change stream (for
  example the Kubernetes watch API): list once, then follow the stream from that version,
  reconnecting when the server ends it and listing again when the version is too old.

Both return a ``WaitResult`` with ``ok``, the ``last`` value observed (what a timeout reports),
the ``elapsed`` seconds and the number of ``observations``. Neither sleeps a fixed time when the
condition can be seen.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time


class Deadline(object):
    """A point in time on the monotonic clock; ``timeout=None`` never expires."""

    def __init__(self, timeout, clock=time.monotonic):
        self._clock = clock
        self.started = clock()
        self.timeout = timeout
        self.at = None if timeout is None else self.started + float(timeout)

    def remaining(self):
        """Seconds left (never negative); ``None`` for an unbounded deadline."""
        if self.at is None:
            return None
        return max(0.0, self.at - self._clock())

    def expired(self):
        return self.at is not None and self._clock() >= self.at

    def elapsed(self):
        return self._clock() - self.started


class WaitResult(object):
    """Outcome of a wait. Truthy when the condition was met."""

    def __init__(self, ok, last, elapsed, observations):
        self.ok = ok
        self.last = last
        self.elapsed = elapsed
        self.observations = observations

    def __bool__(self):
        return bool(self.ok)

    __nonzero__ = __bool__

    def __repr__(self):
        return "WaitResult(ok=%r, elapsed=%.3f, observations=%d)" % (self.ok, self.elapsed, self.observations)


class StreamExpired(Exception):
    """Raised by a ``watch`` callable when its start version is too old (HTTP 410 Gone): relist."""


def poll_until(fetch, done, deadline, interval=0.1, max_interval=2.0, backoff=1.5, sleep=time.sleep):
    """Call ``fetch()`` until ``done(value)`` is true or ``deadline`` (a ``Deadline``) expires.

    The first call happens at once; later ones after ``interval`` seconds, growing by
    ``backoff`` up to ``max_interval``, and never sleeping past the deadline. The last value
    is always observed after (or at) the deadline, so a timeout reports fresh state.
    """
    observations = 0
    delay = interval
    while True:
        last = fetch()
        observations += 1
        if done(last):
            return WaitResult(True, last, deadline.elapsed(), observations)
        remaining = deadline.remaining()
        if remaining is not None and remaining <= 0:
            return WaitResult(False, last, deadline.elapsed(), observations)
        sleep(delay if remaining is None else min(delay, remaining))
        delay = min(max_interval, delay * backoff)


def watch_until(relist, watch, done, deadline, max_stream_seconds=60, sleep=time.sleep):
    """Follow a change stream until ``done(value)`` or the deadline.

    ``relist()`` returns ``(value, version)``: the current value and the version to watch from.
    ``watch(version, timeout_seconds)`` yields ``(value, version)`` for every change after
    ``version``; it ends when the server closes the stream (after at most ``timeout_seconds``)
    and raises ``StreamExpired`` when ``version`` is too old. ``value`` may be ``None`` for
    events that carry no new value (bookmarks): only the version moves then.
    """
    observations = 0
    value, version = relist()
    observations += 1
    quiet_streams = 0
    while True:
        if done(value):
            return WaitResult(True, value, deadline.elapsed(), observations)
        remaining = deadline.remaining()
        if remaining is not None and remaining <= 0:
            return WaitResult(False, value, deadline.elapsed(), observations)
        stream_seconds = max_stream_seconds if remaining is None else min(max_stream_seconds, remaining)
        # whole seconds for the server, at least one; the deadline is re-checked after every event
        stream_seconds = max(1, int(stream_seconds + 0.999))
        stream_started = deadline.elapsed()
        events = 0
        stream = watch(version, stream_seconds)
        try:
            for new_value, new_version in stream:
                events += 1
                if new_version:
                    version = new_version
                if new_value is None:
                    continue
                value = new_value
                observations += 1
                if done(value) or deadline.expired():
                    break
        except StreamExpired:
            # the version is too old, or the stream broke: list again; back off a little when it
            # keeps happening so a failing server is not hammered (never past the deadline)
            quiet_streams += 1
            if quiet_streams > 1:
                remaining = deadline.remaining()
                pause = min(1.0, 0.05 * quiet_streams)
                sleep(pause if remaining is None else min(pause, remaining))
            value, version = relist()
            observations += 1
            continue
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # a generator left early releases its stream now, not at garbage collection
        if events == 0 and deadline.elapsed() - stream_started < stream_seconds / 2.0:
            # the server ended the stream early with nothing in it: observe by listing, and back
            # off a little so a misbehaving server is not hammered (never past the deadline)
            quiet_streams += 1
            remaining = deadline.remaining()
            pause = min(1.0, 0.05 * quiet_streams)
            sleep(pause if remaining is None else min(pause, remaining))
            value, version = relist()
            observations += 1
        else:
            quiet_streams = 0
