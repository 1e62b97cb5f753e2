"""The whole rollout story in one process, on moto and the sandbox emulations (`make demo`).

An Organization with an infra account and N workload accounts: the enrolled ones are healthy
except one whose ECS services fail on the new AMI, and the last one has no workload stack.
Every stack is the real program run under Pulumi mocks and applied to moto
(`sandbox.moto_deploy`); every handler is the real Lambda code, invoked through boto3 with its
stack's environment and its role's credentials (`sandbox.lambda_invoke`). The story:

 1. payloads land in the bucket; each S3 event goes through the trigger rule's pattern to the
    queue, the queue's batch to the build-trigger handler, which starts one build;
 2. the emulated Image Builder runs it (payload manifest), distributes the AMI to every region
    and publishes the image-state notification to the topic's subscribers;
 3. the fan-out handler lists the accounts, assumes the invoke role in each and invokes the
    workload handler, which creates a launch-template version and starts an instance refresh;
    the account without a workload stack has no invoke role, so AssumeRole is denied there, as
    STS would (`sandbox.sts_trust` evaluates the roles' trust policies);
 4. minute by minute the refreshes replace instances; in the failing account ECS emits task and
    service errors that go through the cluster's rule pattern into its log group, the metric
    filter counts them, the alarm fires and the refresh rolls back; finished-refresh events go
    through the catch-up rule back into the workload handler;
 5. a second convergence shows the rolled-back AMI quarantined;
 6. in the same world, a progressive rollout in two waves on the infra stack's state machine
    (`sandbox.demo_waves`), canary = the failing account: image A's ECS failures roll the
    canary's refresh back and halt the rollout before the second wave, image B passes the
    canary, soaks and completes in the second wave.

The timeline is printed as it happens and written, with the outcome per account and group, to
the report (`demo-report.json`). Times are offsets on the simulated clock.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, TextIO

import boto3
from moto import mock_aws
from moto.iam.models import iam_backends
from moto.moto_api._internal import mock_random

from handlers.common.log import JsonFormatter
from handlers.recorder import app as recorder_app
from rollout import status as rollout_status
from sandbox import demo_waves
from sandbox.ecs_alarm import EventBridgeEmulator, ecs_service_event, ecs_task_stopped_event
from sandbox.event_buses import EventBuses
from sandbox.image_builder import ImageBuilderEmulator, sns_envelope
from sandbox.instance_refresh import ACTIVE_STATUSES, InstanceRefreshEmulator
from sandbox.lambda_invoke import Invocation, LambdaRouter
from sandbox.moto_deploy import DeployedStack, deploy
from sandbox.service_models import shared_service_models
from sandbox.sts_trust import StsTrustEmulator
from sandbox.timeline import Timeline, write_report
from tests.pulumi_harness import REPO_ROOT, run_stack

HOME_REGION = "eu-west-1"
# Like the example stacks: the infra stack distributes every image to two regions, and the
# workload groups are all in the home region, so the workload stacks cover only that one. An
# enrolled account then reads `not-enrolled` in the other region (its invoke role may invoke the
# refresh function in every region, so Lambda answers "function not found" there).
INFRA_REGIONS = (HOME_REGION, "us-east-1")
WORKLOAD_REGIONS = (HOME_REGION,)
ACCESS_ROLE = "OrganizationAccountAccessRole"  # what Organizations creates in member accounts
LAMBDA_SERVICE = "lambda.amazonaws.com"
CLUSTER = "web"
SERVICE = "storefront"
GROUP_CAPACITY = 4
TICK = timedelta(minutes=1)
BUILD_STEP = timedelta(minutes=5)
MAX_STORY = timedelta(hours=4)
PAYLOAD_PREFIX = "payloads/"
BASELINE_PAYLOADS = (("payloads/00-base.sh", "#!/bin/bash\ndnf -y update --security\n"),)
STORY_PAYLOADS = (
    ("payloads/10-cis-hardening.sh", "#!/bin/bash\nsysctl -w net.ipv4.conf.all.rp_filter=1\n"),
    ("payloads/20-node-exporter.sh", "#!/bin/bash\ndnf -y install golang-node-exporter\n"),
    ("payloads/README.md", "Payloads run in key order; only .sh files count.\n"),
)
_EVENT_IDS = uuid.UUID("0c0f6a39-5bd4-4c89-9d4e-5f1f0b7e0d11")


@dataclass(frozen=True)
class DemoOptions:
    accounts: int = 3
    failing: str = "2"  # 1-based index or name of the enrolled account whose services fail
    seed: int = 7
    report: Path = REPO_ROOT / "demo-report.json"
    handler_log: Path | None = None  # where the handlers' own JSON log lines go

    def workload_names(self) -> list[str]:
        return [f"workload-{index:02d}" for index in range(1, self.accounts + 1)]

    def failing_name(self) -> str | None:
        """The failing account's name (None for 'none'); ValueError names what is allowed."""
        enrolled = self.workload_names()[:-1]
        if self.failing == "none":
            return None
        if self.failing in enrolled:
            return self.failing
        if self.failing.isdigit() and 1 <= int(self.failing) <= len(enrolled):
            return enrolled[int(self.failing) - 1]
        raise ValueError(
            f"--failing {self.failing!r}: expected an enrolled account's index (1-{len(enrolled)})"
            f" or name ({', '.join(enrolled)}), or 'none'; the last account has no workload stack"
        )


