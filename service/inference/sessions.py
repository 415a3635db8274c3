"""Plan sessions: a robot's control loop as server-side state, one plan per new camera frame.

A session holds what a control loop would otherwise send (or recompute) at every step: the goal
state, the planner settings, the encoded recent observations and the previous plan. Each step
encodes only the new frame (the encoder is frame-causal, one tubelet per state) and warm-starts the
search from the previous plan shifted by the actions executed since (receding horizon), with the
session's smaller `warm` settings: most of the search was done at earlier steps.

The store is one owner of that state, in this process: the encoded history and the warm plan are
per-replica and large compared with a request (states are N x D floats per frame), and each step
needs them at once, so in Redis mode a session lives on the replica that created it and clients
(or the load balancer, by session affinity on the session id) go back to it; a replica that dies
loses its sessions and the client creates a new one (cheap: the first step is a cold plan).

Bounds: at most `max_sessions` at once (more are refused, `TooManySessions` -> 429); a session
unused for its TTL is dropped at the next store access; one step at a time per session
(`SessionBusy` -> 409), since a second concurrent step would race on the warm plan.

Nothing here knows HTTP: `service.errors` maps these errors.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.inference.errors import InferenceError
from training.planning import PlannerConfig

log = logging.getLogger("lawm.sessions")


class UnknownSession(InferenceError):
    reason = "unknown_session"

    def __init__(self, session_id: str) -> None:
        super().__init__(
            f"no session {session_id!r} on this server (never created, ended, expired after its TTL, or created "
            "on another replica)",
            "create a new one with POST /v1/sessions; in a scaled-out deployment route a session's requests "
            "to the replica that created it",
        )


class SessionBusy(InferenceError):
    reason = "session_busy"

    def __init__(self, session_id: str) -> None:
        super().__init__(
            f"session {session_id!r} is already computing a step; a session takes one step at a time",
            "wait for the previous step's answer before sending the next frame",
        )


class StepOutOfOrder(InferenceError):
    reason = "step_out_of_order"

    def __init__(self, session_id: str, expected: int, got: int) -> None:
        super().__init__(
            f"session {session_id!r} expects step {expected}, got step {got}",
            "send steps in order (omit `step` to let the server count)",
        )


class TooManySessions(InferenceError):
    reason = "too_many_sessions"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"{limit} plan sessions are open, the most this server keeps",
            "end finished sessions with DELETE /v1/sessions/{id}, or retry after the Retry-After seconds "
            "(LAWM_MAX_SESSIONS sets the limit; unused sessions expire after their TTL)",
        )


def warm_config(cold: PlannerConfig, samples: int | None, iterations: int | None) -> PlannerConfig:
    """The settings of warm steps: by default a quarter of the samples (at least the elites) and a
    third of the iterations (at least one), since the search starts where the last one ended."""
    return dataclasses.replace(
        cold,
        samples=samples if samples is not None else max(cold.elites, cold.samples // 4),
        iterations=iterations if iterations is not None else max(1, cold.iterations // 3),
    )


def shifted(plan: np.ndarray, by: int) -> np.ndarray:
    """The receding-horizon warm start: `plan` `[H, A]` without its first `by` actions (executed),
    the last action repeated to fill the horizon again."""
    by = min(by, len(plan) - 1)
    return np.concatenate([plan[by:], np.repeat(plan[-1:], by, axis=0)]) if by > 0 else plan.copy()


@dataclass
class SessionSpec:
    """What a session was created with."""

    cold: PlannerConfig  # the first step's settings
    warm: PlannerConfig  # later steps' settings
    goal: np.ndarray  # [N, D]
    goal_id: str
    ttl_s: float
    control_period_s: float | None  # each step's soft deadline: the best plan so far is returned past it
    execute: int  # actions the client executes per step (the warm start shifts by this many)
    history: int  # encoded observations kept (the model's context length)
    history_context: bool = False  # plan with the kept observations as the world model's context
    cold_deadline_s: float | None = None  # the first (cold) step's period; None: control_period_s
    plan_ahead: bool = False  # search the next step's plan while the robot executes this one's
    ahead_tolerance: float = 0.25  # largest relative state error at which the plan made ahead is used


@dataclass
class PlanSession:
    id: str
    spec: SessionSpec
    created: float
    last_used: float
    steps: int = 0
    busy: bool = False
    plan: np.ndarray | None = None  # [H, A] the previous step's best sequence
    history: collections.deque[np.ndarray] = field(default_factory=collections.deque)  # [N, D] each
    ahead: asyncio.Task[Any] | None = None  # the next step's plan, being searched ahead (plan_ahead)

    @property
    def expires_at(self) -> float:
        return self.last_used + self.spec.ttl_s

    def start_ahead(self, task: asyncio.Task[Any]) -> None:
        """Keep the task that plans the next step ahead (the previous one is cancelled)."""
        self.cancel_ahead()
        task.add_done_callback(_quiet)
        self.ahead = task

    def take_ahead(self) -> asyncio.Task[Any] | None:
        """The plan-ahead task for this step, handed over once."""
        task, self.ahead = self.ahead, None
        return task

    def cancel_ahead(self) -> None:
        if self.ahead is not None:
            self.ahead.cancel()
            self.ahead = None

    def period(self) -> float | None:
        """This step's soft deadline after it starts: the control period, or for the first (cold)
        step the session's cold deadline when it has one."""
        if self.plan is None and self.spec.cold_deadline_s is not None:
            return self.spec.cold_deadline_s
        return self.spec.control_period_s

    def warm_start(self) -> np.ndarray | None:
        """The previous plan shifted by the executed actions, or None before the first step."""
        return None if self.plan is None else shifted(self.plan, self.spec.execute)

    def config(self) -> PlannerConfig:
        """This step's settings: cold first, then warm, with a fresh seed per step (the same noise at
        every step would search the same offsets around each warm start)."""
        cfg = self.spec.cold if self.plan is None else self.spec.warm
        return dataclasses.replace(cfg, seed=(cfg.seed + self.steps) % (2**63 - 1))


