"""The hospital's boundary: SecAgg+ settings held to the site's policy, and nothing but a category leaves."""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

from client.boundary import SiteError, category, site_boundary
from common.errors import InputDataError
from flower_compat import MASK_PRG_CONFIG_KEY, mask_prg_version
from tests.conftest import app_run_config


@pytest.fixture(autouse=True)
def _task_identity():
    """Flower stamps messages with the running task's identity, as its ClientApp process would."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 7


def _secagg_message(stage: str, **values: object) -> Message:
    """A SecAgg+ stage message; a setup stage names this node's mask generator, as SarcoFed's server does."""
    named = {MASK_PRG_CONFIG_KEY: mask_prg_version()} if stage == Stage.SETUP else {}
    configs = ConfigRecord({Key.STAGE: stage, **named, **values})  # type: ignore[arg-type]  # Flower's ConfigRecord types its values narrower
    return Message(RecordDict({RECORD_KEY_CONFIGS: configs}), dst_node_id=7, message_type=MessageType.TRAIN)


def _context(node_config: dict) -> Context:
    return Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config=app_run_config())


def _never(msg: Message, ctxt: Context) -> Message:
    raise AssertionError("the message went past the boundary")


@pytest.mark.parametrize(
    ("stage", "values", "rule"),
    [
        pytest.param(
            Stage.SETUP,
            {Key.SAMPLE_NUMBER: 3, Key.SHARE_NUMBER: 3, Key.THRESHOLD: 1},
            "min-threshold",
            id="threshold-1",
        ),
        pytest.param(
            Stage.SETUP, {Key.SAMPLE_NUMBER: 2, Key.SHARE_NUMBER: 2, Key.THRESHOLD: 2}, "min-sites", id="two-sites"
        ),
        pytest.param(
            Stage.UNMASK, {Key.ACTIVE_NODE_ID_LIST: [8, 9], Key.DEAD_NODE_ID_LIST: [7]}, "unmask", id="own-node-dead"
        ),
    ],
)
def test_secagg_rounds_against_the_policy_never_reach_the_protocol(stage: str, values: dict, rule: str) -> None:
    with pytest.raises(SiteError, match=rf"refused by the site's policy \({rule}\)"):
        site_boundary(
            _secagg_message(stage, **values), _context({"data-path": "/data/a/manifest.csv", "site-name": "a"}), _never
        )


@pytest.mark.parametrize("servers", [None, "sarcofed/secaggplus-mask/chacha20/v1"], ids=["flower", "older"])
def test_a_round_masked_with_another_generator_is_refused(servers: str | None) -> None:
    """Two generators would make the sum garbage without any error: the node refuses the setup stage."""
    values = {Key.SAMPLE_NUMBER: 4, Key.SHARE_NUMBER: 4, Key.THRESHOLD: 3, MASK_PRG_CONFIG_KEY: servers}
    message = _secagg_message(Stage.SETUP, **{k: v for k, v in values.items() if v is not None})
    if servers is None:
        del message.content.config_records[RECORD_KEY_CONFIGS][MASK_PRG_CONFIG_KEY]
    with pytest.raises(SiteError, match=r"refused by the site's policy \(mask-prg\)"):
        site_boundary(message, _context({}), _never)


def test_a_site_with_a_stricter_policy_file_refuses_what_the_defaults_accept(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("min-sites = 5\n")
    message = _secagg_message(Stage.SETUP, **{Key.SAMPLE_NUMBER: 4, Key.SHARE_NUMBER: 4, Key.THRESHOLD: 3})
    with pytest.raises(SiteError, match="min-sites"):
        site_boundary(
            message, _context({"data-path": "/d/manifest.csv", "site-name": "a", "policy": str(policy)}), _never
        )


def test_only_a_category_leaves_the_site() -> None:
    error = InputDataError(
        "1 bad row(s):\n  line 12: weight_kg 450 outside 2..400 kg", "/srv/pacs/oncology/manifest.csv"
    )
    text = category(error)
    assert text == "data error at the site, manifest line 12 (details in the site's log)"
    assert "450" not in text and "/srv" not in text
    assert (
        category(RuntimeError("/srv/pacs/p001.dcm: patient 4711"))
        == "internal error at the site (details in the site's log)"
    )


def test_a_real_clientapp_failure_reaches_the_server_as_a_category(tmp_path: Path) -> None:
    """Through SarcoFed's ClientApp: a manifest with a bad value fails evaluation without saying where or what."""
    import torch
    from flwr.common import EvaluateIns, ndarrays_to_parameters
    from flwr.compat.common.recorddict_compat import evaluateins_to_recorddict

    from client.app import app
    from common.models.presets import get_preset
    from common.models.sarco import SarcoModel, get_weights

    site = tmp_path / "secret-oncology-ward"
    site.mkdir()
    (site / "manifest.csv").write_text(
        "patient_id,image_path,mask_path,sex,height_m,weight_kg,age,split\np1,a.dcm,,M,1.80,450,61,holdout\n"
    )
    torch.manual_seed(0)
    from common.secagg import pack

    arrays = [pack(get_weights(SarcoModel(get_preset("tiny")), "seg"))]
    content = evaluateins_to_recorddict(
        EvaluateIns(ndarrays_to_parameters(arrays), {"phase": "seg", "eval-phases": "seg"}), keep_input=True
    )
    context = Context(
        run_id=1,
        node_id=7,
        node_config={"data-path": str(site / "manifest.csv"), "site-name": "a"},
        state=RecordDict(),
        run_config=app_run_config(preset="tiny"),
    )
    with pytest.raises(SiteError) as failed:
        app(Message(content, dst_node_id=7, message_type=MessageType.EVALUATE), context)
    assert str(failed.value) == "data error at the site, manifest line 2 (details in the site's log)"
