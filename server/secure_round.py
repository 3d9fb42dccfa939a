"""One round's SecAgg+ on the coordinator: participants, stages, deadlines and who hears what.

The round loop calls :meth:`SecureRound.advance`, which closes a stage once every party it
waits for has answered or its deadline passed; the servicer feeds each client's message to
:meth:`SecureRound.receive` and asks :meth:`SecureRound.reply_for` what that client hears
next. Stage 3's masked inputs arrive as ordinary (durably stored) updates, and the host hands
them over when that stage closes. Nothing here is thread-safe: the coordinator's lock guards it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import IntEnum

from fedft.core.errors import ProtocolError
from fedft.core.payload import MetricValue
from fedft.privacy.secagg.config import RoundConfig
from fedft.privacy.secagg.errors import SecAggError
from fedft.privacy.secagg.messages import (
    KeysBroadcast,
    MaskedInput,
    SharesDelivery,
    UnmaskRequest,
)
from fedft.privacy.secagg.server import Aggregate, SecAggServer
from fedft.proto.v1 import coordinator_pb2 as pb
from fedft.server.secagg_proto import (
    broadcast_to_proto,
    keys_from_proto,
    request_to_proto,
    share_keys_from_proto,
    shares_to_proto,
    unmask_from_proto,
)

logger = logging.getLogger(__name__)


class Stage(IntEnum):
    """What the round waits for."""

    KEYS = 1
    SHARES = 2
    MASKED = 3
    UNMASK = 4
    DONE = 5


class SecureRound:
    """The coordinator's half of one round's secure sum."""

    def __init__(
        self,
        config: RoundConfig,
        ids: Mapping[str, int],
        identities: Mapping[int, bytes],
        *,
        now: float,
        stage_timeout_s: float,
    ) -> None:
        """``ids`` maps client ids to protocol ids, ``identities`` protocol ids to enrolled keys."""
        self.config = config
        self.ids = dict(ids)
        self.identities = dict(identities)
        self.stage_timeout_s = stage_timeout_s
        self.stage = Stage.KEYS
        self.deadline = now + stage_timeout_s
        self.server = SecAggServer(config)
        self.failed = ""  # why the round failed ("" while it has not)
        self.result: Aggregate | None = None
        # Each stored masked input's public metrics by client id, kept when stage 3 closes
        # (the host reads every input then), so the round's close need not read them again.
        self.publics: dict[str, dict[str, MetricValue]] = {}
        self.sent: dict[int, Stage] = {}  # the last stage each participant answered
        self._accepted: dict[int, tuple[str, bytes]] = {}  # its last message, to spot retries
        self._broadcasts: dict[int, KeysBroadcast] = {}
        self._deliveries: dict[int, SharesDelivery] = {}
        self._requests: dict[int, UnmaskRequest] = {}

    # --- what clients send ---------------------------------------------------------------------
    def receive(self, pid: int, request: pb.SecAggStepRequest) -> None:
        """Take a participant's stage message; raises ProtocolError when it is refused."""
        kind = request.WhichOneof("message")
        if kind is None:
            return  # a poll
        body = getattr(request, kind).SerializeToString(deterministic=True)
        if self._accepted.get(pid) == (kind, body):
            return  # a retry of a message we took (its answer was lost): a poll
        if self.failed:
            raise ProtocolError(f"the round's secure aggregation failed: {self.failed}")
        try:
            if kind == "keys":
                ad = keys_from_proto(request.keys)
                if ad.sender != pid:
                    raise ProtocolError(f"you are participant {pid}, not {ad.sender}")
                self.server.receive_advertise(ad)
                self.sent[pid] = Stage.KEYS
            elif kind == "shares":
                self.server.receive_shares(share_keys_from_proto(pid, request.shares))
                self.sent[pid] = Stage.SHARES
            else:
                self.server.receive_unmask(unmask_from_proto(pid, request.unmask))
                self.sent[pid] = Stage.UNMASK
        except SecAggError as exc:  # a stage closed, a second message, a stranger's peer id
            raise ProtocolError(str(exc)) from None
        self._accepted[pid] = (kind, body)

    def takes_masked(self, pid: int) -> bool:
        """Whether participant ``pid`` may send its masked input now."""
        return self.stage is Stage.MASKED and pid in self._deliveries

    def reply_for(self, pid: int, *, masked: bool) -> pb.SecAggStepResponse | None:
        """What participant ``pid`` hears next, or None while its stage is open.

        ``masked``: whether its masked input is stored (stage 3 travels as an update).
        """
        if self.failed:
            return _done(self.failed)
        last = self.sent.get(pid)
        if masked and (last is None or last < Stage.MASKED):
            last = Stage.MASKED
        if last is None:
            late = self.stage > Stage.KEYS
            return _done("your keys came after the key stage closed") if late else None
        if self.stage <= last:
            return None  # the stage this client answered is still open
        return self._next_message(pid, last)

    def _next_message(self, pid: int, last: Stage) -> pb.SecAggStepResponse:
        """The server's message after stage ``last`` closed (a refusal if ``pid`` is cut)."""
        if last is Stage.KEYS:
            ad = self._broadcasts.get(pid)
            if ad is None:
                return _done("too few of your neighbours advertised keys")
            return pb.SecAggStepResponse(broadcast=broadcast_to_proto(ad, self.identities))
        if last is Stage.SHARES:
            delivery = self._deliveries.get(pid)
            if delivery is None:
                return _done("too few of your neighbours shared with you")
            return pb.SecAggStepResponse(shares=shares_to_proto(delivery.sealed))
        request = self._requests.get(pid) if last is Stage.MASKED else None
        if request is None:
            return _done("")  # done, or not asked: other survivors hold the shares it would
        return pb.SecAggStepResponse(unmask=request_to_proto(request))

    # --- the round loop ------------------------------------------------------------------------
    def ready(self, now: float, masked: int) -> bool:
        """Whether the current stage may close: everyone expected answered, or it is due.

        ``masked`` is how many masked inputs are stored (stage 3's deadline is the round's).
        """
        if self.stage is Stage.DONE:
            return False
        expected = {
            Stage.KEYS: len(self.ids),
            Stage.SHARES: len(self._broadcasts),
            Stage.MASKED: len(self._deliveries),
            Stage.UNMASK: len(self._requests),
        }[self.stage]
        answered = (
            masked
            if self.stage is Stage.MASKED
            else sum(1 for s in self.sent.values() if s is self.stage)
        )
        due = self.stage is not Stage.MASKED and now >= self.deadline
        return answered >= expected or due

    def advance(self, now: float, masked: Mapping[int, MaskedInput] | None = None) -> None:
        """Close the current stage; stage 3 takes the stored masked inputs by protocol id."""
        try:
            if self.stage is Stage.KEYS:
                self._broadcasts = self.server.close_advertise()
            elif self.stage is Stage.SHARES:
                self._deliveries = self.server.close_shares()
            elif self.stage is Stage.MASKED:
                for pid, msg in sorted((masked or {}).items()):
                    if pid in self._deliveries:
                        self.server.receive_masked(msg)
                self._requests = self.server.close_masked()
            elif self.stage is Stage.UNMASK:
                self.result = self.server.finish()
        except SecAggError as exc:
            self.fail(str(exc))
            return
        self.stage = Stage(self.stage + 1)
        self.deadline = now + self.stage_timeout_s

    def fail(self, why: str) -> None:
        """End the round's secure sum: nothing is aggregated and nothing more is revealed."""
        if not self.failed and self.stage is not Stage.DONE:
            logger.warning("secure aggregation failed at %s: %s", self.stage.name, why)
            self.failed = why or "failed"
            self.stage = Stage.DONE


def _done(reason: str) -> pb.SecAggStepResponse:
    return pb.SecAggStepResponse(done=pb.SecAggDone(reason=reason))
