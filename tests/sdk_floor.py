"""The oldest botocore the handlers' API calls validate against, and the check that keeps it so.

The handlers run on the Lambda runtime's boto3, which is older than the one the tests run on, and
botocore rejects a request member its model does not know (`ParamValidationError: Unknown
parameter`) before anything is sent. `tests/sdk_floor.json` lists, for every operation the
handlers call, the request members (dotted paths through structures and lists, `[]` for a list
element; map keys are data, not members) that botocore MINIMUM_BOTOCORE models.
`tests/test_sdk_floor.py` fails when a handler call uses a member outside it.

1.35.53 is the first botocore whose model has StartInstanceRefresh `Preferences.BakeTime`, the
newest member the refresh handler needs (found with `--check` below over PyPI's wheels). The
build trigger avoids StartImagePipelineExecution's `tags` (first in 1.40.41) and tags the new
image with TagResource instead.

Regenerate (downloads nothing itself; fetch the wheel first, outside the venv):

    pip download --no-deps --only-binary=:all: -d /tmp/botocore botocore==1.35.53
    python -m tests.sdk_floor /tmp/botocore/botocore-1.35.53-py3-none-any.whl

`--check WHEEL...` prints, per wheel, the recorded members it lacks (the recording comes from
a suite run: `GOLDEN_AMI_RECORDED_MEMBERS=/tmp/members.json pytest`), which is how the minimum
was found.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from botocore.model import ServiceModel, Shape

FLOOR_FILE = Path(__file__).with_name("sdk_floor.json")
MINIMUM_BOTOCORE = "1.35.53"
RECORDED_MEMBERS_ENV = "GOLDEN_AMI_RECORDED_MEMBERS"
# Every operation handlers/*/aws.py calls, as "<botocore service name>.<Operation>".
HANDLER_OPERATIONS = (
    "autoscaling.CreateOrUpdateTags",
    "autoscaling.DescribeAutoScalingGroups",
    "autoscaling.DescribeInstanceRefreshes",
    "autoscaling.StartInstanceRefresh",
    "autoscaling.UpdateAutoScalingGroup",
    "cloudwatch.DescribeAlarms",
    "cloudwatch.PutMetricData",
    "dynamodb.BatchWriteItem",
    "dynamodb.GetItem",
    "dynamodb.PutItem",
    "dynamodb.Query",
    "dynamodb.UpdateItem",
    "ec2.CreateLaunchTemplateVersion",
    "ec2.CreateTags",
    "ec2.DeleteTags",
    "ec2.DescribeImages",
    "ec2.DescribeInstances",
    "ec2.DescribeLaunchTemplateVersions",
    "ecs.DescribeCapacityProviders",
    "ecs.DescribeClusters",
    "events.PutEvents",
    "imagebuilder.ListImagePipelineImages",
    "imagebuilder.StartImagePipelineExecution",
    "imagebuilder.TagResource",
    "lambda.Invoke",
    "organizations.ListAccounts",
    "organizations.ListAccountsForParent",
    "organizations.ListOrganizationalUnitsForParent",
    "s3.ListObjectVersions",
    "sns.Publish",
    "stepfunctions.StartExecution",
    "sts.AssumeRole",
    "sts.GetCallerIdentity",
)


def used_member_paths(shape: Shape | None, params: Any, prefix: str = "") -> set[str]:
    """The member paths a request's parameters use, read along the input shape."""
    if shape is None or shape.type_name != "structure" or not isinstance(params, Mapping):
        return set()
    paths = set()
    for name, value in params.items():
        member = shape.members.get(name)
        path = f"{prefix}{name}"
        paths.add(path)
        if member is None:
            continue
        if member.type_name == "list" and isinstance(value, list):
            for item in value:
                paths |= used_member_paths(member.member, item, f"{path}[].")
        else:
            paths |= used_member_paths(member, value, f"{path}.")
    return paths


def modelled_member_paths(shape: Shape | None, prefix: str = "", seen: frozenset = frozenset()):
    """Every member path of an input shape (structures and lists followed, maps not)."""
    if shape is None or shape.type_name != "structure" or shape.name in seen:
        return set()
    paths = set()
    for name, member in shape.members.items():
        path = f"{prefix}{name}"
        paths.add(path)
        inner, child_prefix = member, f"{path}."
        if member.type_name == "list":
            inner, child_prefix = member.member, f"{path}[]."
        paths |= modelled_member_paths(inner, child_prefix, seen | {shape.name})
    return paths


def missing_members(
    recorded: Mapping[str, Iterable[str]], floor: Mapping[str, Iterable[str]]
) -> list[str]:
    """`<service>.<Operation>: <member>` for each recorded member the floor does not model."""
    return sorted(
        f"{operation}: {member}"
        for operation, members in recorded.items()
        for member in set(members) - set(floor.get(operation, ()))
    )


# --- reading a botocore wheel ------------------------------------------------------------------


def _wheel_service_model(wheel: zipfile.ZipFile, service: str) -> ServiceModel:
    pattern = re.compile(rf"botocore/data/{service}/[^/]+/service-2\.json(\.gz)?$")
    newest = sorted(name for name in wheel.namelist() if pattern.match(name))[-1]
    raw = wheel.read(newest)
    return ServiceModel(json.loads(gzip.decompress(raw) if newest.endswith(".gz") else raw))


def floor_from_wheel(wheel_path: Path) -> dict[str, list[str]]:
    with zipfile.ZipFile(wheel_path) as wheel:
        models: dict[str, ServiceModel] = {}
        floor = {}
        for operation in HANDLER_OPERATIONS:
            service, name = operation.split(".")
            if service not in models:
                models[service] = _wheel_service_model(wheel, service)
            input_shape = models[service].operation_model(name).input_shape
            floor[operation] = sorted(modelled_member_paths(input_shape))
    return floor


def _wheel_version(wheel_path: Path) -> str:
    return wheel_path.name.split("-")[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheels", nargs="+", type=Path, help="botocore wheel file(s)")
    parser.add_argument("--check", action="store_true", help="report, do not write")
    args = parser.parse_args(argv)
    if args.check:
        recorded = json.loads(Path(__import__("os").environ[RECORDED_MEMBERS_ENV]).read_text())
        for wheel in args.wheels:
            missing = missing_members(recorded, floor_from_wheel(wheel))
            print(f"botocore {_wheel_version(wheel)}: {len(missing)} missing", *missing, sep="\n  ")
        return 0
    [wheel] = args.wheels
    document = {
        "botocore": _wheel_version(wheel),
        "generatedBy": f"python -m tests.sdk_floor {wheel.name}",
        "operations": floor_from_wheel(wheel),
    }
    FLOOR_FILE.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    print(f"wrote {FLOOR_FILE} from botocore {document['botocore']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