def _quiet(task: asyncio.Task[Any]) -> None:
    """A plan made ahead that failed is only a missed shortcut (the step searches itself): logged,
    never left as an unretrieved task exception."""
    if not task.cancelled() and task.exception() is not None:
        log.info("planning ahead failed: %s", task.exception())


class SessionStore:
    """The open sessions of this process; every method runs on the event loop (no locks needed)."""

    def __init__(self, max_sessions: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_sessions = max_sessions
        self.clock = clock
        self.sessions: dict[str, PlanSession] = {}

    def __len__(self) -> int:
        return len(self.sessions)

    def sweep(self) -> int:
        """Drop sessions past their TTL (a busy one is finishing a step and stays); returns how many."""
        now = self.clock()
        expired = [sid for sid, s in self.sessions.items() if not s.busy and s.expires_at <= now]
        for sid in expired:
            self.sessions.pop(sid).cancel_ahead()
        return len(expired)

    def create(self, spec: SessionSpec) -> PlanSession:
        self.sweep()
        if len(self.sessions) >= self.max_sessions:
            raise TooManySessions(self.max_sessions)
        now = self.clock()
        session = PlanSession(
            id="sess-" + secrets.token_hex(16), spec=spec, created=now, last_used=now,
            history=collections.deque(maxlen=spec.history),
        )
        self.sessions[session.id] = session
        return session

    def get(self, session_id: str) -> PlanSession:
        self.sweep()
        session = self.sessions.get(session_id)
        if session is None:
            raise UnknownSession(session_id)
        return session

    def begin_step(self, session_id: str, step: int | None = None) -> PlanSession:
        """Claim the session for one step: `SessionBusy` while another step runs, `StepOutOfOrder`
        when the client numbers its steps and this is not the next one."""
        session = self.get(session_id)
        if session.busy:
            raise SessionBusy(session_id)
        if step is not None and step != session.steps:
            raise StepOutOfOrder(session_id, session.steps, step)
        session.busy = True
        session.last_used = self.clock()
        return session

    def finish_step(self, session: PlanSession, state: np.ndarray | None, plan: np.ndarray) -> None:
        """Record a step's observation state `[N, D]` (None: the frame was never encoded, its deadline
        passed first) and best plan `[H, A]`, and release the session."""
        if state is not None:
            session.history.append(state)
        session.plan = plan
        session.steps += 1
        session.busy = False
        session.last_used = self.clock()

    def abandon_step(self, session: PlanSession) -> None:
        """Release the session after a failed step; its state is as before the step."""
        session.busy = False
        session.last_used = self.clock()

    def cancel_speculation(self) -> None:
        """Cancel every plan being made ahead (at shutdown: no step will come for them)."""
        for session in self.sessions.values():
            session.cancel_ahead()

    def delete(self, session_id: str) -> PlanSession:
        session = self.get(session_id)
        del self.sessions[session_id]
        session.cancel_ahead()
        return session
