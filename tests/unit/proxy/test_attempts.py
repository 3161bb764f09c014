"""The attempts state machine (core/attempts.py) driven through retries, per-try and route timeouts, the
retry budget, resets before and after the first response byte, stale keep-alive connections and client
aborts: a fake clock, real clusters and breakers, no sockets, no loop.

``Trial`` plays the exchange: it performs each action the machine returns on a fake upstream (it
records which endpoint each attempt went to, and which it dropped) and keeps the clock. The exchange
glue itself is driven the same way, over in-memory transports, in test_exchange_glue.py.
"""

from __future__ import annotations

import pytest

from meshbus.proxy.core import flags as F
from meshbus.proxy.core.attempts import (
    ABORT,
    BACKOFF,
    CONNECT,
    DONE,
    FAIL,
    FORWARD,
    NOTHING,
    RESPONDING,
    RETRY,
    TRYING,
    Attempts,
)
from meshbus.proxy.core.breaker import UNLIMITED, CircuitBreaker
from meshbus.proxy.core.cluster import Cluster, Endpoint
from meshbus.proxy.core.outlier import OutlierSettings
from meshbus.proxy.core.retry import RetryPolicy, parse_retry_on

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

ACTION = {
    NOTHING: "nothing",
    CONNECT: "connect",
    RETRY: "retry",
    FORWARD: "forward",
    FAIL: "fail",
    ABORT: "abort",
}


def policy(attempts: int = 2, retry_on: str = "5xx", per_try: float | None = None) -> RetryPolicy:
    on, codes = parse_retry_on(retry_on)
    return RetryPolicy(attempts=attempts, per_try_timeout=per_try, retry_on=on, retriable_status_codes=codes)


def cluster(
    endpoints: int = 2, *, max_retries: int = UNLIMITED, max_requests: int = UNLIMITED, **kw: object
) -> Cluster:
    eps = [Endpoint(f"10.0.0.{i}", 9080) for i in range(1, endpoints + 1)]
    return Cluster(
        "outbound|9080||reviews.default.svc.cluster.local",
        "reviews.default.svc.cluster.local",
        9080,
        endpoints=eps,
        lb_policy="ROUND_ROBIN",
        breaker=CircuitBreaker(max_retries=max_retries, max_requests=max_requests),
        rng=lambda: 0.5,  # backoff jitter: half the ceiling
        **kw,  # type: ignore[arg-type]
    )


class Trial:
    """One request: the machine plus what an exchange would have done with its actions."""

    def __init__(
        self,
        c: Cluster,
        p: RetryPolicy,
        *,
        timeout: float | None = None,
        method: str = "GET",
        upgrade: bool = False,
        now: float = 100.0,
    ) -> None:
        self.c = c
        self.att = Attempts(c, p, timeout, None, method, upgrade)
        self.now = now
        self.sent_to: list[str] = []  # endpoint of each attempt that went upstream
        self.dropped = 0  # upstreams let go of (connection closed or pool wait left)
        self.delays: list[float] = []
        self.reply: tuple[str, str] | None = None  # local reply: (flag, extra)
        self.aborted: str | None = None
        self.forwarded: str | None = None  # flag logged with a forwarded response ("" for none)

    def do(self, action: int) -> str:
        att = self.att
        if action == CONNECT:
            assert att.ep is not None and att.state == TRYING
            self.sent_to.append(att.ep.address)
        elif action == RETRY:
            self.dropped += 1
            self.delays.append(att.delay)
        elif action == FORWARD:
            self.forwarded = att.flag
        elif action == FAIL:
            self.dropped += 1
            self.reply = (att.flag, att.extra)
        elif action == ABORT:
            self.dropped += 1
            self.aborted = att.flag
        return ACTION[action]

    def start(self) -> str:
        return self.do(self.att.start(self.now))

    def head(self, status: int) -> str:
        return self.do(self.att.on_head(status, self.now))

    def error(self, kind: str, reused: bool = False) -> str:
        return self.do(self.att.on_error(kind, reused, self.now))

    def wake(self, at: float) -> str:
        """The listener's sweep wakes the exchange at ``at``."""
        self.now = at
        return self.do(self.att.on_deadline(at))

    def backoff(self) -> str:
        """The backoff timer fires: ``delay`` after the retry decision."""
        self.now += self.att.delay
        return self.do(self.att.backoff_done(self.now))

    def end(self, status: int = 200) -> None:
        self.att.on_end(status, self.now)


