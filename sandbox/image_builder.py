"""EC2 Image Builder emulation for the sandbox and the tests (moto has no Image Builder).

Installed the way moto installs itself: botocore event handlers appended to
`botocore.handlers.BUILTIN_HANDLERS` at import, so the clients of every session created after
the import (any boto3.Session, assumed-role ones included) are answered here while an emulator
is installed (`with`). Request parameters are read in `before-parameter-build` (after botocore
filled the idempotency token) and answered in `before-call`, which skips the HTTP layer (and so
botocore's retries); errors come back as modelled exceptions (`ResourceNotFoundException`).
Every request is validated against the botocore service model, including the patterns, maximum
lengths and enums botocore does not check.

Pipelines are registered programmatically; builds advance only when told to (`advance`,
`run_build`), so tests and the demo are deterministic. On AVAILABLE the AMI is registered in
moto's EC2 in every distribution region and the SNS message is produced in the documented shape.
A build can be cancelled (`cancel`): Image Builder notifies SNS only of AVAILABLE and FAILED
images, so a cancellation produces no message, only the EventBridge "EC2 Image Builder Image
State Change" event every status change produces (`state_change_events`). `start_scheduled_build`
starts a build as the pipeline's schedule does: build type SCHEDULED, and no request tags on the
image (so no payload digest).
`run_lifecycle` applies a lifecycle policy (the CreateLifecyclePolicy shape) the way the
documented rules read (see its docstring for what is modelled and what is left out).
Use inside `moto.mock_aws()`:

    with mock_aws(), ImageBuilderEmulator() as image_builder:
        image_builder.register_pipeline(PIPELINE_ARN, regions=["eu-west-1", "us-east-1"], ...)
        ...  # code under test calls StartImagePipelineExecution
        message = image_builder.run_build(image_arn)
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.handlers
import botocore.session
from botocore.awsrequest import AWSResponse
from moto.ec2.models import ec2_backends
from moto.ec2.models.amis import Ami
from moto.ec2.utils import random_ami_id

from sandbox.model_validation import ValidationError, validate_request

SERVICE_MODEL = botocore.session.get_session().get_service_model("imagebuilder")
BUILD_STEPS = ("PENDING", "BUILDING", "TESTING", "DISTRIBUTING", "AVAILABLE")
DEFAULT_PAGE_SIZE = 25
MAX_TAGS = 50
_PARAMS_KEY = "sandbox_image_builder_params"
_INSTALLED: list[ImageBuilderEmulator] = []
_FILTER_ATTRIBUTES = {"name": "image_name", "version": "recipe_version"}
_BUILD_DATE = re.compile(r"\{\{\s*imagebuilder:buildDate\s*\}\}")
_PIPELINE_ARN = re.compile(
    r"^arn:(?P<partition>aws[^:]*):imagebuilder:(?P<region>[^:]+):(?P<account>[0-9]{12}):"
    r"image-pipeline/(?P<name>[a-z0-9-_]+)$"
)
# LaunchPermissionConfiguration member -> EC2 LaunchPermission member.
_LAUNCH_PERMISSION_MEMBERS = {
    "userIds": "UserId",
    "userGroups": "Group",
    "organizationArns": "OrganizationArn",
    "organizationalUnitArns": "OrganizationalUnitArn",
}


class ImageBuilderError(Exception):
    """An error the service answers; becomes the modelled botocore exception on the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


def ticking_clock(
    start: datetime, step: timedelta = timedelta(minutes=1)
) -> Callable[[], datetime]:
    """A deterministic clock that moves `step` forward at every reading."""
    counter = itertools.count()
    return lambda: start + step * next(counter)


@dataclass
class EmulatedPipeline:
    arn: str
    regions: tuple[str, ...]
    ami_name: str
    launch_permission: Mapping[str, Sequence[str]]
    ami_tags: Mapping[str, str]
    image_name: str
    recipe_version: str
    # moto does not evaluate launch permissions across accounts: the AMI is also registered in
    # these accounts' EC2 backends, owned by the pipeline's account, so they can see it.
    visible_in_accounts: tuple[str, ...]

    @property
    def region(self) -> str:
        return _PIPELINE_ARN.match(self.arn)["region"]

    @property
    def account_id(self) -> str:
        return _PIPELINE_ARN.match(self.arn)["account"]

    def resource_arn(self, kind: str, name: str) -> str:
        return f"arn:aws:imagebuilder:{self.region}:{self.account_id}:{kind}/{name}"