def parse_options(argv: Sequence[str]) -> DemoOptions:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description="The golden AMI rollout story on a local sandbox (moto + emulations).",
    )
    parser.add_argument(
        "--accounts",
        type=int,
        default=DemoOptions.accounts,
        help="workload accounts, at least 3; the last one has no workload stack (default 3)",
    )
    parser.add_argument(
        "--failing",
        default=DemoOptions.failing,
        help="index or name of the account whose services fail on the new AMI, or 'none'",
    )
    parser.add_argument("--seed", type=int, default=DemoOptions.seed, help="seed of moto's ids")
    parser.add_argument(
        "--report", type=Path, default=DemoOptions.report, help="where to write the JSON report"
    )
    parser.add_argument(
        "--handler-log", type=Path, help="write the handlers' JSON log lines to this file"
    )
    args = parser.parse_args(argv)
    if args.accounts < 3:
        parser.error(f"--accounts {args.accounts}: at least 3 (healthy, failing, not enrolled)")
    options = DemoOptions(args.accounts, args.failing, args.seed, args.report, args.handler_log)
    try:
        options.failing_name()
    except ValueError as error:
        parser.error(str(error))
    return options


def run_demo(options: DemoOptions, out: TextIO | None) -> dict[str, Any]:
    """Run the story, print its timeline to `out`, write and return the report."""
    # A new deployment: the recorder's execution environments (cached clients) start fresh.
    recorder_app.recorder.cache_clear()
    with shared_service_models(), _handler_logs_captured() as handler_logs:
        # The rollout waves' state machine runs on moto's ASL interpreter.
        with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
            mock_random.seed(options.seed)
            story = Story(options, out)
            with story.emulators_installed():
                story.tell()
                report = story.report()
                status_table = story.rollout_status_table()
                if out is not None:
                    out.write(f"\n== Rollout status (python -m rollout status)\n{status_table}")
                # In the same world: the same accounts, stacks, emulators and clock.
                report["waves"] = demo_waves.tell(story, out)
        report["timeline"] = story.timeline.as_report()
    write_report(options.report, report)
    if options.handler_log is not None:
        options.handler_log.write_text(handler_logs.getvalue())
    return report


@contextmanager
def _handler_logs_captured() -> Iterator[io.StringIO]:
    """Keep the handlers' JSON log lines (what Lambda ships to CloudWatch Logs) off the timeline.

    Loggers that already exist are pointed at the buffer; the ones created during the run (a
    handler module imported by the deployment) bind to `sys.stdout`, redirected meanwhile.
    Afterwards every handler writing to the buffer gets its own stream back.
    """
    captured = io.StringIO()
    previous = {handler: handler.setStream(captured) for handler in _json_log_handlers()}
    try:
        with redirect_stdout(captured):
            yield captured
    finally:
        for handler in _json_log_handlers():
            if handler.stream is captured:
                handler.setStream(previous.get(handler, sys.stdout))


def _json_log_handlers() -> list[logging.StreamHandler]:
    return [
        handler
        for logger in list(logging.root.manager.loggerDict.values())
        if isinstance(logger, logging.Logger)
        for handler in logger.handlers
        if isinstance(handler, logging.StreamHandler)
        and isinstance(handler.formatter, JsonFormatter)
    ]


def _grant_administrator_access(account_id: str) -> None:
    """What Organizations attaches to the access role of an account it creates (moto does not).

    The demo acts in each workload account through that role; the sandbox evaluates its identity
    policies (`sandbox.identity_policy`) like any other caller's.
    """
    iam_backends[account_id]["aws"].put_role_policy(
        ACCESS_ROLE,
        "AdministratorAccess",
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            }
        ),
    )