def idle(c: Cluster) -> bool:
    """Nothing of the request is still counted: endpoints, breaker request and retry slots."""
    b = c.breaker
    return (
        b.active_requests == 0 and b.active_retries == 0 and all(e.active_requests == 0 for e in c.endpoints)
    )


# ---- retries ----------------------------------------------------------------------------------


def test_a_503_is_retried_on_the_next_endpoint_after_a_backoff_and_the_success_forwarded() -> None:
    c = cluster()
    t = Trial(c, policy(attempts=2, retry_on="5xx"))
    assert t.start() == "connect"
    assert c.breaker.active_requests == 1 and c.endpoints[0].active_requests == 1
    assert t.head(503) == "retry"
    # Envoy's backoff: uniform in [0, 25 ms * (2^1 - 1)); the cluster's rng says half of it
    assert t.delays == [pytest.approx(0.0125)]
    assert t.att.state == BACKOFF and c.breaker.active_requests == 0 and c.breaker.active_retries == 1
    assert t.backoff() == "connect"
    assert t.head(200) == "forward" and t.forwarded == ""
    assert c.breaker.active_retries == 0  # the retried attempt's outcome frees its budget slot
    t.end(200)
    assert t.sent_to == ["10.0.0.1", "10.0.0.2"] and t.att.tries == 2
    assert (c.breaker.retries, c.breaker.retry_success, c.breaker.retry_overflow) == (1, 1, 0)
    assert t.att.state == DONE and idle(c)


def test_a_connect_failure_is_retried_by_the_default_policy() -> None:
    c = cluster()
    t = Trial(c, policy(attempts=2, retry_on="connect-failure,refused-stream,503"))
    t.start()
    assert t.error("connect-failure") == "retry"
    assert t.backoff() == "connect"
    assert t.head(200) == "forward"
    t.end()
    assert t.sent_to == ["10.0.0.1", "10.0.0.2"] and idle(c)


def test_backoff_grows_with_each_retry() -> None:
    c = cluster()
    t = Trial(c, policy(attempts=3))
    t.start()
    for _ in range(3):
        assert t.head(503) == "retry"
        t.backoff()
    assert t.delays == pytest.approx([0.0125, 0.0375, 0.0875])  # 25 ms * (2^n - 1) / 2


def test_when_retries_run_out_the_last_answer_goes_to_the_client_flagged_urx() -> None:
    c = cluster()
    t = Trial(c, policy(attempts=2))
    t.start()
    for _ in range(2):
        assert t.head(503) == "retry"
        t.backoff()
    assert t.head(503) == "forward" and t.forwarded == F.URX
    t.end(503)
    assert len(t.sent_to) == 3 and c.breaker.retry_limit_exceeded == 1 and idle(c)


def test_when_retries_run_out_on_errors_the_local_reply_names_the_cause_then_urx() -> None:
    c = cluster()
    t = Trial(c, policy(attempts=1, retry_on="reset"))
    t.start()
    assert t.error("reset") == "retry"
    t.backoff()
    assert t.error("reset") == "fail" and t.reply == (F.UC, F.URX)
    assert idle(c)


def test_a_status_the_policy_does_not_name_is_forwarded_without_a_flag() -> None:
    c = cluster()
    t = Trial(c, policy(attempts=2, retry_on="503"))
    t.start()
    assert t.head(503) == "retry"
    t.backoff()
    assert t.head(500) == "forward" and t.forwarded == ""  # not URX: 500 was never retriable
    assert c.breaker.retry_success == 1