@dataclass
class EmulatedImage:
    pipeline: EmulatedPipeline
    build_version: int
    date_created: datetime
    tags: dict[str, str]
    status: str = "PENDING"
    reason: str | None = None
    amis: list[dict[str, str]] = field(default_factory=list)
    build_type: str = "USER_INITIATED"

    @property
    def arn(self) -> str:
        version = f"{self.pipeline.recipe_version}/{self.build_version}"
        return self.pipeline.resource_arn("image", f"{self.pipeline.image_name}/{version}")

    @property
    def state(self) -> dict[str, str]:
        return {"status": self.status} | ({"reason": self.reason} if self.reason else {})


class ImageBuilderEmulator:
    """In-memory Image Builder; at most one is installed at a time."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock or ticking_clock(datetime(2025, 1, 1, tzinfo=UTC))
        self._pipelines: dict[str, EmulatedPipeline] = {}
        self._images: dict[str, EmulatedImage] = {}
        self._client_tokens: dict[str, tuple[dict[str, Any], str]] = {}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.notifications: list[dict[str, Any]] = []
        self.state_change_events: list[dict[str, Any]] = []

    # --- installation ----------------------------------------------------------------------

    def __enter__(self) -> ImageBuilderEmulator:
        if _INSTALLED:
            raise RuntimeError("an ImageBuilderEmulator is already installed")
        _INSTALLED.append(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _INSTALLED.remove(self)

    def _respond(self, operation_name: str, context: dict) -> tuple[AWSResponse, dict]:
        request_id = str(uuid.uuid4())
        try:
            body = self._answer(operation_name, context[_PARAMS_KEY], context["client_region"])
        except ImageBuilderError as error:
            status = SERVICE_MODEL.shape_for(error.code).metadata["error"]["httpStatusCode"]
            body = {"Error": {"Code": error.code, "Message": error.message}}
        else:
            status, body = 200, {"requestId": request_id, **body}
        body["ResponseMetadata"] = {"RequestId": request_id, "HTTPStatusCode": status}
        return AWSResponse("https://imagebuilder.emulated", status, {}, None), body

    # --- setup -----------------------------------------------------------------------------

    def register_pipeline(
        self,
        arn: str,
        *,
        regions: Sequence[str],
        ami_name: str,
        launch_permission: Mapping[str, Sequence[str]] | None = None,
        ami_tags: Mapping[str, str] | None = None,
        image_name: str | None = None,
        recipe_version: str = "1.0.0",
        visible_in_accounts: Sequence[str] = (),
    ) -> EmulatedPipeline:
        match = _PIPELINE_ARN.match(arn)
        if not match:
            raise ValueError(f"{arn!r} is not an image-pipeline ARN")
        if not regions or regions[0] != match["region"]:
            raise ValueError(f"regions must start with the pipeline's region {match['region']}")
        unknown = set(launch_permission or {}) - set(_LAUNCH_PERMISSION_MEMBERS)
        if unknown:
            raise ValueError(f"unknown launch permission member(s) {sorted(unknown)}")
        pipeline = EmulatedPipeline(
            arn=arn,
            regions=tuple(regions),
            ami_name=ami_name,
            launch_permission=dict(launch_permission or {}),
            ami_tags=dict(ami_tags or {}),
            image_name=image_name or match["name"],
            recipe_version=recipe_version,
            visible_in_accounts=tuple(visible_in_accounts),
        )
        self._pipelines[arn] = pipeline
        return pipeline

    # --- build progression -----------------------------------------------------------------

    def image(self, image_arn: str) -> EmulatedImage:
        return self._images[image_arn]

    def advance(self, image_arn: str, *, fail_reason: str | None = None) -> dict[str, Any] | None:
        """Move a build one step on (or to FAILED); return the SNS message when it finishes."""
        image = self._images[image_arn]
        previous = self._in_progress(image)
        if fail_reason is not None:
            image.status, image.reason = "FAILED", fail_reason
        else:
            image.status = BUILD_STEPS[BUILD_STEPS.index(image.status) + 1]
            if image.status == "AVAILABLE":
                self._distribute(image)
        self._state_changed(image, previous)
        if image.status not in ("AVAILABLE", "FAILED"):
            return None
        message = _sns_message(image)
        self.notifications.append(message)
        return message

    def cancel(self, image_arn: str, reason: str = "Image creation cancelled") -> None:
        """Cancel a running build (CancelImageCreation): no SNS message, only the event."""
        image = self._images[image_arn]
        previous = self._in_progress(image)
        image.status, image.reason = "CANCELLED", reason
        self._state_changed(image, previous)

    def start_scheduled_build(self, pipeline_arn: str) -> str:
        """A build the pipeline's schedule starts: no client token, no request tags."""
        pipeline = self._pipelines[pipeline_arn]
        image = self._new_image(pipeline, tags={}, build_type="SCHEDULED")
        return image.arn

    def _in_progress(self, image: EmulatedImage) -> str:
        if image.status not in BUILD_STEPS[:-1]:
            raise ValueError(f"{image.arn} is {image.status}; it has finished")
        return image.status

    def _state_changed(self, image: EmulatedImage, previous: str) -> None:
        """The EventBridge event of a status change (source aws.imagebuilder)."""
        pipeline = image.pipeline
        self.state_change_events.append(
            {
                "version": "0",
                # Derived, not random: the demo seeds moto's ids, and a uuid4 here would shift them.
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{image.arn}#{image.status}")),
                "detail-type": "EC2 Image Builder Image State Change",
                "source": "aws.imagebuilder",
                "account": pipeline.account_id,
                # Wall clock: reading the build clock would shift every later image's date.
                "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "region": pipeline.region,
                "resources": [image.arn],
                "detail": {"previous-state": {"status": previous}, "state": image.state},
            }
        )

    def run_build(
        self, image_arn: str, *, fail_in: str | None = None, fail_reason: str = "Build failed"
    ) -> dict[str, Any]:
        """Drive a build to AVAILABLE, or to FAILED in step `fail_in`; return the SNS message."""
        if fail_in is not None and fail_in not in BUILD_STEPS[1:-1]:
            raise ValueError(f"fail_in must be one of {BUILD_STEPS[1:-1]}, not {fail_in!r}")
        while True:
            failing = fail_in is not None and self._images[image_arn].status == fail_in
            message = self.advance(image_arn, fail_reason=fail_reason if failing else None)
            if message is not None:
                return message

    # --- lifecycle ---------------------------------------------------------------------------

    def run_lifecycle(self, policy: Mapping[str, Any], now: datetime) -> list[dict[str, Any]]:
        """One execution of an AMI_IMAGE lifecycle policy with DELETE rules, as documented.

        Modelled: resource selection by recipe name + semantic version (`x` wildcards) or by
        image tags; AGE filters (impacted when older than value x unit; the newest
        `retainAtLeast` selected images are kept) and COUNT filters (the newest `value` are
        kept); image exclusion by `tagMap`; AMI exclusion by `tagMap` (key and value),
        `regions`, `sharedAccounts`, `isPublic` and `lastLaunched` (moto records no launch
        time, and the API documents that AMIs without one are not excluded). DELETE removes the
        image resource and, with `includeResources.amis`, deregisters each AMI not excluded.
        The retained count is taken over every selected image (the stricter reading: the API
        documents "the number of resources to keep on hand" without a per-version scope).
        Left out: DEPRECATE/DISABLE rules, snapshot deletion (moto's AMIs have none), container
        images, and months/years as calendar units (30 and 365 days here).
        Returns what was done: one entry per image with the AMIs deleted and kept.
        """
        request = {
            "name": "emulated-lifecycle",
            "executionRole": "arn:aws:iam::123456789012:role/lifecycle",
            "clientToken": "emulated",
            **policy,
        }
        try:
            validate_request(SERVICE_MODEL, "CreateLifecyclePolicy", request)
        except ValidationError as error:
            raise ImageBuilderError("InvalidParameterValueException", str(error)) from None
        if policy["resourceType"] != "AMI_IMAGE":
            raise NotImplementedError("the emulation runs AMI_IMAGE lifecycle policies only")
        selected = sorted(
            (
                image
                for image in self._images.values()
                if image.status == "AVAILABLE" and _selected(image, policy["resourceSelection"])
            ),
            key=lambda image: image.date_created,
            reverse=True,
        )
        actions = []
        for detail in policy["policyDetails"]:
            if detail["action"]["type"] != "DELETE":
                raise NotImplementedError("the emulation runs DELETE lifecycle rules only")
            for image in _impacted(selected, detail["filter"], now):
                if image.arn not in self._images:
                    continue  # deleted by an earlier rule of this run
                exclusions = detail.get("exclusionRules") or {}
                if _tags_match(image.tags, exclusions.get("tagMap")):
                    continue
                actions.append(self._delete_image(image, detail, exclusions.get("amis") or {}))
        return actions

    def _delete_image(
        self, image: EmulatedImage, detail: Mapping[str, Any], ami_rules: Mapping[str, Any]
    ) -> dict[str, Any]:
        deleted, kept = [], []
        include_amis = (detail["action"].get("includeResources") or {}).get("amis", False)
        for ami in image.amis:
            backend = ec2_backends[image.pipeline.account_id][ami["region"]]
            registered = backend.amis.get(ami["image"])
            if registered is None:
                continue
            if not include_amis or _ami_excluded(registered, ami["region"], ami_rules):
                kept.append(ami["image"])
                continue
            for account_id in (image.pipeline.account_id, *image.pipeline.visible_in_accounts):
                ec2_backends[account_id][ami["region"]].amis.pop(ami["image"], None)
            deleted.append(ami["image"])
        del self._images[image.arn]
        return {"imageArn": image.arn, "deletedAmis": deleted, "keptAmis": kept}

    def _distribute(self, image: EmulatedImage) -> None:
        pipeline = image.pipeline
        name = _BUILD_DATE.sub(_build_date(image.date_created), pipeline.ami_name)
        tags = dict(pipeline.ami_tags) | {
            "CreatedBy": "EC2 Image Builder",
            "Ec2ImageBuilderArn": image.arn,
        }
        permissions = [
            {_LAUNCH_PERMISSION_MEMBERS[member]: value}
            for member, values in pipeline.launch_permission.items()
            for value in values
        ]
        for region in pipeline.regions:
            ami_id = random_ami_id()
            for account_id in (pipeline.account_id, *pipeline.visible_in_accounts):
                ami = Ami(
                    ec2_backends[account_id][region],
                    ami_id,
                    name=name,
                    description=f"Image Builder {image.arn}",
                    owner_id=pipeline.account_id,
                    architecture="x86_64",
                    virtualization_type="hvm",
                    root_device_type="ebs",
                    root_device_name="/dev/xvda",
                    creation_date=image.date_created,
                    # Tags stay with the owner: an account the AMI is shared with sees none.
                    tags=tags if account_id == pipeline.account_id else None,
                )
                ami.launch_permissions.extend(permissions)
                ec2_backends[account_id][region].amis[ami_id] = ami
            image.amis.append(
                {"region": region, "image": ami_id, "name": name, "accountId": pipeline.account_id}
            )

    # --- API operations --------------------------------------------------------------------

    def _start_image_pipeline_execution(self, params: dict, region: str) -> dict:
        pipeline = self._pipeline(params["imagePipelineArn"], region)
        token = params["clientToken"]
        if token in self._client_tokens:
            first_params, image_arn = self._client_tokens[token]
            if first_params != params:
                raise ImageBuilderError(
                    "IdempotentParameterMismatchException",
                    f"client token {token} was already used with different parameters",
                )
            return {"clientToken": token, "imageBuildVersionArn": image_arn}
        image = self._new_image(pipeline, tags=dict(params.get("tags", {})))
        self._client_tokens[token] = (params, image.arn)
        return {"clientToken": token, "imageBuildVersionArn": image.arn}

    def _new_image(
        self,
        pipeline: EmulatedPipeline,
        *,
        tags: dict[str, str],
        build_type: str = "USER_INITIATED",
    ) -> EmulatedImage:
        build_version = 1 + sum(1 for i in self._images.values() if i.pipeline is pipeline)
        image = EmulatedImage(pipeline, build_version, self._clock(), tags, build_type=build_type)
        self._images[image.arn] = image
        return image

    def _list_image_pipeline_images(self, params: dict, region: str) -> dict:
        pipeline = self._pipeline(params["imagePipelineArn"], region)
        images = [i for i in self._images.values() if i.pipeline is pipeline]
        for image_filter in params.get("filters", []):
            attribute = _FILTER_ATTRIBUTES.get(image_filter["name"])
            if attribute is None:
                raise ImageBuilderError(
                    "InvalidRequestException",
                    f"filter {image_filter['name']!r} is not supported; use name or version",
                )
            images = [i for i in images if getattr(pipeline, attribute) in image_filter["values"]]
        start = _decode_page_token(params.get("nextToken"), pipeline.arn)
        end = start + params.get("maxResults", DEFAULT_PAGE_SIZE)
        response = {"imageSummaryList": [_image_summary(i) for i in images[start:end]]}
        if end < len(images):
            response["nextToken"] = _encode_page_token(pipeline.arn, end)
        return response

    def _get_image(self, params: dict, region: str) -> dict:
        image = self._images.get(params["imageBuildVersionArn"])
        if image is None or image.pipeline.region != region:
            raise ImageBuilderError(
                "ResourceNotFoundException", f"image {params['imageBuildVersionArn']} not found"
            )
        return {"image": _api_image(image)}

    def _tag_resource(self, params: dict, region: str) -> dict:
        """Tags an image (the only resource the emulation holds); 50 tags at most."""
        image = self._images.get(params["resourceArn"])
        if image is None or image.pipeline.region != region:
            raise ImageBuilderError(
                "ResourceNotFoundException", f"resource {params['resourceArn']} not found"
            )
        tags = image.tags | params["tags"]
        if len(tags) > MAX_TAGS:
            raise ImageBuilderError(
                "InvalidParameterException", f"a resource has at most {MAX_TAGS} tags"
            )
        image.tags = tags
        return {}

    def _pipeline(self, arn: str, region: str) -> EmulatedPipeline:
        pipeline = self._pipelines.get(arn)
        if pipeline is None or pipeline.region != region:
            raise ImageBuilderError(
                "ResourceNotFoundException", f"image pipeline {arn} not found in {region}"
            )
        return pipeline

    def _answer(self, operation_name: str, params: dict[str, Any], region: str) -> dict:
        operation = {
            "StartImagePipelineExecution": self._start_image_pipeline_execution,
            "ListImagePipelineImages": self._list_image_pipeline_images,
            "GetImage": self._get_image,
            "TagResource": self._tag_resource,
        }.get(operation_name)
        if operation is None:
            raise NotImplementedError(f"Image Builder emulation has no {operation_name}")
        self.requests.append((operation_name, copy.deepcopy(params)))
        try:
            validate_request(SERVICE_MODEL, operation_name, params)
        except ValidationError as error:
            raise ImageBuilderError(_validation_error_code(operation_name), str(error)) from None
        return operation(params, region)