def _clock_start() -> datetime:
    """Near the real clock (CloudWatch Logs rejects events older than 14 days), on the hour."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)


# --- the participants ---------------------------------------------------------------------------


@dataclass
class Account:
    name: str
    account_id: str
    session: boto3.Session
    enrolled: bool = True
    fails_on_new_image: bool = False
    group_name: str = ""
    image_before: str = ""
    stack: DeployedStack | None = None
    events: EventBridgeEmulator | None = None
    refresh_seen: dict[str, tuple[str, int]] = field(default_factory=dict)
    instances_on_new: int = 0
    _clients: dict[tuple[str, str], Any] = field(default_factory=dict)

    def client(self, service: str, region: str = HOME_REGION) -> Any:
        if (service, region) not in self._clients:
            self._clients[service, region] = self.session.client(service, region_name=region)
        return self._clients[service, region]


class Story:
    def __init__(self, options: DemoOptions, out: TextIO | None):
        self.options = options
        start = _clock_start()
        self.refresh = InstanceRefreshEmulator(event_sink=self._on_refresh_event, start_time=start)
        self.image_builder = ImageBuilderEmulator(clock=lambda: self.refresh.now)
        # Events between accounts' buses, as EventBridge delivers them (the rollout status).
        self.buses = EventBuses(clock=lambda: self.now, organization_of=self._organization_of)
        self.sts_trust = StsTrustEmulator()
        self.timeline = Timeline(start, out)
        self.workloads: list[Account] = []
        self.images: list[dict[str, Any]] = []
        self.started_image_arns: list[str] = []
        self.batch_opened: dict[str, datetime] = {}  # queue ARN -> when its batch started
        self._ecs_event_count = 0

    @contextmanager
    def emulators_installed(self) -> Iterator[None]:
        with self.sts_trust, self.refresh, self.image_builder:
            # Lambda assumes each function's execution role as its service principal. A session
            # takes the hooks installed when it is created, so the router's is created in here.
            self.router = LambdaRouter(self.sts_trust.service_session(LAMBDA_SERVICE))
            with (
                self.router.installed(),
                self.buses.installed(boto3.Session(region_name=HOME_REGION)),
            ):
                yield

    @property
    def now(self) -> datetime:
        return self.refresh.now

    def note(self, account: str, step: str, result: str) -> None:
        self.timeline.record(self.now, account, step, result)

    def advance(self, delta: timedelta) -> None:
        self.refresh.advance(delta.total_seconds())

    def tell(self) -> None:
        # Sessions are created once the emulators are installed: botocore copies the global
        # handlers into a session when it is created.
        management = boto3.Session(region_name=HOME_REGION)
        organization = management.client("organizations").create_organization(FeatureSet="ALL")
        self.organization_id = organization["Organization"]["Id"]
        # The infra account is the Organization's management account, so the fan-out lists the
        # accounts itself (a delegated administrator or a listing role works the same way).
        self.infra = Account("infra", organization["Organization"]["MasterAccountId"], management)

        self.timeline.heading("Organization, stacks and today's image")
        self.create_accounts()
        self.deploy_infra()
        # Said before it happens, so the failure below is never shown unexplained.
        self.note(
            "infra",
            "note",
            "today's image is built and fans out before the workload stacks exist: the expected "
            "accounts cannot be reached yet, so that fan-out fails and Lambda retries it "
            "(as it would in AWS)",
        )
        self.release_payloads(BASELINE_PAYLOADS)
        self.prepare_workloads()
        self.deploy_workloads()
        self.timeline.heading("New payloads: build, fan-out, refresh")
        self.release_payloads(STORY_PAYLOADS)
        self.timeline.heading("Second convergence")
        self.converge_again()
        self.settle()

    # --- set-up -----------------------------------------------------------------------------

    def create_accounts(self) -> None:
        self.note("infra", "organization", f"{self.organization_id} (infra = management account)")
        organizations = self.infra.client("organizations")
        names = self.options.workload_names()
        failing = self.options.failing_name()
        for name in names:
            account_id = organizations.create_account(
                AccountName=name, Email=f"{name}@example.com"
            )["CreateAccountStatus"]["AccountId"]
            _grant_administrator_access(account_id)
            account = Account(
                name,
                account_id,
                self._session_in(account_id),
                enrolled=name != names[-1],
                fails_on_new_image=name == failing,
            )
            self.workloads.append(account)
            role = "services fail on new AMIs" if account.fails_on_new_image else "healthy"
            self.note(
                name, "account", f"{account_id}, {role if account.enrolled else 'not enrolled'}"
            )

    def _session_in(self, account_id: str, region: str = HOME_REGION) -> boto3.Session:
        credentials = self.infra.client("sts").assume_role(
            RoleArn=f"arn:aws:iam::{account_id}:role/{ACCESS_ROLE}",
            RoleSessionName="golden-ami-demo",
        )["Credentials"]
        return boto3.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
            region_name=region,
        )

    def _sessions_of(self, account: Account) -> Callable[[str], boto3.Session]:
        credentials = account.session.get_credentials().get_frozen_credentials()
        return cache(
            lambda region: boto3.Session(
                aws_access_key_id=credentials.access_key,
                aws_secret_access_key=credentials.secret_key,
                aws_session_token=credentials.token,
                region_name=region,
            )
        )

    def deploy_infra(self) -> None:
        run = run_stack(
            "infra",
            {
                "aws:allowedAccountIds": [self.infra.account_id],
                "infraAccountId": self.infra.account_id,
                "managementAccountId": self.infra.account_id,
                "organizationId": self.organization_id,
                "regions": list(INFRA_REGIONS),
                "bucketName": f"golden-ami-payloads-{self.infra.account_id}",
                "expectedAccountIds": [a.account_id for a in self.workloads if a.enrolled],
            },
        )
        self.infra_stack = deploy(
            run, self.infra.account_id, self._sessions_of(self.infra), self.router
        )
        self.infra.stack = self.infra_stack
        self.infra.events = EventBridgeEmulator(self.infra.session, HOME_REGION, self.buses)
        self.buses.register(self.infra.account_id, HOME_REGION, self.infra.events)
        self._register_pipeline(run)
        self.bucket = run.outputs["bucketName"]
        self.topic_arn = run.outputs["imageTopicArn"]
        functions = ", ".join(sorted(f.name for f in self.infra_stack.functions.values()))
        self.note("infra", "infra stack", f"{len(run.resources)} resources; functions {functions}")

    def _register_pipeline(self, run: Any) -> None:
        """The pipeline as the stack declares it: regions, AMI name, launch permission, tags."""
        pipeline = run.one("aws:imagebuilder/imagePipeline:ImagePipeline")
        recipe = run.one("aws:imagebuilder/imageRecipe:ImageRecipe")
        distributions = run.one(
            "aws:imagebuilder/distributionConfiguration:DistributionConfiguration"
        ).inputs["distributions"]
        ami = distributions[0]["amiDistributionConfiguration"]
        self.image_builder.register_pipeline(
            pipeline.outputs["arn"],
            regions=[distribution["region"] for distribution in distributions],
            ami_name=ami["name"],
            launch_permission=ami.get("launchPermission"),
            ami_tags=ami.get("amiTags"),
            image_name=recipe.outputs["name"],
            recipe_version=recipe.inputs["version"],
            visible_in_accounts=[account.account_id for account in self.workloads],
        )

    def prepare_workloads(self) -> None:
        """The seed's prerequisites in every workload account: template, group, cluster."""
        image = self.images[-1]["amis"][HOME_REGION]
        for account in self.workloads:
            account.image_before = image
            account.group_name = f"{CLUSTER}-ecs"
            template_id = account.client("ec2").create_launch_template(
                LaunchTemplateName=f"{CLUSTER}-ecs",
                LaunchTemplateData={"ImageId": image, "InstanceType": "m7i.large"},
            )["LaunchTemplate"]["LaunchTemplateId"]
            autoscaling = account.client("autoscaling")
            autoscaling.create_auto_scaling_group(
                AutoScalingGroupName=account.group_name,
                LaunchTemplate={"LaunchTemplateId": template_id, "Version": "1"},
                MinSize=GROUP_CAPACITY,
                MaxSize=GROUP_CAPACITY * 2,
                DesiredCapacity=GROUP_CAPACITY,
                AvailabilityZones=[f"{HOME_REGION}a", f"{HOME_REGION}b"],
            )
            group_arn = self._group(account)["AutoScalingGroupARN"]
            ecs = account.client("ecs")
            ecs.create_capacity_provider(
                name=f"{CLUSTER}-capacity",
                autoScalingGroupProvider={
                    "autoScalingGroupArn": group_arn,
                    "managedTerminationProtection": "ENABLED",
                    "managedDraining": "ENABLED",
                },
            )
            ecs.create_cluster(clusterName=CLUSTER, capacityProviders=[f"{CLUSTER}-capacity"])
            self.note(
                account.name,
                "ECS capacity",
                f"{account.group_name}: {GROUP_CAPACITY} instances, {template_id} v1 = {image}",
            )

    def deploy_workloads(self) -> None:
        for account in self.workloads:
            if not account.enrolled:
                continue
            template_id = self._group(account)["LaunchTemplate"]["LaunchTemplateId"]
            run = run_stack(
                "workload-dev",
                {
                    "aws:allowedAccountIds": [account.account_id],
                    "infraAccountId": self.infra.account_id,
                    "organizationId": self.organization_id,
                    "regions": list(WORKLOAD_REGIONS),
                    "fanoutRoleArn": self._fanout_role_arn(),
                    "rolloutBusArn": self.infra_stack.run.outputs["rolloutBusArn"],
                    "ecsInstanceRoleArn": f"arn:aws:iam::{account.account_id}:role/ecsInstanceRole",
                    "targets": [
                        {
                            "autoScalingGroupName": account.group_name,
                            "launchTemplateId": template_id,
                            "clusterName": CLUSTER,
                        }
                    ],
                },
            )
            account.stack = deploy(run, account.account_id, self._sessions_of(account), self.router)
            account.events = EventBridgeEmulator(account.session, HOME_REGION, self.buses)
            self.buses.register(account.account_id, HOME_REGION, account.events)
            rules = account.client("events").list_rules()["Rules"]
            self.note(
                account.name,
                "workload stack",
                f"{len(run.resources)} resources; rules {', '.join(r['Name'] for r in rules)}",
            )

    def _fanout_role_arn(self) -> str:
        role_name = self.infra_stack.run.config["golden-ami:fanoutRoleName"]
        return f"arn:aws:iam::{self.infra.account_id}:role/{role_name}"

    # --- the infra account's path ---------------------------------------------------------

    def release_payloads(self, payloads: Sequence[tuple[str, str]]) -> None:
        """Upload a burst, build what the trigger starts, publish it, play out what follows."""
        image = self.build_released(payloads)
        self.publish_image_state(image["message"])
        self.settle()

    def build_released(self, payloads: Sequence[tuple[str, str]]) -> dict[str, Any]:
        """Upload a burst and build the image the trigger starts."""
        builds = len(self.started_image_arns)
        for key, body in payloads:
            self.upload(key, body)
        deadline = self.now + MAX_STORY
        while len(self.started_image_arns) == builds:
            if self.now >= deadline:
                raise RuntimeError(f"no build started within {MAX_STORY} of the upload")
            self.tick()
        image = self.build(self.started_image_arns[-1])
        self.images.append(image)
        return image

    def upload(self, key: str, body: str) -> None:
        version_id = self.infra.client("s3").put_object(
            Bucket=self.bucket, Key=key, Body=body.encode()
        )["VersionId"]
        event = self._s3_object_created(key, body.encode(), version_id)
        deliveries = self.infra.events.put_event(event, self.now)
        routed = ", ".join(f"rule {d.rule} → queue" for d in deliveries) or "no rule matched"
        self.note("infra", "upload", f"{key} → {routed}")

    def _s3_object_created(self, key: str, body: bytes, version_id: str) -> dict[str, Any]:
        """S3's EventBridge "Object Created" event (sample: s3_eventbridge_object_created)."""
        return {
            "version": "0",
            "id": str(uuid.uuid5(_EVENT_IDS, f"s3/{key}/{version_id}")),
            "detail-type": "Object Created",
            "source": "aws.s3",
            "account": self.infra.account_id,
            "time": _event_time(self.now),
            "region": HOME_REGION,
            "resources": [f"arn:aws:s3:::{self.bucket}"],
            "detail": {
                "version": "0",
                "bucket": {"name": self.bucket},
                "object": {
                    "key": key,
                    "size": len(body),
                    "etag": hashlib.md5(body).hexdigest(),  # S3's ETag of a single-part upload
                    "version-id": version_id,
                    "sequencer": f"{int(self.now.timestamp() * 1000):016X}",
                },
                "request-id": version_id[:16].upper(),
                "requester": self.infra.account_id,
                "source-ip-address": "10.0.0.1",
                "reason": "PutObject",
            },
        }

    def poll_queues(self) -> None:
        """The SQS event source mappings: a batch goes to the function once the batching window
        since its first message has passed (or the batch is full)."""
        sqs, functions = self.infra.client("sqs"), self.infra.client("lambda")
        for trigger in self.infra_stack.queue_triggers:
            queue_url = sqs.get_queue_url(QueueName=trigger.queue_arn.rsplit(":", 1)[1])["QueueUrl"]
            waiting = int(
                sqs.get_queue_attributes(
                    QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
                )["Attributes"]["ApproximateNumberOfMessages"]
            )
            if not waiting:
                self.batch_opened.pop(trigger.queue_arn, None)
                continue
            opened = self.batch_opened.setdefault(trigger.queue_arn, self.now)
            window = timedelta(seconds=trigger.batching_window_seconds)
            if self.now - opened < window and waiting < trigger.batch_size:
                continue
            messages = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=min(10, trigger.batch_size)
            ).get("Messages", [])
            batch = {"Records": [_sqs_record(message, trigger.queue_arn) for message in messages]}
            response = functions.invoke(
                FunctionName=trigger.function_name, Payload=json.dumps(batch).encode()
            )
            result = json.loads(response["Payload"].read())
            function = trigger.function_name.rsplit(":", 1)[1]
            if "FunctionError" in response:
                # Messages stay in the queue: the mapping retries them after the visibility timeout.
                self.note("infra", function, f"failed: {result['errorMessage']}")
                continue
            for message in messages:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            self.batch_opened.pop(trigger.queue_arn, None)
            decision = result["decision"]
            if decision.get("imageArn"):
                self.started_image_arns.append(decision["imageArn"])
            tagged = (
                f"; tagged {len(result['taggedAmis'])} AMIs" if result.get("taggedAmis") else ""
            )
            self.note(
                "infra",
                function,
                f"batch of {len(messages)}: {decision['action']} ({decision.get('reason', '')})"
                + tagged,
            )

    def build(self, image_arn: str) -> dict[str, Any]:
        manifest = self._payload_manifest()
        version = image_arn.rsplit("/", 2)[-2:]
        self.note(
            "infra",
            "image build",
            f"{'/'.join(version)} PENDING; payload runner: "
            + ", ".join(entry["key"].removeprefix(PAYLOAD_PREFIX) for entry in manifest),
        )
        while True:
            self.advance(BUILD_STEP)
            message = self.image_builder.advance(image_arn)
            if message is not None:
                break
            self.note("infra", "image build", self.image_builder.image(image_arn).status)
        amis = {ami["region"]: ami["image"] for ami in message["outputResources"]["amis"]}
        self.note(
            "infra",
            "image build",
            f"{message['state']['status']}: "
            + ", ".join(f"{ami} in {region}" for region, ami in amis.items()),
        )
        return {"arn": image_arn, "amis": amis, "payloads": manifest, "message": message}

    def _payload_manifest(self) -> list[dict[str, str]]:
        """What the payload runner records: the latest version of each .sh key, in key order."""
        s3 = self.infra.client("s3")
        versions = s3.list_object_versions(Bucket=self.bucket, Prefix=PAYLOAD_PREFIX)["Versions"]
        manifest = []
        for version in sorted(versions, key=lambda v: v["Key"]):
            if not version["IsLatest"] or not version["Key"].endswith(".sh"):
                continue
            body = s3.get_object(
                Bucket=self.bucket, Key=version["Key"], VersionId=version["VersionId"]
            )["Body"].read()
            manifest.append(
                {
                    "key": version["Key"],
                    "versionId": version["VersionId"],
                    "sha256": hashlib.sha256(body).hexdigest(),
                }
            )
        return manifest

    def publish_image_state(self, message: dict[str, Any]) -> None:
        """Image Builder publishes to the topic; SNS delivers it to every subscription."""
        message_id = self.infra.client("sns").publish(
            TopicArn=self.topic_arn, Message=json.dumps(message)
        )["MessageId"]
        subscriptions = [s for s in self.infra_stack.subscriptions if s.topic_arn == self.topic_arn]
        for subscription in subscriptions:
            if subscription.protocol == "lambda":
                event = _sns_lambda_event(message, self.topic_arn, message_id, self.now)
                self.infra.client("lambda").invoke(
                    FunctionName=subscription.endpoint,
                    InvocationType="Event",
                    Payload=json.dumps(event).encode(),
                )
            elif subscription.protocol == "sqs":
                envelope = sns_envelope(message, self.topic_arn, message_id)
                body = message if subscription.raw_message_delivery else envelope
                sqs = self.infra.client("sqs")
                queue_url = sqs.get_queue_url(QueueName=subscription.endpoint.rsplit(":", 1)[1])
                sqs.send_message(QueueUrl=queue_url["QueueUrl"], MessageBody=json.dumps(body))
            else:
                raise ValueError(f"SNS protocol {subscription.protocol!r} is not emulated")
        endpoints = ", ".join(f"{s.protocol} {s.endpoint.rsplit(':', 1)[1]}" for s in subscriptions)
        self.note("infra", "image-state topic", f"{message['state']['status']} → {endpoints}")

    def deliver_to_waves(self, message: dict[str, Any], function_name: str) -> None:
        """With rollout waves on, the image-state topic's subscriber is the waves function."""
        message_id = self.infra.client("sns").publish(
            TopicArn=self.topic_arn, Message=json.dumps(message)
        )["MessageId"]
        event = _sns_lambda_event(message, self.topic_arn, message_id, self.now)
        self.infra.client("lambda").invoke(
            FunctionName=function_name, InvocationType="Event", Payload=json.dumps(event).encode()
        )
        self.note(
            "infra",
            "image-state topic",
            f"{message['state']['status']} → lambda {function_name} (rollout waves)",
        )

    # --- what the handlers do ---------------------------------------------------------------

    def run_invocations(self) -> None:
        """Run the asynchronous invocations queued so far, and those they queue."""
        for invocation in self.router.drain():
            for account, step, result in self._describe(invocation):
                self.note(account, step, result)

    def _account_by_id(self, account_id: str) -> Account | None:
        every = [self.infra, *self.workloads]
        return next((account for account in every if account.account_id == account_id), None)

    def _name_of(self, account_id: str) -> str:
        account = self._account_by_id(account_id)
        return account.name if account else account_id

    def _describe(self, invocation: Invocation) -> list[tuple[str, str, str]]:
        account = self._name_of(invocation.function_arn.split(":")[4])
        function = invocation.function_arn.rsplit(":", 1)[1]
        if invocation.error is not None:
            # Lambda retries a failed asynchronous invocation twice; the demo does not replay them.
            error_type, _, message = invocation.error.partition(": ")
            error = f"{error_type.rsplit('.', 1)[-1]}: {message}"
            return [(account, function, f"invocation failed (Lambda retries it): {error}")]
        result = invocation.result
        if "rolloutId" in result and "started" in result:  # the rollout waves function
            if result["started"]:
                return [
                    (
                        "infra",
                        "rollout waves",
                        f"started {result['executionArn'].rsplit(':', 1)[1]}",
                    )
                ]
            return [("infra", "rollout waves", f"nothing started ({result.get('executionName')})")]
        if "recorded" in result:  # the rollout recorder
            return [("infra", "rollout recorder", self._recorded(invocation.event, result))]
        if "counts" in result:  # the fan-out's summary
            counts = ", ".join(f"{n} {outcome}" for outcome, n in result["counts"].items())
            lines = [(account, "fan-out", counts)]
            reasons = {(p["accountId"], p["region"]): p["reason"] for p in result["problems"]}
            for entry in result["accounts"]:
                details = [
                    f"{outcome} in {region}"
                    + (f" ({reasons[entry['accountId'], region]})" if outcome != "invoked" else "")
                    for region, outcome in entry["regions"].items()
                ]
                lines.append((self._name_of(entry["accountId"]), "fan-out", "; ".join(details)))
            return lines
        step = _refresh_step(invocation.event)
        if not result.get("results"):
            return [
                (
                    account,
                    step,
                    result.get("ignored") or f"no target group in {_region(invocation)}",
                )
            ]
        return [(account, step, _group_result(group)) for group in result["results"]]

    def _recorded(self, event: dict[str, Any], result: dict[str, Any]) -> str:
        detail = event.get("detail") or {}
        group = detail.get("autoScalingGroupName") or detail.get("AutoScalingGroupName")
        who = f"{self._name_of(event.get('account', ''))} {group}"
        if not result["recorded"]:
            why = (
                result.get("refused")
                or result.get("unplaced")
                or "not newer than the recorded state"
            )
            return f"{who}: not recorded ({why})"
        text = f"{who}: {result['state']} (rollout {result['rolloutId']})"
        if result.get("inUseTagged") or result.get("inUseUntagged"):
            text += (
                f"; in-use tag +{result.get('inUseTagged', [])} -{result.get('inUseUntagged', [])}"
            )
        return text

    def _on_refresh_event(self, event: dict[str, Any]) -> None:
        """The instance refresh's EventBridge events, on the account's default bus."""
        account = self._account_by_id(event["account"])
        detail = event["detail-type"].removeprefix("EC2 Auto Scaling Instance Refresh ")
        deliveries = account.events.put_event(event, self.now) if account.events else []
        routed = "".join(f" → rule {d.rule}" for d in deliveries)
        self.note(account.name, "instance refresh", f"{detail}{routed}")

    # --- minute by minute ---------------------------------------------------------------------

    def settle(self) -> None:
        """Play out what is under way until nothing is: invocations, queues, refreshes, alarms."""
        self.run_invocations()
        deadline = self.now + MAX_STORY
        while self._busy():
            if self.now >= deadline:
                raise RuntimeError(f"the story did not settle within {MAX_STORY}")
            self.tick()

    def tick(self) -> None:
        """One simulated minute: ECS reports, alarms are evaluated, refreshes progress."""
        self.advance(TICK)
        for account in self.workloads:
            if account.stack is not None:
                self._ecs_minute(account)
                self._evaluate_alarms(account)
                self._watch_refresh(account)
        self.run_invocations()
        self.poll_queues()

    def _busy(self) -> bool:
        enrolled = [account for account in self.workloads if account.stack is not None]
        refreshing = any(
            refresh["Status"] in ACTIVE_STATUSES
            for account in enrolled
            for refresh in self._refreshes(account)
        )
        alarming = any(
            alarm["StateValue"] == "ALARM"
            for account in enrolled
            for alarm in account.client("cloudwatch").describe_alarms()["MetricAlarms"]
        )
        return refreshing or alarming or self.router.pending > 0 or self._messages_waiting()

    def _messages_waiting(self) -> bool:
        sqs = self.infra.client("sqs")
        for trigger in self.infra_stack.queue_triggers:
            queue_url = sqs.get_queue_url(QueueName=trigger.queue_arn.rsplit(":", 1)[1])["QueueUrl"]
            attributes = sqs.get_queue_attributes(
                QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]
            if int(attributes["ApproximateNumberOfMessages"]):
                return True
        return False

    def _group(self, account: Account) -> dict[str, Any]:
        return account.client("autoscaling").describe_auto_scaling_groups(
            AutoScalingGroupNames=[account.group_name]
        )["AutoScalingGroups"][0]

    def _refreshes(self, account: Account) -> list[dict[str, Any]]:
        return account.client("autoscaling").describe_instance_refreshes(
            AutoScalingGroupName=account.group_name
        )["InstanceRefreshes"]

    def _ecs_minute(self, account: Account) -> None:
        """ECS reports on the cluster. In the failing account tasks cannot start on any instance
        of an image newer than the one it ran at the start; elsewhere tasks just move."""
        ids = [instance["InstanceId"] for instance in self._group(account)["Instances"]]
        reservations = account.client("ec2").describe_instances(InstanceIds=ids)["Reservations"]
        on_new = sum(
            1 for r in reservations for i in r["Instances"] if i["ImageId"] != account.image_before
        )
        moved, account.instances_on_new = on_new != account.instances_on_new, on_new
        if not on_new or not (account.fails_on_new_image or moved):
            return  # a healthy cluster reports only when tasks move
        events = self._ecs_events(account, on_new)
        matched = sum(1 for event in events if account.events.put_event(event, self.now))
        kinds = ", ".join(sorted({_ecs_label(event) for event in events}))
        self.note(
            account.name,
            "ECS events",
            f"{len(events)} ({kinds}) → {matched} matched the error rule → log group",
        )

    def _ecs_events(self, account: Account, instances_on_new: int) -> list[dict[str, Any]]:
        def common() -> dict[str, Any]:
            self._ecs_event_count += 1
            return {
                "account": account.account_id,
                "region": HOME_REGION,
                "cluster": CLUSTER,
                "at": self.now,
                "event_id": str(uuid.uuid5(_EVENT_IDS, f"ecs/{self._ecs_event_count}")),
            }

        if not account.fails_on_new_image:
            # Healthy: the refresh drains old hosts, the scheduler moves the tasks, all is steady.
            return [
                ecs_task_stopped_event(
                    **common(),
                    group=f"service:{SERVICE}",
                    stop_code="ServiceSchedulerInitiated",
                    stopped_reason="Task stopped: container instance is draining",
                    exit_code=143,
                ),
                ecs_service_event(
                    **common(),
                    service=SERVICE,
                    event_name="SERVICE_STEADY_STATE",
                    event_type="INFO",
                ),
            ]
        failed_starts = [
            ecs_task_stopped_event(
                **common(),
                group=f"service:{SERVICE}",
                stop_code="TaskFailedToStart",
                stopped_reason="ECS agent on the new AMI could not start the task",
                exit_code=None,
            )
            for _ in range(instances_on_new)
        ]
        placement = ecs_service_event(
            **common(),
            service=SERVICE,
            event_name="SERVICE_TASK_PLACEMENT_FAILURE",
            event_type="ERROR",
            reason="RESOURCE:MEMORY",
        )
        return [*failed_starts, placement]

    def _evaluate_alarms(self, account: Account) -> None:
        for transition in account.events.evaluate_alarms(self.now):
            self.note(
                account.name,
                "alarm",
                f"{transition.alarm} {transition.old_state} → {transition.new_state}",
            )

    def _watch_refresh(self, account: Account) -> None:
        refreshes = self._refreshes(account)
        if not refreshes:
            return
        refresh = refreshes[0]
        progress = (refresh["Status"], refresh.get("PercentageComplete", 0))
        if account.refresh_seen.get(refresh["InstanceRefreshId"]) != progress:
            account.refresh_seen[refresh["InstanceRefreshId"]] = progress
            self.note(account.name, "instance refresh", f"{progress[0]}, {progress[1]}% replaced")

    # --- the end ------------------------------------------------------------------------------

    def _organization_of(self, account_id: str) -> str | None:
        return self.organization_id if self._account_by_id(account_id) else None

    def rollout_status_table(self) -> str:
        """`python -m rollout status` for the newest rollout, from the infra account's table."""
        out = io.StringIO()
        rollout_status.run(
            rollout_status.parse(["--table", self._rollout_table()]),
            out,
            session=self.infra.session,
            now=self.now,
        )
        return out.getvalue()

    def _rollout_table(self) -> str:
        return self.infra_stack.run.outputs["rolloutTableName"]

    def converge_again(self) -> None:
        """What the optional schedule (or an operator) does: converge every enrolled account."""
        for account in self.workloads:
            if not account.enrolled:
                continue
            name = account.stack.run.config["golden-ami:refreshFunctionName"]
            response = account.client("lambda").invoke(
                FunctionName=name, Payload=json.dumps({"action": "converge"}).encode()
            )
            result = json.loads(response["Payload"].read())
            for group in result["results"]:
                self.note(account.name, "converge (second run)", _group_result(group))

    def report(self) -> dict[str, Any]:
        image = self.images[-1]
        return {
            "image": {
                "arn": image["arn"],
                "amiId": image["amis"][HOME_REGION],
                "payloads": image["payloads"],
            },
            "accounts": [self._account_report(account) for account in self.workloads],
            # What the infra account's rollout status recorded: the CLI's own JSON document.
            "rollout": rollout_status.build_report(
                rollout_status.StatusTable(self.infra.session, self._rollout_table()),
                None,
                self.now,
            ).as_json(),
            "timeline": self.timeline.as_report(),
        }

    def _account_report(self, account: Account) -> dict[str, Any]:
        refreshes = self._refreshes(account)
        return {
            "accountId": account.account_id,
            "name": account.name,
            "outcome": self._fanout_outcome(account.account_id),
            "groups": [
                {
                    "name": account.group_name,
                    "refreshStatus": refreshes[0]["Status"] if refreshes else None,
                    "imageBefore": account.image_before,
                    "imageAfter": self._group_image(account),
                }
            ],
        }

    def _fanout_outcome(self, account_id: str) -> str:
        """The last fan-out's outcome for the account: failed or invoked in any region wins."""
        fanouts = [i.result for i in self.router.invocations if i.result and "counts" in i.result]
        entry = (
            next((e for e in fanouts[-1]["accounts"] if e["accountId"] == account_id), None)
            if fanouts
            else None
        )
        outcomes = set(entry["regions"].values()) if entry else {"failed"}
        return next(o for o in ("failed", "invoked", "not-enrolled") if o in outcomes)

    def _group_image(self, account: Account) -> str:
        spec = self._group(account)["LaunchTemplate"]
        version = account.client("ec2").describe_launch_template_versions(
            LaunchTemplateId=spec["LaunchTemplateId"], Versions=[spec["Version"]]
        )["LaunchTemplateVersions"][0]
        return version["LaunchTemplateData"]["ImageId"]