def test_no_retry_policy_fails_at_once() -> None:
    c = cluster()
    t = Trial(c, policy(attempts=0))
    t.start()
    assert t.error("connect-failure") == "fail" and t.reply == (F.UF, "")
    assert t.sent_to == ["10.0.0.1"] and idle(c)


def test_an_upgrade_answer_is_never_retried() -> None:
    c = cluster()
    t = Trial(c, policy(attempts=2), upgrade=True)
    t.start()
    assert t.head(503) == "forward" and t.forwarded == ""


def test_retried_failures_feed_outlier_detection() -> None:
    c = cluster(
        1, outlier=OutlierSettings(consecutive_5xx=2, base_ejection_time=30.0, max_ejection_percent=100)
    )
    t = Trial(c, policy(attempts=2))
    t.start()
    t.head(503)
    t.backoff()
    t.head(503)  # the second consecutive 5xx ejects the only endpoint
    assert c.endpoints[0].ejected_until > t.now
    # Envoy's panic threshold is not configured, so the retry finds no healthy host: 503 UH
    assert t.backoff() == "fail" and t.reply == (F.UH, "")
    assert idle(c)


# ---- timeouts ---------------------------------------------------------------------------------


def test_per_try_timeout_then_a_retry_that_succeeds() -> None:
    c = cluster()
    t = Trial(c, policy(attempts=2, retry_on="5xx", per_try=0.2), now=10.0)
    t.start()
    assert t.att.wake_at() == pytest.approx(10.2)
    assert t.wake(10.1) == "nothing"  # an early sweep (another request's) changes nothing
    assert t.wake(10.2) == "retry"  # the first attempt is dropped, its endpoint told of a 504
    assert t.dropped == 1 and t.att.wake_at() == 0.0
    assert t.backoff() == "connect"
    assert t.att.wake_at() == pytest.approx(t.now + 0.2)  # a fresh per-try deadline
    assert t.head(200) == "forward" and t.att.wake_at() == 0.0  # headers in: the per-try timeout is done
    t.end()
    assert t.sent_to == ["10.0.0.1", "10.0.0.2"] and idle(c)


def test_per_try_timeout_not_covered_by_the_policy_is_504_ut() -> None:
    c = cluster()
    t = Trial(c, policy(attempts=2, retry_on="connect-failure", per_try=0.2), now=10.0)
    t.start()
    assert t.wake(10.2) == "fail" and t.reply == (F.UT, "")
    assert idle(c)


def test_the_earlier_deadline_wakes_first() -> None:
    c = cluster()
    t = Trial(c, policy(per_try=5.0), timeout=1.0, now=0.0)
    t.start()
    assert t.att.wake_at() == 1.0  # the route timeout comes before the per-try one
    assert t.wake(1.0) == "fail" and t.reply == (F.UT, "")


def test_route_timeout_during_a_retry_backoff() -> None:
    c = cluster()
    t = Trial(c, policy(attempts=3), timeout=0.5, now=0.0)
    t.start()
    t.now = 0.49
    assert t.head(503) == "retry"
    assert c.breaker.active_retries == 1 and t.att.wake_at() == 0.5
    assert t.wake(0.5) == "fail" and t.reply == (F.UT, "")  # never retried; no URX
    assert idle(c)  # the held retry slot is given back
    assert t.backoff() == "nothing"  # the timer the exchange failed to cancel finds the request over
    assert t.sent_to == ["10.0.0.1"]


def test_route_timeout_after_the_response_started_aborts_the_client() -> None:
    c = cluster()
    t = Trial(c, policy(), timeout=0.5, now=0.0)
    t.start()
    assert t.head(200) == "forward"
    assert t.wake(0.5) == "abort" and t.aborted == F.UT
    assert idle(c)


# ---- the retry budget (DestinationRule connectionPool.http.maxRetries) ---------------------------