# --- lifecycle rules -------------------------------------------------------------------------

_UNIT_DAYS = {"DAYS": 1, "WEEKS": 7, "MONTHS": 30, "YEARS": 365}


def _version_matches(pattern: str, version: str) -> bool:
    return all(
        wanted in ("x", actual)
        for wanted, actual in zip(pattern.split("."), version.split("."), strict=True)
    )


def _selected(image: EmulatedImage, selection: Mapping[str, Any]) -> bool:
    if "tagMap" in selection:
        return _tags_match(image.tags, selection["tagMap"])
    return any(
        recipe["name"] == image.pipeline.image_name
        and _version_matches(recipe["semanticVersion"], image.pipeline.recipe_version)
        for recipe in selection.get("recipes", [])
    )


def _impacted(
    newest_first: Sequence[EmulatedImage], rule_filter: Mapping[str, Any], now: datetime
) -> list[EmulatedImage]:
    if rule_filter["type"] == "COUNT":
        return list(newest_first[rule_filter["value"] :])
    max_age = timedelta(days=rule_filter["value"] * _UNIT_DAYS[rule_filter["unit"]])
    retained = rule_filter.get("retainAtLeast", 0)
    return [image for image in newest_first[retained:] if now - image.date_created > max_age]


def _tags_match(tags: Mapping[str, str], wanted: Mapping[str, str] | None) -> bool:
    """Any of `wanted` present with its value: "Both the key and the value must match"."""
    return any(tags.get(key) == value for key, value in (wanted or {}).items())


