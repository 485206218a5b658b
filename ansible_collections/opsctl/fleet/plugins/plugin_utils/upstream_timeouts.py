"""How long a proxy waits for its backend before it answers 504 itself (nginx for php-fpm, a
balancer for nginx), and the shortest client timeout that leaves room for it: one rule for the
capacity model, the event profile and any role that writes a proxy's timeouts.

F2: the proxy must give up before its client does, or the client's give-up (a 499) never counts
as a failed backend and a sick host is never taken out. Timeouts are whole milliseconds
(durations.millis). They stay whole seconds wherever whole seconds fit, so a profile sized before
keeps its plan, and go to milliseconds where no whole second fits between p99 and the client
timeout (an API client that gives up after 1 s).

What must fit inside the client timeout C, for the p99 request time P:
    connect CONNECT_MS + P + a queue wait of QUEUE_WAIT_MS + ANSWER_MS for the 504 to reach
    the client before it gives up.
A shorter client timeout is refused: no timeout lets the proxy see a sick backend first.

The read timeout (send = read):
    wanted        max(2 x P, P + 1 s): room for a request queued behind others
    whole seconds min(ceil(wanted), floor(C - ANSWER_MS)), when that is at least P + QUEUE_WAIT_MS;
                  connect min(2 s, read)
    milliseconds  otherwise min(wanted, C - CONNECT_MS - ANSWER_MS); connect CONNECT_MS
php-fpm counts whole seconds: its request_terminate_timeout is the read timeout's next second
up (durations.ceil_seconds), so the proxy gives up first and answers 504, and php-fpm kills the
stuck worker within that second (plus its check interval, a third of its shortest timeout).
"""

# F1-F7 and seed NNN: docs/failure-modes.md and docs/incidents.md of the opsctl repository.

from __future__ import annotations

import math
from dataclasses import dataclass

from ansible_collections.opsctl.fleet.plugins.plugin_utils.durations import ceil_seconds, millis, ms_text

# A healthy php-fpm or nginx accepts within a millisecond on the host or the LAN; a backend whose
# accept queue is full should be given up on at once (one incident's internal vhost ran 100 ms
# fastcgi timeouts). Used where whole seconds do not fit; whole-second plans keep min(2 s, read).
CONNECT_MS = 100
WHOLE_CONNECT_MS = 2000
# The least room above p99 for a request that waited behind others in php-fpm's queue.
QUEUE_WAIT_MS = 100
# Between the proxy's give-up and the client's: the 504 travels back, and the client's clock
# started before its request reached the proxy.
ANSWER_MS = 100


def shortest_client_ms(p99_ms: float) -> int:
    """The shortest client timeout that holds connect + p99 + queue wait + the 504's way back."""
    return CONNECT_MS + math.ceil(p99_ms) + QUEUE_WAIT_MS + ANSWER_MS


def client_problem(client_s: float, p99_ms: float) -> str:
    """Why a client timeout cannot be sized for this p99, in one line (no key name), or ""."""
    if abs(float(client_s) * 1000 - millis(client_s)) > 1e-6:
        return f"{client_s!r} has more than three decimals: timeouts are whole milliseconds"
    need = shortest_client_ms(p99_ms)
    if millis(client_s) < need:
        return (f"{client_s:g} s is too short for p99 {p99_ms:g} ms: it must hold connect {CONNECT_MS} ms "
                f"+ p99 {p99_ms:g} ms + {QUEUE_WAIT_MS} ms queue wait + {ANSWER_MS} ms for nginx's 504 to reach "
                f"the client = {need} ms, or the client gives up before nginx sees a sick backend (F2); "
                f"raise it to {need / 1000:g} or lower p99_ms")
    return ""


@dataclass(frozen=True)
class Upstream:
    """The proxy's timeouts for one profile, in milliseconds, and why."""
    read_ms: int
    wanted_ms: int
    whole: bool         # whole seconds fit; else milliseconds
    client_ms: int

    def connect_ms(self, read_ms: int) -> int:
        """The connect timeout for a read timeout (the model's or an override): never above it."""
        return min(WHOLE_CONNECT_MS if self.whole else CONNECT_MS, read_ms)

    def read_why(self) -> str:
        """How read_ms was reached, for the plan's reason."""
        wanted = f"max(2 x p99, p99 + 1 s) = {ms_text(self.wanted_ms)}"
        if self.whole:
            return (f"{wanted}, in whole seconds" if self.read_ms >= self.wanted_ms else
                    f"{wanted}, capped at the last whole second {ANSWER_MS} ms or more below the client timeout")
        # Milliseconds only ever cap: where `wanted` fits below the client, a whole second does too.
        return (f"no whole second fits: client {ms_text(self.client_ms)} - connect {CONNECT_MS} ms - {ANSWER_MS} ms "
                f"for the 504 to reach the client, below {wanted}")


def derive(client_s: float, p99_ms: float) -> Upstream:
    """The read timeout for this client timeout and p99 (module docstring); ValueError when the
    client timeout is too short (client_problem)."""
    problem = client_problem(client_s, p99_ms)
    if problem:
        raise ValueError(problem)
    client, p99 = millis(client_s), math.ceil(p99_ms)
    wanted = max(2 * p99, p99 + 1000)
    whole = min(ceil_seconds(wanted), (client - ANSWER_MS) // 1000) * 1000
    if whole >= p99 + QUEUE_WAIT_MS:
        return Upstream(read_ms=whole, wanted_ms=wanted, whole=True, client_ms=client)
    return Upstream(read_ms=min(wanted, client - CONNECT_MS - ANSWER_MS), wanted_ms=wanted, whole=False,
                    client_ms=client)
