"""The attempts of one forwarded request: Envoy's router retry logic as a sans-IO state machine.

One ``Attempts`` per request that goes upstream. The exchange (adapters/exchange.py) feeds it events,
each with ``now`` (monotonic seconds, the clock of every deadline here), and performs the action code
each event returns; an action's arguments are attributes (``ep``, ``delay``, ``flag``, ``extra``), so
nothing is allocated per action. The machine owns the request's accounting: the endpoint pick
(``Cluster.pick``), the endpoint's active-request count, the cluster breaker's request and retry
slots, and outlier feedback (``Cluster.record_result``); the exchange owns sockets and timers.

Events (each returns an action code):
  ``start(now)``                   first attempt: CONNECT, or FAIL (UH no endpoint, UO breaker full)
  ``on_overflow(now)``             the pool refused the attempt (pending queue full): FAIL UO
  ``on_head(status, now)``         a response head: FORWARD, or RETRY when the policy retries it
  ``on_error(kind, reused, now)``  connect failure / reset / protocol error: CONNECT (stale
                                   connection replay), RETRY, FAIL or, once forwarding, ABORT
  ``on_deadline(now)``             a wake-up (see ``wake_at``): NOTHING, RETRY, FAIL or ABORT
  ``backoff_done(now)``            the retry delay passed: CONNECT or FAIL
Endings that need no decision: ``on_end(status, now)`` (response complete), ``on_upgrade()`` (101:
the connection became a tunnel) and ``cancel()`` (client gone, or the exchange ended the request
itself). After any of them, or after FAIL or ABORT, everything the machine held is released.

Actions:
  NOTHING   nothing to do (a stale wake-up, an event after the end)
  CONNECT   send the request to ``ep`` on a pooled connection; the machine has counted it
  RETRY     drop this attempt's upstream (close its connection or leave the pool's queue), then
            call ``backoff_done`` after ``delay`` seconds (at once when 0)
  FORWARD   send the response head on; ``flag`` is URX or UO when it is a failure given up on
            (logged, like Envoy's flags on a forwarded answer), else empty
  FAIL      drop the upstream; answer locally for ``flag`` (UH UO UF UC UPE UT), ``extra`` (URX: the
            policy would retry but has no retries left; UO: the retry budget is full) or None
  ABORT     drop the upstream; the response is under way, so reset the client connection; ``flag``
            (UC UPE UT) goes to the log
The exchange re-arms its deadline wake-up at ``wake_at()`` after CONNECT, RETRY and NOTHING.

Retries follow Envoy (source/common/router/retry_state_impl.cc): a failure the policy would retry
is retried if the request can be replayed (its body fits the replay buffer, set ``replayable``),
retries are left, and the cluster's retry budget (``connectionPool.http.maxRetries``, concurrent
retries per cluster) has room. A retry holds its budget slot from the decision, through the backoff,
until the retried attempt's outcome; a retry that would go over the budget is not made: the last
failure goes to the client with UO and the breaker counts ``retry_overflow``. Retries left at 0 end
with URX. The per-try timeout covers the wait for response headers and is retried as a 504; the route
timeout covers everything and is never retried. A request that fails on a reused keep-alive
connection before any response byte (the upstream closed it while idle) is sent again once on a
fresh connection, outside the policy, if its method is idempotent.
"""

from __future__ import annotations

from typing import Final

from meshbus.proxy.core import flags as F
from meshbus.proxy.core.cluster import Cluster
from meshbus.proxy.core.endpoint import Endpoint
from meshbus.proxy.core.retry import RetryPolicy

# action codes
NOTHING: Final = 0
CONNECT: Final = 1
RETRY: Final = 2
FORWARD: Final = 3
FAIL: Final = 4
ABORT: Final = 5

# states
IDLE: Final = 0  # before start()
TRYING: Final = 1  # an attempt is connecting or waiting for the response head
BACKOFF: Final = 2  # between attempts
RESPONDING: Final = 3  # the response head went to the client
DONE: Final = 4

# A deadline due within this is due: loop timers are ms-rounded, and the listener's sweep uses the
# same slack (listener.Deadlines), so what it finds due is never left for another turn.
SLACK: Final = 0.001

IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