def _ami_excluded(ami: Ami, region: str, rules: Mapping[str, Any]) -> bool:
    tags = {tag["key"]: tag["value"] for tag in ami.get_tags()}
    shared_with = {p.get("UserId") for p in ami.launch_permissions}
    return (
        _tags_match(tags, rules.get("tagMap"))
        or region in rules.get("regions", [])
        or bool(shared_with & set(rules.get("sharedAccounts", [])))
        or (rules.get("isPublic", False) and {"Group": "all"} in ami.launch_permissions)
    )


# --- botocore hooks --------------------------------------------------------------------------


def _capture_params(params: dict, context: dict, **_: Any) -> None:
    if _INSTALLED:
        context[_PARAMS_KEY] = params


def _answer_call(model, context: dict, **_: Any) -> tuple[AWSResponse, dict] | None:
    return _INSTALLED[0]._respond(model.name, context) if _INSTALLED else None


# Registered at import, as moto registers its own stubber: every session created afterwards
# carries the hooks, and they answer only while an emulator is installed. Clients that outlive
# one installation (a warm Lambda's, a test module's) are answered by the next one.
for _hook in (
    ("before-parameter-build.imagebuilder", _capture_params),
    ("before-call.imagebuilder", _answer_call),
):
    if _hook not in botocore.handlers.BUILTIN_HANDLERS:
        botocore.handlers.BUILTIN_HANDLERS.append(_hook)


