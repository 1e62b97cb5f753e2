"""Refresh cases the mutation check (docs/mutation-check.md) found no test for.

A group on `$Latest`/`$Default` is pinned to a version number (§5.2), but that is a write, and a
run that ends `current` makes none (§5.8); neither does one that refuses the image or defers. So
the pin must come after every rule that can refuse, not merely before the new version.

Converge candidates come from DescribeImages. The rule layer re-checks the owner of every
candidate, so a listing that forgot `Owners` would still pick the right image, but only after
paging through every public AMI in the region that shares the prefix (anyone can publish one):
slow, and the trust decision would rest on a single check instead of two.
"""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from handlers.refresh.aws import RefreshAws
from tests import refresh_fixtures as fx
from tests import test_refresh_handler as refresh_world

# The refresh handler tests' moto + emulator world, offered to pytest under its name.
world = refresh_world.world


def floating_group(world: refresh_world.World, version: str, image_id: str) -> None:
    """Make the only target a group on `version` of a template whose every version uses image_id."""
    template_id = fx.launch_template(world.session, [image_id, image_id], default_version=2)
    world.targets.clear()
    world.add_group("ecs-floating", template_id, version)


@pytest.mark.parametrize("version", ["$Latest", "$Default"])
def test_a_floating_group_already_on_the_target_is_current_and_not_pinned(world, version):
    floating_group(world, version, world.new_ami)

    [result] = world.run(world.rollout(world.new_ami))

    assert result["outcome"] == "current" and "pinnedVersion" not in result
    assert world.writes() == []
    assert fx.group_template_spec(world.session, "ecs-floating")["Version"] == version


@pytest.mark.parametrize("version", ["$Latest", "$Default"])
def test_a_floating_group_offered_an_older_image_is_rejected_and_not_pinned(world, version):
    floating_group(world, version, world.new_ami)

    [result] = world.run(world.rollout(world.current_ami))

    assert result["outcome"] == "rejected" and "older than" in result["reason"]
    assert world.writes() == []


def test_a_floating_group_with_an_active_refresh_is_deferred_and_not_pinned(world):
    floating_group(world, "$Latest", world.current_ami)
    world.session.client("autoscaling").start_instance_refresh(AutoScalingGroupName="ecs-floating")

    [result] = world.run(world.rollout(world.new_ami))

    assert result["outcome"] == "deferred"
    assert world.writes() == []


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch) -> Iterator[boto3.Session]:
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    with mock_aws():
        yield boto3.Session(region_name=fx.REGION)


def test_converge_lists_only_the_infra_accounts_prefixed_images(session):
    infra_images = {fx.register_image(1), fx.register_image(3)}
    fx.register_image(9, owner=fx.OTHER_ACCOUNT)  # same prefix, someone else's
    fx.register_image(5, name="other-family-2025-01-05")  # the infra account's, other prefix

    listed = RefreshAws(session).images_named(fx.INFRA_ACCOUNT, fx.PREFIX)

    assert {image.image_id for image in listed} == infra_images
    assert {image.owner_id for image in listed} == {fx.INFRA_ACCOUNT}
