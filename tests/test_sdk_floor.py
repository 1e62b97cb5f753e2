"""The handlers' API calls stay valid on the oldest botocore the project supports.

The Lambda runtime ships its own boto3, older than the tests' botocore; a request member newer
than the runtime's model fails there before anything is sent. Every request member a handler
used anywhere in this session (tests/iam_recorder.py) must be modelled by botocore
MINIMUM_BOTOCORE, as vendored in tests/sdk_floor.json (tests/sdk_floor.py regenerates it).
Runs last (conftest) and skips when the handlers' tests did not all run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import botocore.session
import pytest

from tests import sdk_floor
from tests.iam_recorder import ApiCallRecorder
from tests.test_least_privilege import HANDLER_TEST_FILES

FLOOR = json.loads(sdk_floor.FLOOR_FILE.read_text())


@pytest.fixture(scope="module")
def recorded(api_calls: ApiCallRecorder, fully_run_test_files: set[str]) -> dict[str, set[str]]:
    for handler, test_file in HANDLER_TEST_FILES.items():
        if test_file not in fully_run_test_files:
            pytest.skip(f"{test_file} did not run in full: the calls of {handler} are incomplete")
    if path := os.environ.get(sdk_floor.RECORDED_MEMBERS_ENV):
        members = {op: sorted(paths) for op, paths in api_calls.request_members.items()}
        Path(path).write_text(json.dumps(members, indent=1, sort_keys=True))
    return api_calls.request_members


def test_every_request_member_the_handlers_use_exists_in_the_minimum_botocore(recorded):
    missing = sdk_floor.missing_members(recorded, FLOOR["operations"])
    assert not missing, (
        f"handler calls use request members botocore {FLOOR['botocore']} does not model, so "
        "they fail on a Lambda runtime that old: avoid them, or raise the minimum "
        "(tests/sdk_floor.py)\n" + "\n".join(missing)
    )


def test_every_operation_the_handlers_call_is_in_the_floor(recorded):
    assert set(recorded) <= set(sdk_floor.HANDLER_OPERATIONS), (
        "add the new operation to HANDLER_OPERATIONS and regenerate tests/sdk_floor.json: "
        f"{sorted(set(recorded) - set(sdk_floor.HANDLER_OPERATIONS))}"
    )


def test_the_vendored_floor_is_the_stated_minimum_and_covers_every_listed_operation():
    assert FLOOR["botocore"] == sdk_floor.MINIMUM_BOTOCORE
    assert sorted(FLOOR["operations"]) == sorted(sdk_floor.HANDLER_OPERATIONS)


def test_the_floor_is_a_subset_of_the_installed_botocore():
    """A generated file, not a hand-written one: newer models only ever add members."""
    session = botocore.session.get_session()
    for operation, members in FLOOR["operations"].items():
        service, name = operation.split(".")
        input_shape = session.get_service_model(service).operation_model(name).input_shape
        assert set(members) <= sdk_floor.modelled_member_paths(input_shape), operation


def test_a_member_newer_than_the_floor_is_reported():
    """StartImagePipelineExecution's `tags` arrived after the floor: using it is caught."""
    operation = "imagebuilder.StartImagePipelineExecution"
    model = botocore.session.get_session().get_service_model("imagebuilder")
    input_shape = model.operation_model("StartImagePipelineExecution").input_shape
    request = {"imagePipelineArn": "arn", "clientToken": "t", "tags": {"golden-ami:x": "y"}}
    used = sdk_floor.used_member_paths(input_shape, request)

    assert used == {"imagePipelineArn", "clientToken", "tags"}  # map keys are data
    assert sdk_floor.missing_members({operation: used}, FLOOR["operations"]) == [
        f"{operation}: tags"
    ]


def test_nested_members_are_followed_through_structures_and_lists():
    model = botocore.session.get_session().get_service_model("autoscaling")
    input_shape = model.operation_model("StartInstanceRefresh").input_shape
    used = sdk_floor.used_member_paths(
        input_shape,
        {
            "AutoScalingGroupName": "g",
            "Preferences": {"AlarmSpecification": {"Alarms": ["a"]}, "BakeTime": 300},
        },
    )
    assert used == {
        "AutoScalingGroupName",
        "Preferences",
        "Preferences.AlarmSpecification",
        "Preferences.AlarmSpecification.Alarms",
        "Preferences.BakeTime",
    }
