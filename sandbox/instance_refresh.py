"""Instance refresh on top of moto's Auto Scaling, which raises NotImplementedError for it.

`InstanceRefreshEmulator` is a context manager that adds botocore event handlers to
`botocore.handlers.BUILTIN_HANDLERS` (as moto installs itself), so every client created inside
it — from any boto3.Session, assumed-role sessions included — is covered:

* `before-parameter-build.*` stashes the caller's API parameters in the request context;
* `before-call.*` records every call (account, region, service, operation, parameters) and answers
  StartInstanceRefresh / DescribeInstanceRefreshes / CancelInstanceRefresh /
  RollbackInstanceRefresh itself; everything else goes on to moto;
* `after-call.ec2.CreateLaunchTemplateVersion` gives moto's new version the data of its
  SourceVersion, which moto ignores (the refresh launches instances from those versions);
* DeleteLaunchTemplateVersions, which moto lacks, is answered here: a deleted version keeps its
  number, DescribeLaunchTemplateVersions naming it answers InvalidLaunchTemplateId.VersionNotFound
  and listings leave it out; the default version cannot be deleted (deleting the latest, which
  would move `$Latest`, is refused as not emulated).

Requests are validated against the botocore model (`sandbox.model_validation`) and the documented
rules below; errors are answered as HTTP 400 with the modelled code, so botocore raises
`client.exceptions.InstanceRefreshInProgressFault` and friends, as against AWS.

Documented behaviour emulated (Amazon EC2 Auto Scaling User Guide, "Instance refresh" and
"Undo changes with a manual or auto rollback"; API reference StartInstanceRefresh,
RefreshPreferences, RollbackInstanceRefresh):
* one refresh per group at a time: a second StartInstanceRefresh fails InstanceRefreshInProgress;
* instances are replaced in batches that keep MinHealthyPercentage of the desired capacity in
  service and never exceed MaxHealthyPercentage; a batch counts once InstanceWarmup has passed;
* SkipMatching skips instances already running the desired image;
* CheckpointPercentages pause for CheckpointDelay (3600 s when only percentages are given);
* after the last replacement the refresh is Baking for BakeTime, then Successful, and only then
  is the DesiredConfiguration saved on the group;
* AlarmSpecification alarms are watched while the refresh is in progress or baking: an alarm in
  ALARM fails it, and with AutoRollback it rolls back instead;
* a rollback is only possible while the refresh is in progress, only with a DesiredConfiguration
  and a numbered launch-template version without SSM alias (otherwise
  IrreversibleInstanceRefresh / ValidationError); it replaces the instances deployed so far by
  ones matching the configuration saved on the group before the refresh started, and restores
  that configuration;
* EventBridge events "EC2 Auto Scaling Instance Refresh Started / Checkpoint Reached /
  Succeeded / Failed / Cancelled / Rollback Started / Rollback Succeeded" go to `event_sink`.

Simplifications: time only moves through `step()` / `advance()` / `run_until_settled()`;
launched instances are healthy; "matching" compares the image id; warm pools and the
ReplaceRootVolume strategy are not emulated (a request for them is answered ValidationError);
MixedInstancesPolicy overrides with their own launch template or ImageId are honoured, taken in
turn by the new instances (AWS picks by capacity and price).
"""

from __future__ import annotations

import copy
import math
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.handlers
from botocore.awsrequest import AWSResponse
from botocore.model import OperationModel

from sandbox.model_validation import ValidationError, validate_request

ACTIVE_STATUSES = frozenset({"Pending", "InProgress", "Baking", "Cancelling", "RollbackInProgress"})
ROLLBACK_ALLOWED_STATUSES = frozenset({"Pending", "InProgress", "Baking"})
DEFAULT_MIN_HEALTHY = 90  # RefreshPreferences defaults
DEFAULT_CHECKPOINT_DELAY = 3600
DEFAULT_WARMUP = 300
_PARAMS_KEY = "golden_ami_emulator_params"
_CALLER_KEY = "golden_ami_emulator_caller"
_NAMESPACE = uuid.UUID("6f1c7e2a-5a52-4c43-9b43-8b7f1a0e9f10")

AlarmState = Callable[[str, str, str], str | None]  # (account, region, alarm name) -> state


class _ApiError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ApiCall:
    account_id: str
    region: str
    service: str  # IAM prefix, e.g. "autoscaling"
    operation: str
    params: dict[str, Any]

    @property
    def action(self) -> str:
        return f"{self.service}:{self.operation}"