# --- shapes ----------------------------------------------------------------------------------


def _validation_error_code(operation_name: str) -> str:
    modelled = {e.name for e in SERVICE_MODEL.operation_model(operation_name).error_shapes}
    if "InvalidParameterValueException" in modelled:
        return "InvalidParameterValueException"
    return "InvalidRequestException"


def _encode_page_token(pipeline_arn: str, offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([pipeline_arn, offset]).encode()).decode()


def _decode_page_token(token: str | None, pipeline_arn: str) -> int:
    if token is None:
        return 0
    try:
        token_arn, offset = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError):
        token_arn, offset = None, None
    if token_arn != pipeline_arn or not isinstance(offset, int):
        raise ImageBuilderError("InvalidPaginationTokenException", f"invalid nextToken {token!r}")
    return offset


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _build_date(moment: datetime) -> str:
    """{{ imagebuilder:buildDate }} as it appears in AMI names (no colons: EC2 forbids them)."""
    return _iso(moment).replace(":", "-")


def _sns_date(moment: datetime) -> str:
    """The SNS message's date style: "Jul 28, 2022 1:13:45 AM"."""
    hour = moment.hour % 12 or 12
    return f"{moment:%b} {moment.day}, {moment.year} {hour}:{moment:%M:%S %p}"


