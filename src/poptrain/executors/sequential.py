"""The reference executor: one process, members take turns, deterministic for a seed.

Asynchronous PBT: the least-trained member (lowest slot on ties) trains until its next ready
point, then decides against the population's latest ready scores. Synchronous PBT: every
member trains to the next ready step, then the whole generation decides together.
"""

from __future__ import annotations

from poptrain.controller import Controller
from poptrain.executors._base import Executor
from poptrain.records import MemberRecord
from poptrain.trainable import Trainable


class SequentialExecutor(Executor):
    """Trains members one at a time in this process, all of them kept live in memory."""

    def run(self, controller: Controller) -> None:
        members = {m.slot: m for m in controller.resumable_members()}
        live = {slot: controller.start_member(member) for slot, member in members.items()}
        if controller.strategy.synchronous:
            self._synchronous(controller, members, live)
        else:
            self._asynchronous(controller, members, live)

    def _asynchronous(self, controller: Controller, members: dict[int, MemberRecord], live: dict[int, Trainable]) -> None:
        while members:
            slot = min(members, key=lambda s: (members[s].step, s))
            member = controller.train_until_ready(members[slot], live[slot])
            done = member.step >= controller.total_steps
            [(record, _)] = controller.ready_points([(member, live[slot])], decide=not done)
            if done:
                controller.finish_member(record)
                del members[slot], live[slot]
            else:
                members[slot] = record

    def _synchronous(self, controller: Controller, members: dict[int, MemberRecord], live: dict[int, Trainable]) -> None:
        while members:
            for slot in sorted(members):
                members[slot] = controller.train_until_ready(members[slot], live[slot])
            steps = {m.step for m in members.values()}
            if len(steps) != 1:
                raise RuntimeError(f"synchronous PBT needs members at one step, found steps {sorted(steps)}")
            done = steps.pop() >= controller.total_steps
            results = controller.ready_points([(members[s], live[s]) for s in sorted(members)], decide=not done)
            for record, _ in results:
                if done:
                    controller.finish_member(record)
                members[record.slot] = record
            if done:
                return