@dataclass
class _Refresh:
    refresh_id: str
    account_id: str
    region: str
    group_name: str
    group_arn: str
    start_time: datetime
    preferences: dict[str, Any]
    desired: dict[str, Any]
    strategy: str
    saved_configuration: dict[str, Any]
    to_replace: list[str]
    total: int
    status: str = "Pending"
    status_reason: str = "Waiting for the instance refresh to start"
    end_time: datetime | None = None
    replaced: int = 0
    deployed: list[str] = field(default_factory=list)  # new instances, what a rollback undoes
    batch: list[str] = field(default_factory=list)
    batch_ready_at: datetime | None = None
    paused_until: datetime | None = None
    bake_until: datetime | None = None
    checkpoints: list[int] = field(default_factory=list)
    rollback: dict[str, Any] | None = None
    rollback_to_replace: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def percentage_complete(self) -> int:
        return 100 if self.total == 0 else math.floor(100 * self.replaced / self.total)

    def describe(self) -> dict[str, Any]:
        remaining = self.total - self.replaced
        described: dict[str, Any] = {
            "InstanceRefreshId": self.refresh_id,
            "AutoScalingGroupName": self.group_name,
            "Status": self.status,
            "StatusReason": self.status_reason,
            "StartTime": self.start_time,
            "PercentageComplete": self.percentage_complete,
            "InstancesToUpdate": remaining,
            "ProgressDetails": {
                "LivePoolProgress": {
                    "PercentageComplete": self.percentage_complete,
                    "InstancesToUpdate": remaining,
                }
            },
            "Preferences": copy.deepcopy(self.preferences),
            "Strategy": self.strategy,
        }
        if self.desired:
            described["DesiredConfiguration"] = copy.deepcopy(self.desired)
        if self.end_time is not None:
            described["EndTime"] = self.end_time
        if self.rollback is not None:
            described["RollbackDetails"] = dict(self.rollback)
        return described


def moto_alarm_state(account_id: str, region: str, alarm_name: str) -> str | None:
    """The state of a CloudWatch alarm in moto's backend of that account and region."""
    from moto.cloudwatch.models import cloudwatch_backends

    alarm = cloudwatch_backends[account_id][region].alarms.get(alarm_name)
    return alarm.state_value if alarm else None


