"""Step Functions on moto's ASL interpreter, with its waits on an emulated clock.

moto 5.2 runs Amazon States Language for real (`mock_aws(config={"stepfunctions":
{"execute_state_machine": True}})`): each execution is a thread that evaluates the definition,
calls Lambda tasks through boto3 (so `sandbox.lambda_invoke` routes them in-process) and
really sleeps in Wait states. `EmulatedClock` replaces only that sleep: a Wait state parks its
execution until the emulated clock passes the state's deadline, so a rollout with 60-second
polls and a 30-minute soak runs in milliseconds, in a deterministic order (a Retry's interval
waits on the same clock):

    with EmulatedClock(sfn) as clock:
        clock.run_until(lambda: ..., router)   # settle, drain queued Lambda, jump to next wake

`settle()` returns once every running execution is parked (in a Wait, or on a task token) or
finished, so the test thread never acts while an execution is between steps. Scheduled
callbacks (`at`) model the world outside Step Functions on the same clock, e.g. an instance
refresh that ends ten minutes after it started. A stopped execution leaves its Wait at once,
as StopExecution does.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
    state_task_service_callback,
)
from moto.stepfunctions.parser.asl.component.state.wait.wait_function import wait_function
from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

from sandbox.lambda_invoke import LambdaRouter

SETTLE_TIMEOUT_SECONDS = 30.0  # real seconds an execution may take between two parks
_SPIN_SECONDS = 0.005


class ClockStuckError(RuntimeError):
    """Nothing is scheduled and no execution waits on the clock: the condition can never hold."""


class EmulatedClock:
    def __init__(self, stepfunctions: Any) -> None:
        self._sfn = stepfunctions
        self.now = 0.0
        self._lock = threading.Condition()
        # id(env) -> (emulated deadline, inf for a task token; whether it still waits)
        self._parked: dict[int, tuple[float, Callable[[], bool]]] = {}
        self._scheduled: list[tuple[float, int, Callable[[], None]]] = []
        self._sequence = itertools.count()
        self._saved: list[tuple[Any, str, Any]] = []
        self._active = 0  # executions started and not yet terminated

    # --- installation -----------------------------------------------------------------------

    def __enter__(self) -> EmulatedClock:
        clock = self
        callback_task = state_task_service_callback.StateTaskServiceCallback
        original_token_wait = callback_task._eval_wait_for_task_token

        def wait_interval(_function: Any, env: Any, wait_seconds: int) -> None:
            clock._park(env, clock.now + max(0, wait_seconds))

        def wait_for_task_token(task: Any, env: Any, **kwargs: Any) -> Any:
            endpoint = kwargs["callback_endpoint"]

            def waiting() -> bool:
                # Answered (SendTaskSuccess/Failure) or stopped: no longer parked, even before
                # the execution's thread has woken up to act on it.
                return endpoint._outcome is None and env.is_running()

            with clock._lock:
                clock._parked[id(env)] = (float("inf"), waiting)
            try:
                return original_token_wait(task, env=env, **kwargs)
            finally:
                with clock._lock:
                    clock._parked.pop(id(env), None)

        original_start = ExecutionWorker.start
        original_logic = ExecutionWorker._execution_logic

        def start(worker: Any) -> None:
            # Counted before StartExecution answers, uncounted once the status is final.
            with clock._lock:
                clock._active += 1
            original_start(worker)

        def execution_logic(worker: Any) -> None:
            try:
                original_logic(worker)
            finally:
                with clock._lock:
                    clock._active -= 1
                    clock._lock.notify_all()

        # A Retry's interval is a plain time.sleep in the interpreter: park it on the clock too.
        original_retry = retrier_decl.RetrierDecl._eval_body
        retrying = threading.local()

        def retry(retrier: Any, env: Any) -> None:
            retrying.env = env
            try:
                original_retry(retrier, env)
            finally:
                retrying.env = None

        class RetryTime:
            @staticmethod
            def sleep(seconds: float) -> None:
                clock._park(retrying.env, clock.now + max(0.0, seconds))

        self._patch(retrier_decl.RetrierDecl, "_eval_body", retry)
        self._patch(retrier_decl, "time", RetryTime)
        self._patch(ExecutionWorker, "start", start)
        self._patch(ExecutionWorker, "_execution_logic", execution_logic)
        self._patch(wait_function.WaitFunction, "_wait_interval", wait_interval)
        self._patch(callback_task, "_eval_wait_for_task_token", wait_for_task_token)
        return self

    def __exit__(self, *_: Any) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()

    def _patch(self, owner: Any, name: str, replacement: Any) -> None:
        self._saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, replacement)

    def _park(self, env: Any, deadline: float) -> None:
        def waiting() -> bool:
            return self.now < deadline and env.is_running()

        with self._lock:
            self._parked[id(env)] = (deadline, waiting)
            try:
                while self.now < deadline and env.is_running():
                    self._lock.wait(0.01)
            finally:
                self._parked.pop(id(env), None)

    # --- driving ------------------------------------------------------------------------------

    def at(self, delay_seconds: float, callback: Callable[[], None]) -> None:
        """Run `callback` on the test thread once the clock is `delay_seconds` further on."""
        heapq.heappush(self._scheduled, (self.now + delay_seconds, next(self._sequence), callback))

    def settle(self) -> None:
        """Return once every running execution is parked on the clock or a task token."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
        with self._lock:
            while self._active > sum(1 for _, waiting in self._parked.values() if waiting()):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"an execution did not park within {SETTLE_TIMEOUT_SECONDS} s"
                    )
                self._lock.wait(_SPIN_SECONDS)

    def step(self, seconds: float) -> None:
        """Move the clock `seconds` on, in step with a world that keeps its own time (the demo's
        minute ticks): waits due by then wake, scheduled callbacks due by then run."""
        with self._lock:
            self.now += seconds
            self._lock.notify_all()
        while self._scheduled and self._scheduled[0][0] <= self.now:
            heapq.heappop(self._scheduled)[2]()

    def advance(self) -> bool:
        """Jump to the next deadline or scheduled callback; False when there is none."""
        with self._lock:
            deadlines = [d for d, _ in self._parked.values() if d != float("inf")]
        if self._scheduled:
            deadlines.append(self._scheduled[0][0])
        if not deadlines:
            return False
        with self._lock:
            self.now = max(self.now, min(deadlines))
            self._lock.notify_all()
        while self._scheduled and self._scheduled[0][0] <= self.now:
            heapq.heappop(self._scheduled)[2]()
        return True

    def run_until(
        self,
        condition: Callable[[], bool],
        router: LambdaRouter,
        max_seconds: float = 7 * 24 * 3600,
    ) -> None:
        """Settle, run queued Lambda invocations, and move the clock until `condition` holds."""
        start = self.now
        while True:
            self.settle()
            if router.drain():
                continue  # what ran may have started or answered an execution
            if condition():
                return
            if self.now - start > max_seconds:
                raise ClockStuckError(f"condition not met within {max_seconds} emulated seconds")
            if not self.advance():
                raise ClockStuckError("no execution waits on the clock and nothing is scheduled")
