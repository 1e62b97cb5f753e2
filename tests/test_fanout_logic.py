"""Pure decisions of the fan-out handler (DESIGN §4): parsing, payload, outcomes, settings."""

from __future__ import annotations

import copy
import json

import pytest

from handlers.fanout import logic
from handlers.fanout.logic import (
    FAILED,
    INVOKED,
    NOT_ENROLLED,
    ConfigurationError,
    MalformedMessageError,
    Outcome,
)
from tests.pulumi_harness import FIXTURES
from tests.sns_events import sns_event

AVAILABLE_MESSAGE = json.loads((FIXTURES / "imagebuilder_sns_image_available.json").read_text())
FAILED_MESSAGE = json.loads((FIXTURES / "imagebuilder_sns_image_failed.json").read_text())


def two_region_message() -> dict:
    message = copy.deepcopy(AVAILABLE_MESSAGE)
    message["outputResources"]["amis"].append(
        {"region": "eu-west-1", "image": "ami-0fedcba9876543210", "name": "x", "accountId": "1"}
    )
    return message


def test_available_fixture_yields_the_design_payload():
    notice = logic.parse_sns_event(sns_event(two_region_message(), message_id="msg-1"))

    assert notice.is_available
    assert logic.build_payload(notice) == {
        "schemaVersion": 1,
        "imageArn": "arn:aws:imagebuilder:us-west-1:123456789012:image/example-linux-image/1.0.0/3",
        "imageName": "example-linux-image",
        "imageVersion": "1.0.0/3",
        "amis": {"us-west-1": "ami-01a23bc4def5a6789", "eu-west-1": "ami-0fedcba9876543210"},
        "correlationId": "msg-1",
    }


def test_semver_beyond_64_bits_is_parsed_exactly_and_never_through_a_float():
    raw = json.dumps(AVAILABLE_MESSAGE)
    assert "1237940039285380274899124227" in raw  # the fixture's semver exceeds 2**64
    assert json.loads(raw)["semver"] == 1237940039285380274899124227
    # A float round trip would corrupt it, and the parser would still accept the message.
    assert int(float(1237940039285380274899124227)) != 1237940039285380274899124227
    assert logic.parse_sns_event(sns_event(raw)).image_version == "1.0.0/3"


def test_failed_fixture_is_a_notice_without_amis():
    notice = logic.parse_sns_event(sns_event(FAILED_MESSAGE))

    assert not notice.is_available
    assert (notice.status, notice.status_reason) == ("FAILED", "Image Failure reason.")
    assert notice.amis is None


def _without(path: tuple[str, ...]) -> dict:
    message = copy.deepcopy(AVAILABLE_MESSAGE)
    target = message
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return message


def _with(path: tuple, value: object) -> dict:
    message = copy.deepcopy(AVAILABLE_MESSAGE)
    target = message
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return message


def _envelope_with(mutate) -> dict:
    event = sns_event(AVAILABLE_MESSAGE)
    mutate(event)
    return event


MALFORMED = [
    ("not a dict", ["Records"], "exactly one entry in Records"),
    ("no records", {}, "exactly one entry in Records"),
    ("two records", {"Records": [{}, {}]}, "exactly one entry in Records"),
    (
        "not from SNS",
        _envelope_with(lambda e: e["Records"][0].update(EventSource="aws:sqs")),
        "EventSource is not 'aws:sns'",
    ),
    ("no Sns", _envelope_with(lambda e: e["Records"][0].pop("Sns")), "Sns is missing"),
    (
        "no MessageId",
        _envelope_with(lambda e: e["Records"][0]["Sns"].pop("MessageId")),
        "MessageId is missing",
    ),
    (
        "Message not a string",
        _envelope_with(lambda e: e["Records"][0]["Sns"].update(Message={"state": {}})),
        "Message is missing or not a string",
    ),
    ("non-JSON message", sns_event("Image AVAILABLE!"), "Message is not JSON"),
    ("JSON array message", sns_event("[1, 2]"), "not a JSON object"),
    ("no state", sns_event(_without(("state",))), "no state.status"),
    ("no arn", sns_event(_without(("arn",))), "has no 'arn'"),
    ("foreign arn", sns_event(_with(("arn",), "arn:aws:s3:::bucket")), "not an Image Builder"),
    ("no name", sns_event(_without(("name",))), "has no 'name'"),
    ("no version", sns_event(_without(("version",))), "has no 'version'"),
    ("bool buildVersion", sns_event(_with(("buildVersion",), True)), "integer buildVersion"),
    ("no amis", sns_event(_with(("outputResources", "amis"), [])), "lists no outputResources"),
    ("no outputResources", sns_event(_without(("outputResources",))), "lists no outputResources"),
    (
        "ami without region",
        sns_event(_with(("outputResources", "amis"), [{"image": "ami-01a23bc4def5a6789"}])),
        r"amis\[0\] has no valid region",
    ),
    (
        "ami with bad id",
        sns_event(_with(("outputResources", "amis"), [{"region": "us-west-1", "image": "i-1"}])),
        r"amis\[0\] has no valid image id",
    ),
    (
        "two images for one region",
        sns_event(
            _with(
                ("outputResources", "amis"),
                [
                    {"region": "us-west-1", "image": "ami-01a23bc4def5a6789"},
                    {"region": "us-west-1", "image": "ami-0fedcba9876543210"},
                ],
            )
        ),
        "two images for us-west-1",
    ),
]