def test_the_retry_budget_limits_concurrent_retries_per_cluster() -> None:
    c = cluster(max_retries=1)
    a, b = Trial(c, policy(attempts=3)), Trial(c, policy(attempts=3))
    a.start()
    b.start()
    assert a.head(503) == "retry"  # takes the cluster's one retry slot
    assert b.head(503) == "forward" and b.forwarded == F.UO  # over the budget: the 503 is the answer
    assert c.breaker.retry_overflow == 1 and b.att.retries_left == 2
    b.end(503)
    assert a.backoff() == "connect"
    assert a.head(503) == "retry"  # its own slot came back with the outcome: it may retry again
    assert c.breaker.active_retries == 1
    a.backoff()
    assert a.head(200) == "forward"
    a.end()
    c2 = Trial(c, policy(attempts=3))
    c2.start()
    assert c2.head(503) == "retry"  # the budget is free again
    assert (c.breaker.retries, c.breaker.retry_overflow) == (3, 1)


def test_an_error_over_the_retry_budget_is_answered_with_its_cause_and_uo() -> None:
    c = cluster(max_retries=0)
    t = Trial(c, policy(attempts=2, retry_on="connect-failure"))
    t.start()
    assert t.error("connect-failure") == "fail" and t.reply == (F.UF, F.UO)
    assert c.breaker.retry_overflow == 1 and c.breaker.retries == 0 and idle(c)


def test_breaker_request_limit_and_pool_overflow_are_uo_and_no_endpoint_is_uh() -> None:
    c = cluster(max_requests=1)
    first = Trial(c, policy())
    first.start()
    t = Trial(c, policy())
    assert t.start() == "fail" and t.reply == (F.UO, "")
    first.end()
    t = Trial(c, policy())
    t.start()
    assert t.do(t.att.on_overflow(t.now)) == "fail" and t.reply == (F.UO, "")  # the pool's queue is full
    assert idle(c)
    t = Trial(cluster(0), policy())
    assert t.start() == "fail" and t.reply == (F.UH, "")


# ---- resets before and after the first response byte ----------------------------------------------


def test_a_reset_before_the_first_byte_is_retried_when_the_policy_says_reset() -> None:
    c = cluster()
    t = Trial(c, policy(attempts=1, retry_on="reset"))
    t.start()
    assert t.error("reset") == "retry"
    t.backoff()
    assert t.head(200) == "forward"


def test_a_reset_before_the_first_byte_without_reset_in_the_policy_is_503_uc() -> None:
    c = cluster()
    t = Trial(c, policy(attempts=2, retry_on="connect-failure,refused-stream,503"))
    t.start()
    assert t.error("reset") == "fail" and t.reply == (F.UC, "")
    t = Trial(c, policy(attempts=2, retry_on="connect-failure"))
    t.start()
    assert t.error("protocol-error") == "fail" and t.reply == (F.UPE, "")
    assert idle(c)


def test_a_reset_after_the_first_byte_aborts_the_client_and_is_not_retried() -> None:
    c = cluster()
    t = Trial(c, policy(attempts=3, retry_on="5xx,reset"))
    t.start()
    assert t.head(200) == "forward" and t.att.state == RESPONDING
    assert t.error("reset") == "abort" and t.aborted == F.UC
    assert t.sent_to == ["10.0.0.1"] and c.breaker.retries == 0 and idle(c)
    t = Trial(c, policy(attempts=3, retry_on="5xx,reset"))
    t.start()
    t.head(200)
    assert t.error("protocol-error") == "abort" and t.aborted == F.UPE


# ---- the stale keep-alive connection replay ----------------------------------------------------


def test_a_reset_on_a_reused_connection_is_sent_again_once_at_once_outside_the_policy() -> None:
    c = cluster()
    t = Trial(c, policy(attempts=0))  # no retries at all
    t.start()
    assert t.error("reset", reused=True) == "connect"  # no backoff, no retry counted
    assert t.att.tries == 1 and c.breaker.retries == 0 and t.delays == []
    assert t.error("reset", reused=True) == "fail" and t.reply == (F.UC, "")  # once only
    assert len(t.sent_to) == 2 and idle(c)