# --- event and message shapes -----------------------------------------------------------------


def _event_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _sqs_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    """One record of the SQS → Lambda event."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": queue_arn.split(":")[3],
    }


def _sns_lambda_event(
    message: dict[str, Any], topic_arn: str, message_id: str, at: datetime
) -> dict[str, Any]:
    """The SNS → Lambda event (its URL members are spelled differently from the SQS envelope)."""
    region = topic_arn.split(":")[3]
    return {
        "Records": [
            {
                "EventVersion": "1.0",
                "EventSubscriptionArn": f"{topic_arn}:{uuid.uuid5(_EVENT_IDS, topic_arn)}",
                "EventSource": "aws:sns",
                "Sns": {
                    "SignatureVersion": "1",
                    "Timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                    "Signature": "EXAMPLE",
                    "SigningCertUrl": f"https://sns.{region}.amazonaws.com/cert.pem",
                    "MessageId": message_id,
                    "Message": json.dumps(message),
                    "MessageAttributes": {},
                    "Type": "Notification",
                    "UnsubscribeUrl": f"https://sns.{region}.amazonaws.com/?Action=Unsubscribe",
                    "TopicArn": topic_arn,
                    "Subject": None,
                },
            }
        ]
    }


def _ecs_label(event: dict[str, Any]) -> str:
    detail = event["detail"]
    return detail.get("eventName") or f"task {detail['lastStatus']} {detail.get('stopCode', '')}"


def _refresh_step(event: Any) -> str:
    if isinstance(event, dict) and event.get("source") == "aws.autoscaling":
        return "refresh (catch-up)"
    if isinstance(event, dict) and "amis" in event:
        return "refresh (new image)"
    return "refresh (converge)"


def _region(invocation: Invocation) -> str:
    return invocation.function_arn.split(":")[3]


def _group_result(group: dict[str, Any]) -> str:
    text = f"{group['autoScalingGroupName']}: {group['outcome']} — {group['reason']}"
    if group.get("launchTemplateVersion"):
        text += f" (launch template version {group['launchTemplateVersion']})"
    return text


def main(argv: Sequence[str], out: TextIO) -> int:
    options = parse_options(argv)
    report = run_demo(options, out)
    out.write(f"\nReport: {options.report}\n")
    for account in report["accounts"]:
        groups = "; ".join(
            f"{g['name']} {g['refreshStatus'] or '-'} {g['imageBefore']} → {g['imageAfter']}"
            for g in account["groups"]
        )
        out.write(f"  {account['name']:<12} {account['outcome']:<13} {groups}\n")
    return 0
