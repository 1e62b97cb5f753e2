"""Packaging of the Lambda handlers: each zip holds only `handlers/common` and its own package
(plus the packages it runs, `PACKAGE_DEPENDENCIES`).

boto3 comes from the Lambda runtime, so no dependency is vendored and the zips stay a few KB.
"""

from __future__ import annotations

from pathlib import Path

import pulumi
import pulumi_aws as aws

LAMBDA_RUNTIME = "python3.14"
HANDLERS_DIR = Path(__file__).resolve().parent.parent / "handlers"


def handler_entrypoint(handler_package: str) -> str:
    """The Lambda `handler` setting for `handlers/<handler_package>/app.py:lambda_handler`."""
    return f"handlers.{handler_package}.app.lambda_handler"


# Handler packages that run another package's code: the release function runs the refresh rules.
PACKAGE_DEPENDENCIES = {"release": ("refresh",)}


def handler_source_files(handler_package: str) -> list[Path]:
    """The .py files that go into the zip, relative to the repository root."""
    packages = [HANDLERS_DIR / "common", HANDLERS_DIR / handler_package]
    if not packages[1].is_dir():
        raise ValueError(f"no handler package handlers/{handler_package}")
    packages += [HANDLERS_DIR / dep for dep in PACKAGE_DEPENDENCIES.get(handler_package, ())]
    files = [HANDLERS_DIR / "__init__.py"]
    for package in packages:
        files.extend(sorted(package.glob("*.py")))
    return [f.relative_to(HANDLERS_DIR.parent) for f in files]


def handler_archive(handler_package: str) -> pulumi.AssetArchive:
    root = HANDLERS_DIR.parent
    return pulumi.AssetArchive(
        {
            str(rel): pulumi.FileAsset(str(root / rel))
            for rel in handler_source_files(handler_package)
        }
    )


def subscribe_to_topic(
    resource_name: str,
    *,
    function: aws.lambda_.Function,
    topic_arn: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> aws.sns.TopicSubscription:
    """Deliver the topic's messages to the function; SNS may invoke it for this topic only."""
    permission = aws.lambda_.Permission(
        f"{resource_name}-sns-invoke",
        action="lambda:InvokeFunction",
        function=function.name,
        principal="sns.amazonaws.com",
        source_arn=topic_arn,
        opts=opts,
    )
    return aws.sns.TopicSubscription(
        f"{resource_name}-subscription",
        topic=topic_arn,
        protocol="lambda",
        endpoint=function.arn,
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[permission])),
    )