def _semver(version: str, build_version: int) -> int:
    """Image Builder's packed semver: major, minor, patch and build in 30-bit fields."""
    major, minor, patch = (int(part) for part in version.split("."))
    return (major << 90) | (minor << 60) | (patch << 30) | build_version


def _distribution(pipeline: EmulatedPipeline) -> list[dict[str, Any]]:
    ami_configuration: dict[str, Any] = {"name": pipeline.ami_name}
    # Empty collections are omitted, as the service does (the model forbids an empty amiTags).
    if pipeline.ami_tags:
        ami_configuration["amiTags"] = dict(pipeline.ami_tags)
    if pipeline.launch_permission:
        ami_configuration["launchPermission"] = {
            member: list(values) for member, values in pipeline.launch_permission.items()
        }
    return [
        {"region": region, "amiDistributionConfiguration": ami_configuration}
        for region in pipeline.regions
    ]


def _image_summary(image: EmulatedImage) -> dict[str, Any]:
    summary = {
        "arn": image.arn,
        "name": image.pipeline.image_name,
        "type": "AMI",
        "version": f"{image.pipeline.recipe_version}/{image.build_version}",
        "platform": "Linux",
        "osVersion": "Amazon Linux 2023",
        "state": image.state,
        "owner": image.pipeline.account_id,
        "dateCreated": _iso(image.date_created),
        "outputResources": {"amis": [dict(ami) for ami in image.amis]},
        "buildType": image.build_type,
    }
    if image.tags:  # the model's TagMap has at least one entry
        summary["tags"] = dict(image.tags)
    return summary