def _error_flag(kind: str) -> str:
    return F.UF if kind == "connect-failure" else F.UPE if kind == "protocol-error" else F.UC


HOST_SELECTION_ATTEMPTS: Final = 5  # Istio's host_selection_retry_max_attempts


class Attempts:
    __slots__ = (
        "breaker",
        "cluster",
        "deadline",
        "delay",
        "ep",
        "extra",
        "first_ep",
        "flag",
        "hash_key",
        "method",
        "per_try",
        "policy",
        "replayable",
        "retries_left",
        "retry_held",
        "stale_retried",
        "state",
        "status_retry",
        "timeout",
        "tried",
        "tries",
        "try_deadline",
    )

    def __init__(
        self,
        cluster: Cluster,
        policy: RetryPolicy,
        timeout: float | None,
        hash_key: int | None,
        method: str,
        upgrade: bool,
    ) -> None:
        """``timeout``: the route timeout (None or 0: none); ``upgrade``: an Upgrade request, whose
        response status is never retried (its 101 or refusal is the answer)."""
        self.cluster = cluster
        self.breaker = cluster.breaker
        self.policy = policy
        self.timeout = timeout or 0.0
        self.per_try = policy.per_try_timeout or 0.0
        self.hash_key = hash_key
        self.method = method
        self.status_retry = not upgrade
        self.replayable = True  # the exchange clears it when the body outgrows its replay buffer
        self.retries_left = policy.attempts
        self.tries = 0
        self.state = IDLE
        self.ep: Endpoint | None = None
        self.deadline = 0.0  # route deadline (0: none)
        self.try_deadline = 0.0  # per-try deadline of the attempt waiting for its head (0: none)
        self.delay = 0.0
        self.flag = ""
        self.extra = ""
        self.retry_held = False  # holds a slot of the cluster's retry budget
        self.stale_retried = False
        self.first_ep: Endpoint | None = None  # the first attempt's endpoint (no list per request)
        self.tried: list[Endpoint] | None = None  # every attempt's, once there is a retry

    # ---- events ---------------------------------------------------------------------------------

    def start(self, now: float) -> int:
        t = self.timeout
        if t:
            self.deadline = now + t
        return self._attempt(now)

    def backoff_done(self, now: float) -> int:
        if self.state != BACKOFF:
            return NOTHING
        return self._attempt(now)

    def on_overflow(self, now: float) -> int:
        return self._fail(F.UO, "")

    def on_head(self, status: int, now: float) -> int:
        if self.state != TRYING:
            return NOTHING
        self.try_deadline = 0.0  # the per-try timeout covers the wait for response headers
        if (status >= 500 or status == 429) and self.status_retry and self.policy.retry_on_status(status):
            if self._would_retry():
                ep = self.ep
                if ep is not None:
                    self.cluster.record_result(ep, status=status, error=None, now=now)
                return self._backoff()
            # given up: this answer is the client's, flagged (the last status goes as Envoy sends it)
        elif self.retry_held:
            self._release_retry(True)
        self.state = RESPONDING
        return FORWARD

    def on_error(self, kind: str, reused: bool, now: float) -> int:
        """``kind``: "connect-failure", "reset" or "protocol-error" (a TLS failure is a connect
        failure); ``reused``: the connection had carried an earlier request."""
        state = self.state
        ep = self.ep
        if state == RESPONDING:
            if ep is not None:
                self.cluster.record_result(ep, status=None, error=kind, now=now)
            return self._fail(F.UPE if kind == "protocol-error" else F.UC, "")
        if state != TRYING:
            return NOTHING
        if (
            kind == "reset"
            and reused
            and not self.stale_retried
            and self.replayable
            and self.method in IDEMPOTENT
        ):
            # A pooled connection the upstream closed while idle (keep-alive race): the request never
            # reached the application, so send it again on a fresh connection, once, outside the policy.
            self.stale_retried = True
            self._end_attempt()
            self.tries -= 1
            return self._attempt(now)
        if ep is not None:
            self.cluster.record_result(ep, status=None, error=kind, now=now)
        self._end_attempt()
        flag = _error_flag(kind)
        if self.policy.retry_on_error("reset" if kind == "protocol-error" else kind):
            if self._would_retry():
                return self._backoff()
            return self._fail(flag, self.flag)
        if self.retry_held:
            self._release_retry(True)
        return self._fail(flag, "")

    def on_deadline(self, now: float) -> int:
        state = self.state
        if state == DONE or state == IDLE:
            return NOTHING
        due = now + SLACK
        d = self.deadline
        if d and due >= d:
            return self._fail(F.UT, "")  # the route timeout: never retried
        t = self.try_deadline
        if t and due >= t and state == TRYING:
            ep = self.ep
            if ep is not None:
                self.cluster.record_result(ep, status=504, error="timeout", now=now)
            self._end_attempt()
            if self.policy.retry_on_status(504):
                if self._would_retry():
                    return self._backoff()
                return self._fail(F.UT, self.flag)
            if self.retry_held:
                self._release_retry(True)
            return self._fail(F.UT, "")
        return NOTHING

    def on_end(self, status: int, now: float) -> None:
        ep = self.ep
        if ep is not None:
            self.cluster.record_result(ep, status=status, error=None, now=now)
        self._finish()

    def on_upgrade(self) -> None:
        self._finish()

    def cancel(self) -> None:
        """The request ends without the machine (client gone, or a local reply by the exchange)."""
        if self.state != DONE:
            self._finish()

    def wake_at(self) -> float:
        """When ``on_deadline`` has something to do: the earlier of the route and per-try deadlines
        (0: no deadline)."""
        d = self.deadline
        t = self.try_deadline
        return t if t and (not d or t < d) else d

    # ---- internals ------------------------------------------------------------------------------

    def _attempt(self, now: float) -> int:
        cluster = self.cluster
        ep = cluster.pick(self.hash_key, now)
        if ep is None:
            return self._fail(F.UH, "")
        if self.tries:
            # Istio's default retry host predicate (previous_hosts, host_selection_retry_max_attempts
            # 5): a retry picks again, up to 5 times in all, while the pick is a host already tried.
            tried = self.tried
            if tried is None:
                tried = self.tried = [] if self.first_ep is None else [self.first_ep]
            n = 1
            while ep in tried and n < HOST_SELECTION_ATTEMPTS:
                other = cluster.pick(self.hash_key, now)
                if other is None:
                    break
                ep = other
                n += 1
            tried.append(ep)
        else:
            self.first_ep = ep
        if not self.breaker.try_start_request():
            return self._fail(F.UO, "")
        self.ep = ep
        ep.active_requests += 1
        self.tries += 1
        pt = self.per_try
        if pt:
            self.try_deadline = now + pt
        self.state = TRYING
        return CONNECT

    def _would_retry(self) -> bool:
        """The policy would retry the outcome just seen: whether a retry is made (Envoy's
        shouldRetry). If not, ``flag`` says why when it is a flag's matter (URX, UO), else ""."""
        breaker = self.breaker
        if self.retry_held:
            self.retry_held = False
            breaker.end_retry()  # the retried attempt has its outcome: its budget slot is free
        self.flag = ""
        if not self.replayable:
            return False  # the body went upstream without a copy: nothing to send again
        if self.retries_left <= 0:
            breaker.retry_limit_exceeded += 1
            self.flag = F.URX
            return False
        self.retries_left -= 1
        if not breaker.try_start_retry():  # counts retry_overflow
            self.flag = F.UO
            return False
        breaker.retries += 1
        self.retry_held = True
        self.delay = self.policy.backoff(self.tries, self.cluster.rng())
        return True

    def _backoff(self) -> int:
        self._end_attempt()
        self.state = BACKOFF
        return RETRY

    def _release_retry(self, success: bool) -> None:
        self.retry_held = False
        breaker = self.breaker
        breaker.end_retry()
        if success:
            breaker.retry_success += 1

    def _end_attempt(self) -> None:
        ep = self.ep
        if ep is not None:
            ep.active_requests -= 1
            self.ep = None
            self.breaker.end_request()
        self.try_deadline = 0.0

    def _finish(self) -> None:
        self._end_attempt()
        if self.retry_held:
            self._release_retry(False)
        self.state = DONE

    def _fail(self, flag: str, extra: str) -> int:
        action = ABORT if self.state == RESPONDING else FAIL
        self._finish()
        self.flag = flag
        self.extra = extra
        return action
