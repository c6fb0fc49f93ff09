"""The edge of the hospital: what a node checks on the way in and says on the way out.

Every message passes ``site_boundary`` first (the outermost ClientApp mod). On the way in it holds
SecAgg+'s stages to the site's policy (``client.policy``): the first stage's share count, threshold
and round size, the last stage's lists of live and dropped nodes. On the way out it stands between
any exception and the coordinator: Flower sends ``str(exception)`` to the server, and SarcoFed's
messages name files and values (a path, "weight_kg 450 outside ..."). The full exception goes to the
node's own log; the server gets a category ("data error at the site, manifest row 12") and nothing
else.
"""

from __future__ import annotations

import logging
import re
from typing import cast

from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import log
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

from client.policy import PolicyRefusal, SitePolicy, UpdateGuardError
from common.errors import CheckpointError, ConfigError, InputDataError
from flower_compat import MASK_PRG_CONFIG_KEY, mask_prg_version


class SiteError(Exception):
    """What the coordinator is told when a site does not reply: a category, no paths, no values."""


_LINE = re.compile(r"\b(?:line|row) (\d+)\b")


def category(error: BaseException) -> str:
    """The part of an exception a hospital may send: its kind, the policy rule, a manifest row number."""
    if isinstance(error, PolicyRefusal):
        return f"refused by the site's policy ({error.rule})"
    if isinstance(error, UpdateGuardError):
        return f"update guard: {error.category}; the site left the round"
    if isinstance(error, InputDataError):
        line = _LINE.search(str(error))
        where = f", manifest line {line.group(1)}" if line and error.path and error.path.suffix == ".csv" else ""
        return f"data error at the site{where} (details in the site's log)"
    if isinstance(error, ConfigError):
        return "configuration error at the site (details in the site's log)"
    if isinstance(error, CheckpointError):
        return "model error at the site (details in the site's log)"
    if isinstance(error, MemoryError):
        return "out of memory at the site"
    return "internal error at the site (details in the site's log)"


def check_mask_generator(servers: object) -> None:
    """Refuse a SecAgg+ round whose server masks with another generator than this node (the sum would be garbage)."""
    ours = mask_prg_version()
    if servers != ours:
        raise PolicyRefusal(
            "mask-prg", f"the server masks with {servers or 'an unnamed generator'!s}, this node with {ours}"
        )


def check_secagg_stage(msg: Message, policy: SitePolicy) -> None:
    """Hold the stage's SecAgg+ settings to the policy (no-op for messages without SecAgg+ settings)."""
    if msg.metadata.message_type != MessageType.TRAIN or RECORD_KEY_CONFIGS not in msg.content.config_records:
        return
    configs = msg.content.config_records[RECORD_KEY_CONFIGS]
    stage = configs.get(Key.STAGE)
    try:
        if stage == Stage.SETUP:
            check_mask_generator(configs.get(MASK_PRG_CONFIG_KEY))
            policy.check_secagg_setup(
                int(cast(int, configs[Key.SAMPLE_NUMBER])),
                int(cast(int, configs[Key.SHARE_NUMBER])),
                int(cast(int, configs[Key.THRESHOLD])),
            )
        elif stage == Stage.UNMASK:
            policy.check_unmask(
                msg.metadata.dst_node_id,
                cast(list[int], configs[Key.ACTIVE_NODE_ID_LIST]),
                cast(list[int], configs[Key.DEAD_NODE_ID_LIST]),
            )
    except (KeyError, TypeError, ValueError) as error:
        raise PolicyRefusal("secagg", f"malformed SecAgg+ settings in stage {stage!r}: {error!r}") from None


def site_boundary(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Check the message against the site's policy, run it, and let only a category leave on failure."""
    try:
        simulated = str(ctxt.run_config.get("simulated-site-policy", "")) if "data-path" not in ctxt.node_config else ""
        check_secagg_stage(msg, SitePolicy.for_node(ctxt.node_config, simulated))
        return call_next(msg, ctxt)
    except Exception as error:  # anything: the boundary decides what the coordinator sees
        log(
            logging.ERROR,
            "site: %s message refused or failed; the server is told only: %s",
            msg.metadata.message_type,
            category(error),
            exc_info=True,
        )
        raise SiteError(category(error)) from None