def _api_image(image: EmulatedImage) -> dict[str, Any]:
    pipeline = image.pipeline
    recipe = f"{pipeline.image_name}/{pipeline.recipe_version}"
    summary = _image_summary(image)
    del summary["owner"]  # a summary-only member
    return summary | {
        "enhancedImageMetadataEnabled": True,
        "imageRecipe": {
            "arn": pipeline.resource_arn("image-recipe", recipe),
            "name": pipeline.image_name,
            "version": pipeline.recipe_version,
            "platform": "Linux",
        },
        "sourcePipelineName": _PIPELINE_ARN.match(pipeline.arn)["name"],
        "sourcePipelineArn": pipeline.arn,
        "distributionConfiguration": {
            "arn": pipeline.resource_arn("distribution-configuration", pipeline.image_name),
            "name": pipeline.image_name,
            "distributions": _distribution(pipeline),
            "timeoutMinutes": 720,
        },
        "imageTestsConfiguration": {"imageTestsEnabled": True, "timeoutMinutes": 720},
    }


def _sns_message(image: EmulatedImage) -> dict[str, Any]:
    """The image-state notification, with the keys of the documented AVAILABLE/FAILED samples."""
    pipeline = image.pipeline
    created = _sns_date(image.date_created)
    recipe = f"{pipeline.image_name}/{pipeline.recipe_version}"
    message: dict[str, Any] = {
        "versionlessArn": pipeline.resource_arn("image", pipeline.image_name),
        "semver": _semver(pipeline.recipe_version, image.build_version),
        "arn": image.arn,
        "name": pipeline.image_name,
        "version": pipeline.recipe_version,
        "type": "AMI",
        "buildVersion": image.build_version,
        "state": image.state,
        "platform": "Linux",
        "imageRecipe": {
            "arn": pipeline.resource_arn("image-recipe", recipe),
            "name": pipeline.image_name,
            "version": pipeline.recipe_version,
            "platform": "Linux",
            "dateCreated": created,
            "accountId": pipeline.account_id,
        },
        "sourcePipelineArn": pipeline.arn,
        "infrastructureConfiguration": {
            "arn": pipeline.resource_arn("infrastructure-configuration", pipeline.image_name),
            "name": pipeline.image_name,
            "terminateInstanceOnFailure": True,
            "dateCreated": created,
            "accountId": pipeline.account_id,
        },
        "imageTestsConfigurationDocument": {"imageTestsEnabled": True, "timeoutMinutes": 720},
        "distributionConfiguration": {
            "arn": pipeline.resource_arn("distribution-configuration", pipeline.image_name),
            "name": pipeline.image_name,
            "dateCreated": created,
            "distributions": _distribution(pipeline),
            "accountId": pipeline.account_id,
        },
        "dateCreated": created,
        "outputResources": {"amis": [dict(ami) for ami in image.amis]},
    }
    if image.status == "AVAILABLE":  # the failed sample has no execution ids and no osVersion
        message |= {
            "osVersion": "Amazon Linux 2023",
            "buildExecutionId": str(uuid.uuid4()),
            "testExecutionId": str(uuid.uuid4()),
            "distributionJobId": str(uuid.uuid4()),
            "integrationJobId": str(uuid.uuid4()),
        }
    return message | {
        "accountId": pipeline.account_id,
        "enhancedImageMetadataEnabled": True,
        "buildType": image.build_type,
        "tags": dict(image.tags) | {"resourceArn": image.arn},
    }


def sns_envelope(message: Mapping[str, Any], topic_arn: str, message_id: str) -> dict[str, Any]:
    """An SNS notification as an SQS subscriber without raw delivery receives it."""
    return {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": topic_arn,
        "Message": json.dumps(message),
        "Timestamp": "2025-01-01T00:00:00.000Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLE",
        "SigningCertURL": "https://sns.amazonaws.com/SimpleNotificationService-example.pem",
        "UnsubscribeURL": (
            f"https://sns.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={topic_arn}:sub"
        ),
    }
