"""The infra stack's Image Builder lifecycle policy, run by the emulator's documented rules.

The policy is taken from the infra stack under Pulumi mocks and executed against images the
emulated pipeline built (AMIs in moto's EC2): an AMI the rollout status tags in use survives a
run that deletes its neighbours, and images of an older recipe version age out like the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from components.image_pipeline import IN_USE_AMI_TAG
from handlers.recorder.aws import RecorderAws
from sandbox.image_builder import ImageBuilderEmulator, ImageBuilderError, ticking_clock
from tests.pulumi_harness import StackRun

SESSION = boto3.Session()
ACCOUNT = "123456789012"  # moto's default account: the clients act as the infra account
REGIONS = ["eu-west-1", "us-east-1"]
START = datetime(2025, 1, 1, tzinfo=UTC)
BUILD_INTERVAL = timedelta(days=10)
LIFECYCLE = "aws:imagebuilder/lifecyclePolicy:LifecyclePolicy"


@pytest.fixture(autouse=True)
def _no_public_ami_catalogue(monkeypatch):
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")


@pytest.fixture(scope="module")
def infra(stack_run: Callable[..., StackRun]) -> StackRun:
    return stack_run("infra")


@pytest.fixture
def policy(infra: StackRun) -> dict:
    deployed = infra.one(LIFECYCLE)
    return {
        key: _integers(deployed[key])
        for key in ("resourceType", "policyDetails", "resourceSelection")
    }


def _integers(value):
    """Pulumi's wire format carries every number as a float; the provider sends the schema's
    integers to the API as integers."""
    if isinstance(value, dict):
        return {key: _integers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integers(item) for item in value]
    return int(value) if isinstance(value, float) and value.is_integer() else value


@pytest.fixture
def recipe(infra: StackRun) -> dict:
    return infra.one("aws:imagebuilder/imageRecipe:ImageRecipe").inputs


@pytest.fixture
def image_builder():
    with mock_aws(), ImageBuilderEmulator(ticking_clock(START, BUILD_INTERVAL)) as emulator:
        yield emulator


def pipeline_arn(recipe: dict) -> str:
    return f"arn:aws:imagebuilder:{REGIONS[0]}:{ACCOUNT}:image-pipeline/{recipe['name']}"


def register(image_builder: ImageBuilderEmulator, recipe: dict, version: str) -> None:
    image_builder.register_pipeline(
        pipeline_arn(recipe),
        regions=REGIONS,
        ami_name="golden-ecs-{{ imagebuilder:buildDate }}",
        image_name=recipe["name"],
        recipe_version=version,
    )


def build(image_builder: ImageBuilderEmulator, recipe: dict, count: int) -> list[dict]:
    """`count` AVAILABLE images, BUILD_INTERVAL apart: their AMIs by region, oldest first."""
    client = SESSION.client("imagebuilder", region_name=REGIONS[0])
    amis = []
    for _ in range(count):
        arn = client.start_image_pipeline_execution(imagePipelineArn=pipeline_arn(recipe))[
            "imageBuildVersionArn"
        ]
        message = image_builder.run_build(arn)
        amis.append({ami["region"]: ami["image"] for ami in message["outputResources"]["amis"]})
    return amis


def registered(amis: dict[str, str]) -> dict[str, bool]:
    """Per region: is the AMI still registered in the infra account?"""
    return {region: ami_id in _owned_amis(region) for region, ami_id in amis.items()}


def _owned_amis(region: str) -> set[str]:
    images = SESSION.client("ec2", region_name=region).describe_images(Owners=["self"])["Images"]
    return {image["ImageId"] for image in images}


def long_after_the_last_build(count: int) -> datetime:
    return START + BUILD_INTERVAL * count + timedelta(days=400)


def test_an_ami_tagged_in_use_survives_a_run_that_deletes_its_neighbours(
    image_builder, policy, recipe
):
    register(image_builder, recipe, recipe["version"])
    oldest, second, *newest_five = build(image_builder, recipe, 7)
    # The rollout status marks what groups run, with the recorder's own adapter.
    recorder = RecorderAws(boto3.Session(region_name=REGIONS[0]), "golden-ami-rollout-status")
    for region, ami_id in oldest.items():
        recorder.tag_in_use(region, [ami_id])
    described = SESSION.client("ec2", region_name=REGIONS[0]).describe_images(
        ImageIds=[oldest[REGIONS[0]]]
    )["Images"][0]
    assert IN_USE_AMI_TAG.items() <= {t["Key"]: t["Value"] for t in described["Tags"]}.items()

    actions = image_builder.run_lifecycle(policy, long_after_the_last_build(7))

    # Retention keeps the newest five; the two older ones are impacted, and only the one no group
    # runs loses its AMIs: a group held on the oldest image can still roll back to it.
    assert registered(oldest) == {"eu-west-1": True, "us-east-1": True}
    assert registered(second) == {"eu-west-1": False, "us-east-1": False}
    assert all(all(registered(amis).values()) for amis in newest_five)
    assert sorted(ami for action in actions for ami in action["keptAmis"]) == sorted(
        oldest.values()
    )


def test_images_of_an_older_recipe_version_are_subject_to_the_policy(image_builder, policy, recipe):
    register(image_builder, recipe, "1.0.1")  # before a payload-runner change
    older_version = build(image_builder, recipe, 2)
    register(image_builder, recipe, recipe["version"])
    current_version = build(image_builder, recipe, 5)

    image_builder.run_lifecycle(policy, long_after_the_last_build(7))

    assert [registered(amis) for amis in older_version] == [
        {"eu-west-1": False, "us-east-1": False}
    ] * 2
    assert all(all(registered(amis).values()) for amis in current_version)


def test_the_newest_images_and_young_images_are_never_impacted(image_builder, policy, recipe):
    register(image_builder, recipe, recipe["version"])
    amis = build(image_builder, recipe, 7)
    # Young: nothing is past the retention age yet.
    assert image_builder.run_lifecycle(policy, START + BUILD_INTERVAL * 7) == []
    assert all(all(registered(each).values()) for each in amis)


def test_a_policy_the_api_refuses_is_refused(image_builder, policy):
    bad = {
        **policy,
        "resourceSelection": {"recipes": [{"name": "golden", "semanticVersion": "1.x"}]},
    }
    with pytest.raises(ImageBuilderError, match="semanticVersion"):
        image_builder.run_lifecycle(bad, START)


def test_an_ami_one_group_in_one_account_still_runs_survives_through_the_recorder(
    image_builder, policy, recipe
):
    """End to end: one group's report through the recorder is what keeps its AMI."""
    from handlers.recorder.app import Recorder
    from tests.rollout_fixtures import TABLE, create_table, result_event

    register(image_builder, recipe, recipe["version"])
    oldest, second, *newest_five = build(image_builder, recipe, 7)
    session = boto3.Session(region_name=REGIONS[0])
    create_table(session)
    recorder = Recorder(RecorderAws(session, TABLE))
    # One group of one account, in one region, still runs the oldest image (a convergence found
    # it current: the report names no image ARN, so the recorder reads the AMI's own tags).
    report = result_event(
        outcome="current",
        rollout=None,
        ami_before=oldest["eu-west-1"],
        ami_after=oldest["eu-west-1"],
    )
    assert recorder.record(report)["inUseTagged"] == [oldest["eu-west-1"]]

    image_builder.run_lifecycle(policy, long_after_the_last_build(7))

    assert registered(oldest) == {"eu-west-1": True, "us-east-1": False}
    assert registered(second) == {"eu-west-1": False, "us-east-1": False}
    assert all(all(registered(amis).values()) for amis in newest_five)


def test_the_recorder_writes_the_tag_the_lifecycle_policy_excludes():
    from handlers.recorder.logic import IN_USE_TAG, IN_USE_TAG_VALUE

    assert {IN_USE_TAG: IN_USE_TAG_VALUE} == IN_USE_AMI_TAG