@pytest.mark.parametrize(
    ("event", "problem"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_input_is_rejected_naming_the_problem(event, problem):
    with pytest.raises(MalformedMessageError, match=problem):
        logic.parse_sns_event(event)


def test_non_available_message_needs_no_amis():
    message = _with(("state",), {"status": "CANCELLED"})
    del message["outputResources"]

    assert logic.parse_sns_event(sns_event(message)).status == "CANCELLED"


def test_role_session_name_fits_the_sts_limits():
    name = logic.role_session_name("a b/c" + "x" * 80)

    assert name.startswith("golden-ami-fanout-a-b-c")
    assert len(name) == 64


@pytest.mark.parametrize(
    ("account", "active"),
    [
        ({"Status": "ACTIVE", "State": "ACTIVE"}, True),
        ({"Status": "ACTIVE"}, True),  # older responses without State
        ({"Status": "SUSPENDED", "State": "SUSPENDED"}, False),
        ({"Status": "ACTIVE", "State": "PENDING_CLOSURE"}, False),  # State is the finer truth
        ({"State": "PENDING_ACTIVATION"}, False),
        ({}, False),
    ],
)
def test_only_active_accounts_are_targets(account, active):
    assert logic.account_is_active(account) is active


@pytest.mark.parametrize(
    ("stage", "code", "expected", "outcome"),
    [
        ("assume", "AccessDenied", False, NOT_ENROLLED),
        ("assume", "AccessDenied", True, FAILED),
        ("assume", "Throttling", False, FAILED),
        ("assume", "RegionDisabledException", False, FAILED),
        ("assume", "ConnectTimeoutError", False, FAILED),
        ("invoke", "ResourceNotFoundException", False, NOT_ENROLLED),
        ("invoke", "AccessDeniedException", False, FAILED),
        ("invoke", "TooManyRequestsException", False, FAILED),
        ("invoke", "AccessDenied", False, FAILED),  # only AssumeRole's denial means "no stack"
    ],
)
def test_error_classification(stage, code, expected, outcome):
    classified, reason = logic.classify_error(stage, code, expected)

    assert classified == outcome
    assert reason


def test_expected_account_without_the_function_in_any_region_is_failed():
    missing = "function not found: the workload stack does not cover this region"
    outcomes = [
        Outcome("111111111111", "eu-west-1", INVOKED),
        Outcome("111111111111", "us-east-1", NOT_ENROLLED, missing),
        Outcome("222222222222", "eu-west-1", NOT_ENROLLED, missing),
        Outcome("222222222222", "us-east-1", NOT_ENROLLED, missing),
        Outcome("333333333333", "eu-west-1", NOT_ENROLLED, missing),
    ]

    result = logic.unreached_expected_accounts(
        outcomes, frozenset({"111111111111", "222222222222"})
    )

    # Expected and covered in one region: the other region is simply not covered.
    assert result[:2] == outcomes[:2]
    # Expected and reachable nowhere: a broken enrolment, never "not-enrolled".
    assert [(o.outcome, o.reason) for o in result[2:4]] == [
        (FAILED, "expected account has no refresh function in any region of the image")
    ] * 2
    # Not expected: keeps the benefit of the doubt.
    assert result[4] == outcomes[4]
    assert logic.should_fail(result)


def test_summary_counts_every_pair_and_explains_only_problems():
    outcomes = [
        Outcome("222222222222", "us-east-1", NOT_ENROLLED, "AccessDenied on AssumeRole"),
        Outcome("111111111111", "us-east-1", INVOKED),
        Outcome("111111111111", "eu-west-1", FAILED, "TooManyRequestsException on Invoke"),
    ]

    summary = logic.summarize(outcomes)

    assert summary["counts"] == {INVOKED: 1, NOT_ENROLLED: 1, FAILED: 1}
    assert summary["accounts"] == [
        {"accountId": "111111111111", "regions": {"eu-west-1": FAILED, "us-east-1": INVOKED}},
        {"accountId": "222222222222", "regions": {"us-east-1": NOT_ENROLLED}},
    ]
    assert [p["reason"] for p in summary["problems"]] == [
        "TooManyRequestsException on Invoke",
        "AccessDenied on AssumeRole",
    ]


def test_only_failed_outcomes_fail_the_invocation():
    assert not logic.should_fail([Outcome("1", "r", INVOKED), Outcome("2", "r", NOT_ENROLLED)])
    assert logic.should_fail([Outcome("1", "r", INVOKED), Outcome("2", "r", FAILED)])


BASE_ENV = {
    "INVOKE_ROLE_NAME": "InvokeInstanceRefreshHandlerRole",
    "TARGET_FUNCTION_NAME": "LambdaForUpdateLaunchTemplate-And-InstanceRefresh",
}


def test_settings_defaults():
    settings = logic.parse_settings(BASE_ENV)

    assert settings.account_source == "organizations"
    assert settings.max_concurrency == 32
    assert settings.metric_namespace == "GoldenAmi"
    assert not settings.include_infra_account
    assert settings.expected_account_ids == frozenset()


def test_settings_lists_are_trimmed_and_deduplicated():
    settings = logic.parse_settings(
        BASE_ENV
        | {
            "ACCOUNT_SOURCE": "static",
            "STATIC_ACCOUNT_IDS": " 111111111111, 222222222222,111111111111,",
            "EXPECTED_ACCOUNT_IDS": "222222222222",
            "INCLUDE_INFRA_ACCOUNT": "TRUE",
            "MAX_CONCURRENCY": "8",
        }
    )

    assert settings.static_account_ids == ("111111111111", "222222222222")
    assert settings.expected_account_ids == {"222222222222"}
    assert settings.include_infra_account
    assert settings.max_concurrency == 8


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ({"ACCOUNT_SOURCE": "ldap"}, "ACCOUNT_SOURCE='ldap'"),
        ({"ACCOUNT_SOURCE": "static"}, "needs STATIC_ACCOUNT_IDS"),
        ({"STATIC_ACCOUNT_IDS": "12345"}, "STATIC_ACCOUNT_IDS entry '12345'"),
        ({"EXPECTED_ACCOUNT_IDS": "abc"}, "EXPECTED_ACCOUNT_IDS entry 'abc'"),
        ({"ORGANIZATIONAL_UNIT_IDS": "ou-bad"}, "ORGANIZATIONAL_UNIT_IDS entry 'ou-bad'"),
        ({"LIST_ACCOUNTS_ROLE_ARN": "ListRole"}, "LIST_ACCOUNTS_ROLE_ARN='ListRole'"),
        ({"INCLUDE_INFRA_ACCOUNT": "yes"}, "INCLUDE_INFRA_ACCOUNT='yes'"),
        ({"MAX_CONCURRENCY": "0"}, "MAX_CONCURRENCY='0'"),
        ({"MAX_CONCURRENCY": "many"}, "MAX_CONCURRENCY='many'"),
        ({"INVOKE_ROLE_NAME": ""}, "INVOKE_ROLE_NAME=''"),
        ({"TARGET_FUNCTION_NAME": "a function"}, "TARGET_FUNCTION_NAME='a function'"),
    ],
)
def test_bad_settings_name_the_variable_and_value(override, problem):
    with pytest.raises(ConfigurationError, match=problem):
        logic.parse_settings(BASE_ENV | override)


def test_missing_expected_accounts_ignores_the_infra_account():
    settings = logic.parse_settings(
        BASE_ENV | {"EXPECTED_ACCOUNT_IDS": "111111111111,222222222222,999999999999"}
    )

    missing = logic.missing_expected_accounts(settings, ["111111111111"], "999999999999")

    assert missing == ["222222222222"]