def test_the_stale_replay_is_only_for_idempotent_requests_that_can_be_replayed() -> None:
    c = cluster()
    t = Trial(c, policy(attempts=0), method="POST")
    t.start()
    assert t.error("reset", reused=True) == "fail" and t.reply == (F.UC, "")
    t = Trial(c, policy(attempts=0), method="PUT")
    t.start()
    t.att.replayable = False  # the body outgrew the replay buffer
    assert t.error("reset", reused=True) == "fail"
    t = Trial(c, policy(attempts=0))
    t.start()
    assert t.error("reset", reused=False) == "fail"  # a fresh connection: the upstream did refuse it
    assert idle(c)


def test_a_body_too_large_to_replay_is_not_retried() -> None:
    c = cluster()
    t = Trial(c, policy(attempts=2, retry_on="5xx"), method="POST")
    t.start()
    t.att.replayable = False
    assert t.head(503) == "forward" and t.forwarded == ""  # nothing to send again: not URX either
    t.end(503)
    t = Trial(c, policy(attempts=2, retry_on="5xx"), method="POST")
    t.start()
    t.att.replayable = False
    assert t.error("connect-failure") == "fail" and t.reply == (F.UF, "")
    assert c.breaker.retries == 0 and idle(c)


# ---- client aborts ------------------------------------------------------------------------------


def test_client_abort_during_an_attempt_frees_everything_and_later_events_do_nothing() -> None:
    c = cluster()
    t = Trial(c, policy(per_try=0.2), timeout=1.0, now=0.0)
    t.start()
    t.att.cancel()
    assert t.att.state == DONE and idle(c)
    assert t.head(200) == "nothing"
    assert t.error("reset") == "nothing"
    assert t.wake(5.0) == "nothing"
    t.att.cancel()  # twice is harmless
    assert idle(c) and c.breaker.active_requests == 0


def test_client_abort_during_a_backoff_gives_back_the_retry_slot() -> None:
    c = cluster(max_retries=1)
    t = Trial(c, policy(attempts=2))
    t.start()
    assert t.head(503) == "retry" and c.breaker.active_retries == 1
    t.att.cancel()
    assert idle(c)
    assert t.backoff() == "nothing" and t.sent_to == ["10.0.0.1"]
    other = Trial(c, policy(attempts=2))
    other.start()
    assert other.head(503) == "retry"  # the budget slot is free for the next request


def test_client_abort_while_the_response_streams() -> None:
    c = cluster()
    t = Trial(c, policy())
    t.start()
    t.head(200)
    t.att.cancel()
    assert idle(c) and t.error("reset") == "nothing"


def test_a_retry_avoids_the_hosts_already_tried_as_istios_previous_hosts_predicate() -> None:
    # LEAST_REQUEST with an rng that keeps choosing the first endpoint, then the second.
    picks = iter([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.9, 0.9] + [0.5] * 20)
    c = Cluster(
        "outbound|9080||reviews.default.svc.cluster.local",
        "reviews.default.svc.cluster.local",
        9080,
        endpoints=[Endpoint(f"10.0.0.{i}", 9080) for i in (1, 2, 3)],
        lb_policy="LEAST_REQUEST",
        breaker=CircuitBreaker(),
        rng=lambda: next(picks),
    )
    t = Trial(c, policy(attempts=2, retry_on="5xx"))
    assert t.start() == "connect"
    assert t.head(503) == "retry" and t.backoff() == "connect"
    # the second pick was the first host again (two rng draws per pick, one for the backoff): re-picked
    assert t.sent_to == ["10.0.0.1", "10.0.0.3"]
    assert t.head(200) == "forward"
    t.end(200)
    assert idle(c)


def test_a_retry_goes_back_to_a_tried_host_when_it_is_the_only_one() -> None:
    c = cluster(1)
    t = Trial(c, policy(attempts=1, retry_on="5xx"))
    assert t.start() == "connect" and t.head(503) == "retry" and t.backoff() == "connect"
    assert t.sent_to == ["10.0.0.1", "10.0.0.1"]  # five picks, all the same host: it is used
    assert t.head(200) == "forward"
