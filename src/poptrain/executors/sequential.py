"""The reference executor: one process, members take turns, deterministic for a seed.

Asynchronous PBT: the least-trained member (lowest slot on ties) trains until its next ready
point, then decides against the population's latest ready scores. Synchronous PBT: every
member trains to the next ready step, then the whole generation decides together.
"""

from __future__ import annotations

from poptrain.controller import Controller
from poptrain.errors import TrainableError
from poptrain.executors._base import Executor
from poptrain.records import MemberRecord
from poptrain.trainable import Trainable


class SequentialExecutor(Executor):
    """Trains members one at a time in this process, all of them kept live in memory."""

    def run(self, controller: Controller) -> None:
        members = {m.slot: m for m in controller.resumable_members()}
        live: dict[int, Trainable | None] = dict.fromkeys(members)
        if controller.strategy.synchronous:
            self._synchronous(controller, members, live)
        else:
            self._asynchronous(controller, members, live)

    @staticmethod
    def _segment(controller: Controller, member: MemberRecord, live: dict[int, Trainable | None]) -> MemberRecord:
        """Train a member to its next stop. A failed attempt is recorded (the member rewound to its
        checkpoint, or replaced) and the member handed back to the scheduler with no live
        trainable, to be tried again."""
        try:
            trainable = live[member.slot]
            if trainable is None:
                trainable = live[member.slot] = controller.start_member(member)
            return controller.train_until_ready(member, trainable)
        except TrainableError as error:
            live[member.slot] = None
            # asynchronous: others may reach a checkpoint to copy; synchronous: not before this one
            return controller.fail(member, error, can_wait=not controller.strategy.synchronous)

    def _asynchronous(self, controller: Controller, members: dict[int, MemberRecord], live: dict[int, Trainable | None]) -> None:
        while members:
            # least trained first; a member that just failed waits for healthy ones at its step
            slot = min(members, key=lambda s: (members[s].step, members[s].failures, s))
            member = self._segment(controller, members[slot], live)
            if live[slot] is None:  # the attempt failed: rescheduled
                members[slot] = member
                continue
            done = member.step >= controller.total_steps
            try:
                [(record, _)] = controller.ready_points([(member, live[slot])], decide=not done)  # type: ignore[list-item]
            except TrainableError as error:  # state_dict/load_state_dict/set_hparams failed
                members[slot], live[slot] = controller.fail(member, error), None
                continue
            if done:
                controller.finish_member(record)
                del members[slot], live[slot]
            else:
                members[slot] = record

    def _synchronous(self, controller: Controller, members: dict[int, MemberRecord], live: dict[int, Trainable | None]) -> None:
        while members:
            pending = set(members)
            while pending:  # healthy members first; one that failed tries again after them
                slot = min(pending, key=lambda s: (members[s].failures, s))
                members[slot] = self._segment(controller, members[slot], live)
                if live[slot] is not None:
                    pending.discard(slot)
            steps = {m.step for m in members.values()}
            if len(steps) != 1:
                raise RuntimeError(f"synchronous PBT needs members at one step, found steps {sorted(steps)}")
            done = steps.pop() >= controller.total_steps
            try:
                results = controller.ready_points([(members[s], live[s]) for s in sorted(members)], decide=not done)  # type: ignore[misc]
            except TrainableError as error:
                failed = error.slot if error.slot in members else min(members)
                members[failed], live[failed] = controller.fail(members[failed], error), None
                continue
            for record, _ in results:
                if done:
                    controller.finish_member(record)
                members[record.slot] = record
            if done:
                return