class InstanceRefreshEmulator:
    """Emulated instance refresh; use inside `moto.mock_aws()`.

    calls        every AWS call made while active (all services), for assertions
    events       EventBridge events emitted (unless another `event_sink` is given)
    now          the emulated clock; moves only through step()/advance()/run_until_settled()
    """

    def __init__(
        self,
        *,
        event_sink: Callable[[dict[str, Any]], None] | None = None,
        alarm_state: AlarmState = moto_alarm_state,
        start_time: datetime = datetime(2025, 1, 1, tzinfo=UTC),
    ) -> None:
        self.calls: list[ApiCall] = []
        self.events: list[dict[str, Any]] = []
        self.now = start_time
        self._event_sink = event_sink or self.events.append
        self._alarm_state = alarm_state
        self._refreshes: dict[tuple[str, str, str], list[_Refresh]] = {}
        self._injected_errors: dict[str, list[_ApiError]] = {}
        # (account, region, template id, version number) deleted by DeleteLaunchTemplateVersions
        self._deleted_versions: set[tuple[str, str, str, int]] = set()
        self._random = random.Random(0)
        self._launches: dict[str, int] = {}  # group ARN -> instances launched, for the overrides
        self._handlers = [
            ("before-parameter-build", self._stash_params),
            ("before-call", self._before_call),
            ("after-call.ec2.CreateLaunchTemplateVersion", self._inherit_source_version),
            ("after-call.ec2.DescribeLaunchTemplateVersions", self._hide_deleted_versions),
        ]

    # --- installation -------------------------------------------------------------------------

    def __enter__(self) -> InstanceRefreshEmulator:
        botocore.handlers.BUILTIN_HANDLERS.extend(self._handlers)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handler in self._handlers:
            botocore.handlers.BUILTIN_HANDLERS.remove(handler)

    # --- test / demo controls -----------------------------------------------------------------

    def calls_to(self, operation: str, account_id: str | None = None) -> list[ApiCall]:
        return [
            call
            for call in self.calls
            if call.operation == operation and account_id in (None, call.account_id)
        ]

    def inject_error(self, operation: str, code: str, message: str = "injected") -> None:
        """Answer the next call of `operation` (of any service) with this error."""
        self._injected_errors.setdefault(operation, []).append(_ApiError(code, message))

    def refreshes(self, account_id: str, region: str, group_name: str) -> list[dict[str, Any]]:
        """DescribeInstanceRefreshes' view of a group, newest first."""
        return [r.describe() for r in self._refreshes.get((account_id, region, group_name), [])]

    def fail(self, account_id: str, region: str, group_name: str, reason: str) -> None:
        """Make the group's active refresh fail for a reason other than an alarm."""
        refresh = self._active(account_id, region, group_name)
        if refresh is None:
            raise ValueError(f"no active instance refresh on {group_name}")
        self._fail(refresh, reason)

    def step(self) -> bool:
        """Make every refresh due now progress once; else move the clock to the next due time.

        Returns False when no refresh is active.
        """
        self._check_alarms()
        active = self._all_active()
        if not active:
            return False
        due = [r for r in active if self._due_at(r) <= self.now]
        if not due:
            self.now = min(self._due_at(r) for r in active)
            due = [r for r in active if self._due_at(r) <= self.now]
        for refresh in due:
            self._progress(refresh)
        return True

    def advance(self, seconds: float) -> None:
        """Let `seconds` of emulated time pass, progressing refreshes as they fall due."""
        until = self.now + timedelta(seconds=seconds)
        while True:
            self._check_alarms()
            next_due = min((self._due_at(r) for r in self._all_active()), default=None)
            if next_due is None or next_due > until:
                break
            self.step()
        self.now = until

    def run_until_settled(self, max_seconds: float = 7 * 24 * 3600) -> None:
        deadline = self.now + timedelta(seconds=max_seconds)
        while self.step():
            if self.now > deadline:
                raise RuntimeError(f"instance refreshes still active after {max_seconds} s")

    # --- botocore hooks -----------------------------------------------------------------------

    def _stash_params(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context[_PARAMS_KEY] = copy.deepcopy(params)

    def _before_call(
        self, model: OperationModel, request_signer: Any, context: dict[str, Any], **_: Any
    ) -> tuple[AWSResponse, dict[str, Any]] | None:
        from moto.iam.models import get_account_id_from

        credentials = request_signer._credentials.get_frozen_credentials()
        account_id = get_account_id_from(credentials.access_key)
        region = request_signer._region_name
        params = context.get(_PARAMS_KEY, {})
        context[_CALLER_KEY] = (account_id, region)
        service = model.service_model.endpoint_prefix
        self.calls.append(ApiCall(account_id, region, service, model.name, params))
        if injected := self._injected_errors.get(model.name):
            error = injected.pop(0)
            return _response(400, {"Error": {"Code": error.code, "Message": error.message}})
        operations = {"autoscaling": self._operations, "ec2": self._ec2_operations}
        answer = operations.get(service, {}).get(model.name)
        if answer is None:
            return None
        try:
            try:
                validate_request(model.service_model, model.name, params)
            except ValidationError as error:
                raise _ApiError("ValidationError", str(error)) from None
            body = answer(self, account_id, region, params)
        except _ApiError as error:
            return _response(400, {"Error": {"Code": error.code, "Message": error.message}})
        return None if body is None else _response(200, body)

    def _inherit_source_version(self, context: dict[str, Any], **_: Any) -> None:
        """CreateLaunchTemplateVersion(SourceVersion=n): the new version starts from version n."""
        from moto.ec2.models import ec2_backends

        params = context.get(_PARAMS_KEY, {})
        if "SourceVersion" not in params or _CALLER_KEY not in context:
            return
        account_id, region = context[_CALLER_KEY]
        backend = ec2_backends[account_id][region]
        if "LaunchTemplateId" in params:
            template = backend.get_launch_template(params["LaunchTemplateId"])
        else:
            template = backend.get_launch_template_by_name(params["LaunchTemplateName"])
        source = template.get_version(params["SourceVersion"])
        created = template.latest_version()
        created.data = {**copy.deepcopy(source.data), **created.data}

    # --- launch-template versions: moto has no DeleteLaunchTemplateVersions ---------------------

    def _delete_versions(
        self, account_id: str, region: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        """Deleted versions keep their number; the default version cannot be deleted."""
        template = _launch_template(account_id, region, params)
        succeeded, failed = [], []
        for version in params["Versions"]:
            item = {"LaunchTemplateId": template.id, "LaunchTemplateName": template.name}
            number = int(version) if str(version).isdigit() else None
            key = (account_id, region, template.id, number or 0)
            if (
                number is None
                or not 1 <= number <= len(template.versions)
                or (key in self._deleted_versions)
            ):
                code, message = "launchTemplateVersionDoesNotExist", f"version {version} not found"
            elif number == template.default_version_number:
                code, message = "unexpectedError", "the default version cannot be deleted"
            elif number == template.latest_version_number:
                # $Latest would then resolve to the newest remaining version: not emulated.
                raise _ApiError("ValidationError", "deleting the latest version is not emulated")
            else:
                self._deleted_versions.add(key)
                succeeded.append({**item, "VersionNumber": number})
                continue
            item["VersionNumber"] = number or 0
            failed.append({**item, "ResponseError": {"Code": code, "Message": message}})
        return {
            "SuccessfullyDeletedLaunchTemplateVersions": succeeded,
            "UnsuccessfullyDeletedLaunchTemplateVersions": failed,
        }

    def _describe_versions(
        self, account_id: str, region: str, params: dict[str, Any]
    ) -> dict[str, Any] | None:
        """A deleted version named by number is an error; anything else goes on to moto."""
        if not params.get("Versions"):
            return None
        template = _launch_template(account_id, region, params)
        for version in params.get("Versions", []):
            if str(version).isdigit() and self._is_deleted(
                account_id, region, template.id, version
            ):
                raise _ApiError(
                    "InvalidLaunchTemplateId.VersionNotFound",
                    f"Could not find launch template version {version} for launch template "
                    f"{template.id}",
                )
        return None

    def _is_deleted(self, account_id: str, region: str, template_id: str, version: Any) -> bool:
        return (account_id, region, template_id, int(version)) in self._deleted_versions

    def _hide_deleted_versions(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any):
        if _CALLER_KEY not in context or "LaunchTemplateVersions" not in parsed:
            return
        account_id, region = context[_CALLER_KEY]
        parsed["LaunchTemplateVersions"] = [
            version
            for version in parsed["LaunchTemplateVersions"]
            if not self._is_deleted(
                account_id, region, version["LaunchTemplateId"], version["VersionNumber"]
            )
        ]

    _ec2_operations: Mapping[str, Callable[..., dict[str, Any] | None]] = {
        "DeleteLaunchTemplateVersions": _delete_versions,
        "DescribeLaunchTemplateVersions": _describe_versions,
    }

    # --- the four operations ------------------------------------------------------------------

    def _start(self, account_id: str, region: str, params: dict[str, Any]) -> dict[str, Any]:
        group = _group(account_id, region, params["AutoScalingGroupName"])
        if self._active(account_id, region, group.name) is not None:
            raise _ApiError(
                "InstanceRefreshInProgress",
                f"An Instance Refresh is already in progress and blocks the execution of this "
                f"Instance Refresh for group {group.name}.",
            )
        strategy = params.get("Strategy", "Rolling")
        if strategy != "Rolling":
            raise _ApiError("ValidationError", f"strategy {strategy} is not emulated")
        preferences = copy.deepcopy(params.get("Preferences", {}))
        desired = copy.deepcopy(params.get("DesiredConfiguration", {}))
        _check_preferences(preferences)
        saved = _group_configuration(group)
        target_version = _desired_version(group, desired)  # raises for unknown versions
        if self._is_deleted(account_id, region, target_version.template.id, target_version.number):
            raise _ApiError(
                "ValidationError",
                f"launch template {target_version.template.id} version {target_version.number} "
                "does not exist",
            )
        if preferences.get("AutoRollback"):
            _check_reversible(group, desired, saved)
        target_image = target_version.image_id
        to_replace = [
            state.instance.id
            for state in group.instance_states
            if not (preferences.get("SkipMatching") and state.instance.image_id == target_image)
        ]
        history = self._refreshes.setdefault((account_id, region, group.name), [])
        refresh = _Refresh(
            refresh_id=str(
                uuid.uuid5(_NAMESPACE, f"{account_id}/{region}/{group.name}/{len(history)}")
            ),
            account_id=account_id,
            region=region,
            group_name=group.name,
            group_arn=group.arn,
            start_time=self.now,
            preferences=preferences,
            desired=desired,
            strategy=strategy,
            saved_configuration=saved,
            to_replace=to_replace,
            total=len(to_replace),
            checkpoints=list(preferences.get("CheckpointPercentages", [])),
        )
        history.insert(0, refresh)
        return {"InstanceRefreshId": refresh.refresh_id}

    def _describe(self, account_id: str, region: str, params: dict[str, Any]) -> dict[str, Any]:
        history = self._refreshes.get((account_id, region, params["AutoScalingGroupName"]), [])
        wanted = params.get("InstanceRefreshIds")
        described = [r.describe() for r in history if not wanted or r.refresh_id in wanted]
        start = int(params.get("NextToken") or 0)
        page_size = params.get("MaxRecords", 50)
        body: dict[str, Any] = {"InstanceRefreshes": described[start : start + page_size]}
        if start + page_size < len(described):
            body["NextToken"] = str(start + page_size)
        return body

    def _cancel(self, account_id: str, region: str, params: dict[str, Any]) -> dict[str, Any]:
        refresh = self._active(account_id, region, params["AutoScalingGroupName"])
        if refresh is None or refresh.status not in ROLLBACK_ALLOWED_STATUSES:
            raise _ApiError("ActiveInstanceRefreshNotFound", "No in-progress instance refresh")
        refresh.status, refresh.status_reason = "Cancelling", "Cancellation requested"
        return {"InstanceRefreshId": refresh.refresh_id}

    def _rollback_request(
        self, account_id: str, region: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        refresh = self._active(account_id, region, params["AutoScalingGroupName"])
        if refresh is None or refresh.status not in ROLLBACK_ALLOWED_STATUSES:
            raise _ApiError("ActiveInstanceRefreshNotFound", "No in-progress instance refresh")
        if not refresh.desired:
            raise _ApiError(
                "IrreversibleInstanceRefresh",
                "rollback needs an instance refresh started with a desired configuration",
            )
        group = _group(account_id, region, refresh.group_name)
        _check_reversible(group, refresh.desired, refresh.saved_configuration)
        self._start_rollback(refresh, "Rollback requested by the caller")
        return {"InstanceRefreshId": refresh.refresh_id}

    _operations: Mapping[str, Callable[..., dict[str, Any]]] = {
        "StartInstanceRefresh": _start,
        "DescribeInstanceRefreshes": _describe,
        "CancelInstanceRefresh": _cancel,
        "RollbackInstanceRefresh": _rollback_request,
    }

    # --- progression --------------------------------------------------------------------------

    def _active(self, account_id: str, region: str, group_name: str) -> _Refresh | None:
        history = self._refreshes.get((account_id, region, group_name), [])
        return next((r for r in history if r.active), None)

    def _all_active(self) -> list[_Refresh]:
        return [r for history in self._refreshes.values() for r in history if r.active]

    def _check_alarms(self) -> None:
        """Alarms are watched while a refresh is in progress or baking, not once it has ended."""
        for refresh in self._all_active():
            if refresh.status in ROLLBACK_ALLOWED_STATUSES and (
                alarm := self._alarm_in_alarm(refresh)
            ):
                self._fail(refresh, f"CloudWatch alarm {alarm} is in ALARM")

    def _due_at(self, refresh: _Refresh) -> datetime:
        waits = [refresh.batch_ready_at, refresh.paused_until, refresh.bake_until]
        return max([w for w in waits if w is not None], default=self.now)

    def _progress(self, refresh: _Refresh) -> None:
        if refresh.status == "Cancelling":
            self._finish(refresh, "Cancelled", "Cancelled by the caller", "Cancelled")
            return
        if refresh.status == "Pending":
            refresh.status, refresh.status_reason = "InProgress", "Replacing instances"
            self._emit(refresh, "EC2 Auto Scaling Instance Refresh Started")
        if refresh.status == "RollbackInProgress":
            self._progress_rollback(refresh)
        elif refresh.status == "Baking":
            self._succeed(refresh)
        else:
            self._progress_replacement(refresh)

    def _progress_replacement(self, refresh: _Refresh) -> None:
        group = _group(refresh.account_id, refresh.region, refresh.group_name)
        if refresh.batch:
            self._complete_batch(refresh)
            return
        refresh.paused_until = None
        if refresh.to_replace:
            count = min(
                _batch_size(group.desired_capacity or 0, refresh.preferences),
                len(refresh.to_replace),
            )
            old, refresh.to_replace = refresh.to_replace[:count], refresh.to_replace[count:]
            refresh.batch = self._replace(group, old, refresh.desired)
            refresh.deployed.extend(refresh.batch)
            warmup = refresh.preferences.get("InstanceWarmup", DEFAULT_WARMUP)
            refresh.batch_ready_at = self.now + timedelta(seconds=warmup)
            return
        bake_time = refresh.preferences.get("BakeTime", 0)
        if bake_time:
            refresh.status, refresh.status_reason = "Baking", "Waiting for the bake time"
            refresh.bake_until = self.now + timedelta(seconds=bake_time)
        else:
            self._succeed(refresh)

    def _complete_batch(self, refresh: _Refresh) -> None:
        refresh.replaced += len(refresh.batch)
        refresh.batch, refresh.batch_ready_at = [], None
        reached = [p for p in refresh.checkpoints if p <= refresh.percentage_complete]
        if reached:
            refresh.checkpoints = [
                p for p in refresh.checkpoints if p > refresh.percentage_complete
            ]
            delay = refresh.preferences.get("CheckpointDelay", DEFAULT_CHECKPOINT_DELAY)
            refresh.paused_until = self.now + timedelta(seconds=delay)
            refresh.status_reason = f"Checkpoint {reached[-1]}% reached, waiting {delay} s"
            self._emit(
                refresh,
                "EC2 Auto Scaling Instance Refresh Checkpoint Reached",
                CheckpointPercentage=str(reached[-1]),
                CheckpointDelay=str(delay),
            )

    def _fail(self, refresh: _Refresh, reason: str) -> None:
        if refresh.preferences.get("AutoRollback") and refresh.desired:
            self._start_rollback(refresh, reason)
        else:
            self._finish(refresh, "Failed", reason, "Failed")

    def _start_rollback(self, refresh: _Refresh, reason: str) -> None:
        refresh.rollback = {
            "RollbackReason": reason,
            "RollbackStartTime": self.now,
            "PercentageCompleteOnRollback": refresh.percentage_complete,
            "InstancesToUpdateOnRollback": len(refresh.deployed),
        }
        refresh.status, refresh.status_reason = "RollbackInProgress", reason
        refresh.rollback_to_replace = list(refresh.deployed)
        refresh.batch, refresh.batch_ready_at = [], None
        refresh.paused_until = refresh.bake_until = None
        self._emit(refresh, "EC2 Auto Scaling Instance Refresh Rollback Started")

    def _progress_rollback(self, refresh: _Refresh) -> None:
        group = _group(refresh.account_id, refresh.region, refresh.group_name)
        if refresh.batch:
            refresh.replaced = max(0, refresh.replaced - len(refresh.batch))
            refresh.batch, refresh.batch_ready_at = [], None
            return
        if not refresh.rollback_to_replace:
            _apply_configuration(group, refresh.saved_configuration)
            self._finish(
                refresh,
                "RollbackSuccessful",
                refresh.status_reason,
                "Rollback Succeeded",
            )
            return
        count = min(
            _batch_size(group.desired_capacity or 0, refresh.preferences),
            len(refresh.rollback_to_replace),
        )
        undo = refresh.rollback_to_replace[:count]
        refresh.rollback_to_replace = refresh.rollback_to_replace[count:]
        refresh.batch = self._replace(group, undo, refresh.saved_configuration)
        warmup = refresh.preferences.get("InstanceWarmup", DEFAULT_WARMUP)
        refresh.batch_ready_at = self.now + timedelta(seconds=warmup)

    def _succeed(self, refresh: _Refresh) -> None:
        if refresh.desired:
            group = _group(refresh.account_id, refresh.region, refresh.group_name)
            _apply_configuration(group, refresh.desired)
        self._finish(refresh, "Successful", "Instance refresh completed", "Succeeded")

    def _finish(self, refresh: _Refresh, status: str, reason: str, event_suffix: str) -> None:
        refresh.status, refresh.status_reason, refresh.end_time = status, reason, self.now
        refresh.batch_ready_at = refresh.paused_until = refresh.bake_until = None
        self._emit(refresh, f"EC2 Auto Scaling Instance Refresh {event_suffix}")

    def _alarm_in_alarm(self, refresh: _Refresh) -> str | None:
        alarms = refresh.preferences.get("AlarmSpecification", {}).get("Alarms", [])
        return next(
            (
                name
                for name in alarms
                if self._alarm_state(refresh.account_id, refresh.region, name) == "ALARM"
            ),
            None,
        )

    def _replace(
        self, group: Any, instance_ids: list[str], configuration: Mapping[str, Any]
    ) -> list[str]:
        """Terminate `instance_ids` and launch as many instances of `configuration` in moto."""
        from moto.autoscaling.models import InstanceState

        backend = group.autoscaling_backend.ec2_backend
        gone = set(instance_ids)
        group.instance_states = [s for s in group.instance_states if s.instance.id not in gone]
        backend.terminate_instances(instance_ids)
        if not instance_ids:
            return []
        subnet_id = group.vpc_zone_identifier.split(",")[0] if group.vpc_zone_identifier else None
        launched = []
        first_slot = self._launches.get(group.arn, 0)
        self._launches[group.arn] = first_slot + len(instance_ids)
        images = _launch_images(group, configuration, first_slot, len(instance_ids))
        for image_id in dict.fromkeys(images):
            reservation = backend.run_instances(
                image_id,
                images.count(image_id),
                group.user_data,
                group.security_groups,
                instance_type=group.instance_type or "t3.micro",
                tags={"instance": {"aws:autoscaling:groupName": group.name}},
                placement=self._random.choice(group.availability_zones),
                launch_template={"LaunchTemplateId": group.ec2_launch_template.id},
                is_instance_type_default=False,
                subnet_id=subnet_id,
            )
            for instance in reservation.instances:
                instance.autoscaling_group = group
                group.instance_states.append(
                    InstanceState(instance, protected_from_scale_in=False, autoscaling_group=group)
                )
                launched.append(instance.id)
        return launched

    def _emit(self, refresh: _Refresh, detail_type: str, **detail: str) -> None:
        self._event_sink(
            {
                "version": "0",
                "id": str(uuid.uuid5(_NAMESPACE, f"{refresh.refresh_id}/{detail_type}")),
                "detail-type": detail_type,
                "source": "aws.autoscaling",
                "account": refresh.account_id,
                "time": self.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "region": refresh.region,
                "resources": [refresh.group_arn],
                "detail": {
                    "InstanceRefreshId": refresh.refresh_id,
                    "AutoScalingGroupName": refresh.group_name,
                    **detail,
                },
            }
        )


# --- helpers over moto's models ---------------------------------------------------------------


def _response(status: int, body: dict[str, Any]) -> tuple[AWSResponse, dict[str, Any]]:
    body["ResponseMetadata"] = {"HTTPStatusCode": status, "RequestId": str(uuid.uuid4())}
    return AWSResponse("https://autoscaling.amazonaws.com/", status, {}, None), body


def _group(account_id: str, region: str, group_name: str) -> Any:
    from moto.autoscaling.models import autoscaling_backends

    group = autoscaling_backends[account_id][region].autoscaling_groups.get(group_name)
    if group is None:
        raise _ApiError("ValidationError", f"AutoScalingGroup name not found - {group_name}")
    return group


def _launch_template(account_id: str, region: str, params: Mapping[str, Any]) -> Any:
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[account_id][region]
    try:
        if "LaunchTemplateId" in params:
            return backend.get_launch_template(params["LaunchTemplateId"])
        return backend.get_launch_template_by_name(params["LaunchTemplateName"])
    except EC2ClientError as error:
        raise _ApiError(error.code, error.message) from None


def _group_configuration(group: Any) -> dict[str, Any]:
    """What rollback restores: the group's launch template or mixed instances policy."""
    spec = {
        "LaunchTemplateId": group.ec2_launch_template.id,
        "Version": group.launch_template_version,
    }
    if group.mixed_instances_policy:
        policy = copy.deepcopy(group.mixed_instances_policy)
        policy["LaunchTemplate"]["LaunchTemplateSpecification"] = spec
        return {"MixedInstancesPolicy": policy}
    return {"LaunchTemplate": spec}


def _specification(configuration: Mapping[str, Any]) -> Mapping[str, Any] | None:
    if "LaunchTemplate" in configuration:
        return configuration["LaunchTemplate"]
    if "MixedInstancesPolicy" in configuration:
        return configuration["MixedInstancesPolicy"]["LaunchTemplate"][
            "LaunchTemplateSpecification"
        ]
    return None


def _desired_version(group: Any, configuration: Mapping[str, Any]) -> Any:
    """The launch-template version `configuration` names (the group's own when it names none)."""
    from moto.ec2.exceptions import EC2ClientError

    spec = _specification(configuration) or _specification(_group_configuration(group))
    backend = group.ec2_backend
    try:
        if "LaunchTemplateId" in spec:
            template = backend.get_launch_template(spec["LaunchTemplateId"])
        else:
            template = backend.get_launch_template_by_name(spec["LaunchTemplateName"])
        return template.get_version(spec.get("Version") or "$Default")
    except EC2ClientError as error:
        raise _ApiError("ValidationError", f"launch template {dict(spec)}: {error}") from None


def _launch_images(
    group: Any, configuration: Mapping[str, Any], first_slot: int, count: int
) -> list[str]:
    """The image each of `count` new instances runs (`first_slot`: launches so far).

    A MixedInstancesPolicy override with its own LaunchTemplateSpecification launches from that
    template, one with an ImageId from that image (Auto Scaling User Guide, "Specify a different
    launch template for an instance type"); the others from the group's template. Which override
    an instance gets depends on capacity and prices in AWS; here the instances take the
    overrides in turn, so a mixed group always gets some instances of every override.
    """
    main = _desired_version(group, configuration).image_id
    policy = configuration.get("MixedInstancesPolicy") or {}
    overrides = policy.get("LaunchTemplate", {}).get("Overrides") or []
    if not any(o.get("LaunchTemplateSpecification") or o.get("ImageId") for o in overrides):
        return [main] * count
    images = []
    for slot in range(first_slot, first_slot + count):
        override = overrides[slot % len(overrides)]
        if override.get("ImageId"):
            images.append(override["ImageId"])
        elif spec := override.get("LaunchTemplateSpecification"):
            images.append(_desired_version(group, {"LaunchTemplate": spec}).image_id)
        else:
            images.append(main)
    return images


def _check_preferences(preferences: Mapping[str, Any]) -> None:
    minimum = preferences.get("MinHealthyPercentage")
    maximum = preferences.get("MaxHealthyPercentage")
    if maximum is not None and minimum is None:
        raise _ApiError("ValidationError", "MaxHealthyPercentage requires MinHealthyPercentage")
    if maximum is not None and maximum - minimum > 100:
        raise _ApiError(
            "ValidationError",
            "MaxHealthyPercentage minus MinHealthyPercentage cannot exceed 100",
        )
    checkpoints = preferences.get("CheckpointPercentages", [])
    if "CheckpointDelay" in preferences and not checkpoints:
        raise _ApiError("ValidationError", "CheckpointDelay requires CheckpointPercentages")
    if checkpoints != sorted(set(checkpoints)) or any(not 1 <= p <= 100 for p in checkpoints):
        raise _ApiError(
            "ValidationError", "CheckpointPercentages must be ascending values from 1 to 100"
        )


def _check_reversible(group: Any, desired: Mapping[str, Any], saved: Mapping[str, Any]) -> None:
    """AutoRollback needs a DesiredConfiguration and a numbered, SSM-free version to return to."""
    if not desired:
        raise _ApiError("ValidationError", "AutoRollback requires a DesiredConfiguration")
    for configuration in (desired, saved):
        version = str(_specification(configuration).get("Version") or "$Default")
        if not version.isdigit():
            raise _ApiError(
                "ValidationError",
                f"rollback is not supported with launch template version {version}",
            )
        if _desired_version(group, configuration).image_id.startswith("resolve:ssm:"):
            raise _ApiError(
                "ValidationError", "rollback is not supported with an SSM parameter as ImageId"
            )


def _apply_configuration(group: Any, configuration: Mapping[str, Any]) -> None:
    """Save `configuration` on the group, as UpdateAutoScalingGroup would."""
    configuration = copy.deepcopy(dict(configuration))
    group.mixed_instances_policy = configuration.get("MixedInstancesPolicy")
    group._set_launch_configuration(
        None, configuration.get("LaunchTemplate"), group.mixed_instances_policy
    )


def _batch_size(desired_capacity: int, preferences: Mapping[str, Any]) -> int:
    """Instances replaced at once: capacity between MinHealthy (in service) and MaxHealthy."""
    minimum = preferences.get("MinHealthyPercentage", DEFAULT_MIN_HEALTHY)
    maximum = preferences.get("MaxHealthyPercentage", 100)
    keep_in_service = math.ceil(desired_capacity * minimum / 100)
    ceiling = math.floor(desired_capacity * maximum / 100)
    return max(1, ceiling - keep_in_service)
