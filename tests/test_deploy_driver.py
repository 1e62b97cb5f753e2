"""The deploy driver against an injected fake Pulumi workspace: order, propagation, failures."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml
from pulumi import automation as auto
from pulumi.automation._cmd import CommandResult

from components.config import parse_config
from deploy.automation import AutomationStack, AutomationStackFactory, engine_message
from deploy.cli import EXIT_CHANGES_PENDING, EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from deploy.driver import (
    ChangeSummary,
    Driver,
    Operation,
    OutputSink,
    StackOperationError,
    StackOutput,
    Status,
)
from deploy.plan import PROPAGATED_OUTPUTS, load_plan

INFRA_ACCOUNT = "111111111111"
ROLLOUT_BUS = f"arn:aws:events:eu-west-1:{INFRA_ACCOUNT}:event-bus/golden-ami-rollout"
WORKLOAD_ACCOUNTS = {"workload-a": "222222222222", "workload-b": "333333333333"}
INFRA_OUTPUTS = {
    "fanoutRoleArn": StackOutput(f"arn:aws:iam::{INFRA_ACCOUNT}:role/GoldenAmiFanoutRole"),
    "rolloutBusArn": StackOutput(ROLLOUT_BUS),
    "infraAccountId": StackOutput(INFRA_ACCOUNT),
    "amiNamePrefix": StackOutput("acme-ecs"),
    "bucketName": StackOutput("payloads-111111111111"),
    "alarmTopicToken": StackOutput("s3cr3t", secret=True),
}
PROPAGATED = {
    "golden-ami:fanoutRoleArn": f"arn:aws:iam::{INFRA_ACCOUNT}:role/GoldenAmiFanoutRole",
    "golden-ami:rolloutBusArn": ROLLOUT_BUS,
    "golden-ami:infraAccountId": INFRA_ACCOUNT,
    "golden-ami:imagePrefix": "acme-ecs",
}


# --- the fake workspace -------------------------------------------------------------------------


class FakeBackend:
    """Stacks by name, plus one ordered log of every call the driver made, across threads."""

    def __init__(self, existing: set[str] | None = None) -> None:
        self.existing = set(existing or ())
        self.calls: list[tuple[str, str]] = []
        self.config: dict[str, dict[str, str]] = {}
        self.outputs: dict[str, Mapping[str, StackOutput]] = {}
        self.changes: dict[str, ChangeSummary] = {}
        self.failures: dict[tuple[str, str], str] = {}  # (stack, operation) -> engine message
        self.engine_lines: dict[str, list[str]] = {}
        self.gate: threading.Barrier | None = None  # workload operations wait here together
        self._lock = threading.Lock()
        self.running = 0
        self.most_running = 0

    def record(self, stack: str, call: str) -> None:
        with self._lock:
            self.calls.append((stack, call))

    def calls_of(self, stack: str) -> list[str]:
        return [call for name, call in self.calls if name == stack]

    def create_or_select(self, stack_name: str, work_dir: Path) -> FakeStack:
        self.record(stack_name, "create_or_select")
        self.existing.add(stack_name)
        return FakeStack(self, stack_name)

    def select(self, stack_name: str, work_dir: Path) -> FakeStack:
        self.record(stack_name, "select")
        if stack_name not in self.existing:
            raise StackOperationError(f"no stack named '{stack_name}' found")
        return FakeStack(self, stack_name)


class FakeStack:
    def __init__(self, backend: FakeBackend, name: str) -> None:
        self._backend = backend
        self._name = name

    def set_config(self, values: Mapping[str, str]) -> None:
        self._backend.record(self._name, "set_config")
        self._backend.config.setdefault(self._name, {}).update(values)

    def preview(self, on_output: OutputSink) -> ChangeSummary:
        return self._operate("preview", on_output)

    def up(self, on_output: OutputSink) -> ChangeSummary:
        return self._operate("up", on_output)

    def destroy(self, on_output: OutputSink) -> ChangeSummary:
        return self._operate("destroy", on_output)

    def outputs(self) -> Mapping[str, StackOutput]:
        self._backend.record(self._name, "outputs")
        return self._backend.outputs.get(self._name, {})

    def _operate(self, operation: str, on_output: OutputSink) -> ChangeSummary:
        backend = self._backend
        backend.record(self._name, operation)
        with backend._lock:
            backend.running += 1
            backend.most_running = max(backend.most_running, backend.running)
        try:
            if backend.gate is not None and self._name != "infra":
                backend.gate.wait()
            for line in backend.engine_lines.get(self._name, []):
                on_output(line)
            failure = backend.failures.get((self._name, operation))
            if failure:
                raise StackOperationError(failure)
            return backend.changes.get(self._name, {"same": 4})
        finally:
            with backend._lock:
                backend.running -= 1


# --- fixtures -------------------------------------------------------------------------------------


def stack_file(account: str, role: str, **extra: object) -> dict[str, object]:
    return {
        "config": {
            "aws:region": "eu-west-1",
            "aws:allowedAccountIds": [account],
            "golden-ami:role": role,
            **extra,
        }
    }


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "Pulumi.yaml").write_text("name: golden-ami\nruntime: python\n")
    files = {"infra": stack_file(INFRA_ACCOUNT, "infra")}
    for name, account in WORKLOAD_ACCOUNTS.items():
        files[name] = stack_file(account, "workload")
    for name, document in files.items():
        (tmp_path / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(document))
    return tmp_path


@pytest.fixture
def backend() -> FakeBackend:
    fake = FakeBackend(existing={"infra", *WORKLOAD_ACCOUNTS})
    fake.outputs["infra"] = INFRA_OUTPUTS
    return fake


class Progress:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, stack: str, line: str) -> None:
        self.lines.append((stack, line))


def run(
    project: Path,
    backend: FakeBackend,
    operation: Operation,
    names: tuple[str, ...] = (),
    max_parallel: int = 4,
):
    plan = load_plan(project)
    driver = Driver(plan, backend, project, Progress(), max_parallel=max_parallel)
    return driver.run(operation, plan.select(names))


def run_cli(project: Path, backend: FakeBackend, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(
        [*argv, "--project-dir", str(project)], factory=lambda: backend, stdout=out, stderr=err
    )
    return code, out.getvalue(), err.getvalue()


# --- order and propagation ------------------------------------------------------------------------


def test_up_deploys_infra_before_any_workload_and_feeds_its_outputs_into_their_config(
    project, backend
):
    results = run(project, backend, Operation.UP)

    assert [(r.stack.name, r.status) for r in results] == [
        ("infra", Status.SUCCEEDED),
        ("workload-a", Status.SUCCEEDED),
        ("workload-b", Status.SUCCEEDED),
    ]
    infra_done = backend.calls.index(("infra", "up"))
    workload_calls = [i for i, (name, _) in enumerate(backend.calls) if name != "infra"]
    assert min(workload_calls) > infra_done
    for workload in WORKLOAD_ACCOUNTS:
        # Propagated config is in place before the stack's program runs.
        assert backend.calls_of(workload) == ["create_or_select", "set_config", "up"]
        assert backend.config[workload] == PROPAGATED
    assert "infra" not in backend.config


def test_the_infra_output_wins_over_a_stale_value_in_the_workload_stack_file(project, backend):
    stale = stack_file(
        WORKLOAD_ACCOUNTS["workload-a"], "workload", **{"golden-ami:imagePrefix": "old-prefix"}
    )
    (project / "Pulumi.workload-a.yaml").write_text(yaml.safe_dump(stale))
    plan = load_plan(project)
    progress = Progress()

    Driver(plan, backend, project, progress).run(Operation.UP, plan.stacks)

    assert backend.config["workload-a"] == PROPAGATED
    assert backend.config["workload-a"]["golden-ami:imagePrefix"] == "acme-ecs"
    assert (
        "workload-a",
        "golden-ami:imagePrefix: Pulumi.workload-a.yaml has 'old-prefix', the infra output is "
        "'acme-ecs'; using the infra output",
    ) in progress.lines


def test_a_stack_file_already_holding_the_infra_outputs_is_not_rewritten(project, backend):
    current = stack_file(WORKLOAD_ACCOUNTS["workload-a"], "workload", **PROPAGATED)
    (project / "Pulumi.workload-a.yaml").write_text(yaml.safe_dump(current))

    run(project, backend, Operation.PREVIEW)

    assert backend.calls_of("workload-a") == ["create_or_select", "preview"]
    assert backend.config["workload-b"] == PROPAGATED


def test_a_workload_alone_reads_the_deployed_infra_outputs_without_running_infra(project, backend):
    results = run(project, backend, Operation.UP, names=("workload-b",))

    assert [r.stack.name for r in results] == ["workload-b"]
    assert backend.calls_of("infra") == ["select", "outputs"]
    assert backend.calls_of("workload-a") == []
    assert backend.config["workload-b"] == PROPAGATED


def test_a_workload_alone_fails_clearly_when_the_infra_stack_was_never_deployed(project, backend):
    backend.existing.discard("infra")

    [result] = run(project, backend, Operation.PREVIEW, names=("workload-a",))

    assert result.status is Status.FAILED
    assert result.message == (
        "workload-a: preview failed: cannot read the outputs of infra stack infra: "
        "no stack named 'infra' found"
    )
    assert backend.calls_of("workload-a") == []


def test_a_missing_infra_output_fails_the_workload_before_it_is_touched(project, backend):
    backend.outputs["infra"] = {k: v for k, v in INFRA_OUTPUTS.items() if k != "fanoutRoleArn"}
    with_arn = stack_file(
        WORKLOAD_ACCOUNTS["workload-b"],
        "workload",
        **{"golden-ami:fanoutRoleArn": f"arn:aws:iam::{INFRA_ACCOUNT}:role/Fanout"},
    )
    (project / "Pulumi.workload-b.yaml").write_text(yaml.safe_dump(with_arn))

    results = {r.stack.name: r for r in run(project, backend, Operation.PREVIEW)}

    assert results["workload-a"].status is Status.FAILED
    assert results["workload-a"].message == (
        "workload-a: preview failed: Pulumi.workload-a.yaml does not set golden-ami:fanoutRoleArn "
        "(infra output fanoutRoleArn) and infra stack infra has no such output (deploy the infra "
        "stack first)"
    )
    assert backend.calls_of("workload-a") == []
    # The stack file's own value stands in until the infra stack exports one.
    assert results["workload-b"].status is Status.SUCCEEDED
    assert backend.config["workload-b"] == {
        key: value for key, value in PROPAGATED.items() if key != "golden-ami:fanoutRoleArn"
    }


def test_destroy_runs_workloads_first_and_never_creates_a_stack(project, backend):
    results = run(project, backend, Operation.DESTROY)

    assert [r.stack.name for r in results] == ["workload-a", "workload-b", "infra"]
    assert all(r.status is Status.SUCCEEDED for r in results)
    infra_destroy = backend.calls.index(("infra", "destroy"))
    assert backend.calls.index(("workload-a", "destroy")) < infra_destroy
    assert backend.calls.index(("workload-b", "destroy")) < infra_destroy
    assert not [call for call in backend.calls if call[1] in ("create_or_select", "set_config")]


def test_destroying_a_stack_that_does_not_exist_fails_instead_of_creating_it(project, backend):
    backend.existing.discard("workload-a")

    results = {r.stack.name: r for r in run(project, backend, Operation.DESTROY)}

    assert results["workload-a"].status is Status.FAILED
    assert "no stack named 'workload-a' found" in results["workload-a"].message
    assert "workload-a" not in backend.existing


# --- failures -------------------------------------------------------------------------------------


def test_an_infra_failure_stops_every_workload(project, backend):
    backend.failures["infra", "up"] = "creating IAM Role (GoldenAmiFanoutRole): AccessDenied"

    code, out, err = run_cli(project, backend, "up", "--json")

    assert code == EXIT_FAILED
    summary = json.loads(out)
    infra, *workloads = summary["stacks"]
    assert infra["status"] == "failed"
    assert infra["message"] == (
        "infra: up failed: creating IAM Role (GoldenAmiFanoutRole): AccessDenied"
    )
    assert [(w["stack"], w["status"]) for w in workloads] == [
        ("workload-a", "skipped"),
        ("workload-b", "skipped"),
    ]
    assert workloads[0]["message"] == "workload-a: not run: infra stack infra failed"
    assert [name for name, _ in backend.calls] == ["infra", "infra"]  # create_or_select, up
    assert "[infra] up failed: creating IAM Role (GoldenAmiFanoutRole): AccessDenied" in err


def test_a_failing_workload_does_not_stop_its_siblings(project, backend):
    backend.failures["workload-a", "up"] = "Lambda function quota exceeded"

    code, out, _ = run_cli(project, backend, "up", "--json")

    assert code == EXIT_FAILED
    statuses = {s["stack"]: (s["status"], s["message"]) for s in json.loads(out)["stacks"]}
    assert statuses == {
        "infra": ("succeeded", ""),
        "workload-a": ("failed", "workload-a: up failed: Lambda function quota exceeded"),
        "workload-b": ("succeeded", ""),
    }
    assert "up" in backend.calls_of("workload-b")


def test_a_failed_workload_destroy_keeps_the_infra_stack_it_trusts(project, backend):
    backend.failures["workload-b", "destroy"] = "resource is protected"

    results = {r.stack.name: r for r in run(project, backend, Operation.DESTROY)}

    assert results["workload-a"].status is Status.SUCCEEDED
    assert results["infra"].status is Status.SKIPPED
    assert results["infra"].message == (
        "infra: not run: workload stack workload-b still trusts its fan-out role"
    )
    assert "destroy" not in backend.calls_of("infra")


# --- exit codes and output ------------------------------------------------------------------------


def test_preview_exits_2_when_changes_are_pending_and_0_when_not(project, backend):
    code, out, _ = run_cli(project, backend, "preview", "--json")
    assert code == EXIT_OK
    assert {s["stack"]: s["changes"] for s in json.loads(out)["stacks"]} == {
        "infra": {},
        "workload-a": {},
        "workload-b": {},
    }

    backend.changes["workload-b"] = {"same": 10, "create": 2, "update": 1}
    code, out, _ = run_cli(project, backend, "preview", "--json")
    summary = json.loads(out)
    assert code == EXIT_CHANGES_PENDING
    assert summary["exitCode"] == EXIT_CHANGES_PENDING
    assert summary["stacks"][2]["changes"] == {"create": 2, "update": 1}

    backend.failures["workload-a", "preview"] = "boom"
    code, _, _ = run_cli(project, backend, "preview")
    assert code == EXIT_FAILED  # a failure outranks pending changes


def test_up_with_changes_is_a_success(project, backend):
    backend.changes["infra"] = {"create": 30}

    code, out, _ = run_cli(project, backend, "up")

    assert code == EXIT_OK
    assert "infra       succeeded  create 30" in out


def test_engine_output_is_streamed_with_each_line_tagged_by_its_stack(project, backend):
    backend.engine_lines["workload-a"] = ["  + aws:lambda:Function refresh creating", ""]
    backend.engine_lines["infra"] = ["Resources:\n"]

    code, _, err = run_cli(project, backend, "preview", "--stack", "infra", "--stack", "workload-a")

    assert code == EXIT_OK
    lines = err.splitlines()
    assert "[workload-a]   + aws:lambda:Function refresh creating" in lines
    assert "[infra] Resources:" in lines
    assert "[infra] preview in account 111111111111 (eu-west-1)" in lines
    assert all(line.startswith("[") for line in lines)


def test_outputs_reads_each_stack_without_creating_any_and_masks_secrets(project, backend):
    backend.existing.discard("workload-b")

    code, out, _ = run_cli(project, backend, "outputs", "--json")

    assert code == EXIT_FAILED
    infra, workload_a, workload_b = json.loads(out)["stacks"]
    assert infra["outputs"]["alarmTopicToken"] == "[secret]"
    assert infra["outputs"]["amiNamePrefix"] == "acme-ecs"
    assert workload_a == {**workload_a, "status": "succeeded", "outputs": {}}
    assert workload_b["status"] == "failed"
    assert "s3cr3t" not in out
    assert "create_or_select" not in [call for _, call in backend.calls]


def test_destroy_requires_yes(project, backend):
    code, _, err = run_cli(project, backend, "destroy")

    assert code == EXIT_USAGE
    assert "pass --yes" in err
    assert backend.calls == []


@pytest.mark.parametrize(
    "argv", [["deploy-everything"], ["up", "--parallel", "0"], ["up", "--bogus"], []]
)
def test_bad_usage_exits_3_not_argparse_2_which_means_changes_pending(project, backend, argv):
    with pytest.raises(SystemExit) as exited:
        main(argv, factory=lambda: backend, stdout=io.StringIO(), stderr=io.StringIO())

    assert exited.value.code == EXIT_USAGE


def test_a_broken_stack_file_stops_the_run_before_any_stack_is_touched(project, backend):
    (project / "Pulumi.workload-b.yaml").write_text("config:\n  golden-ami:role: [\n")

    code, _, err = run_cli(project, backend, "up")

    assert code == EXIT_USAGE
    assert "Pulumi.workload-b.yaml: invalid YAML" in err
    assert backend.calls == []


# --- parallelism ----------------------------------------------------------------------------------


def test_workload_stacks_run_concurrently(project, backend):
    # Both workload previews must be inside the fake at once to pass the barrier.
    backend.gate = threading.Barrier(2, timeout=10)

    results = run(project, backend, Operation.PREVIEW)

    assert all(r.status is Status.SUCCEEDED for r in results)
    assert backend.most_running == 2


def test_parallel_1_runs_one_workload_at_a_time(project, backend):
    results = run(project, backend, Operation.UP, max_parallel=1)

    assert all(r.status is Status.SUCCEEDED for r in results)
    assert backend.most_running == 1


# --- the pulumi.automation adapter --------------------------------------------------------------


CLI_FAILURE = CommandResult(
    stdout="""Updating (infra):
     Type                 Name              Status
 +   pulumi:pulumi:Stack  golden-ami-infra  **creating failed**
 +   aws:iam:Role         fanout-role       **creating failed**

Diagnostics:
  aws:iam:Role (fanout-role):
    error: creating IAM Role (GoldenAmiFanoutRole): operation error IAM: CreateRole, {detail}

  pulumi:pulumi:Stack (golden-ami-infra):
    error: update failed
""".format(detail="https response error StatusCode: 403, api error AccessDenied: denied"),
    stderr="",
    code=255,
)

PROGRAM_FAILURE = CommandResult(
    stdout="""Previewing update (workload-a):
Diagnostics:
  pulumi:pulumi:Stack (golden-ami-workload-a):
    error: Program failed with an unhandled exception:
    Traceback (most recent call last):
      File "/work/__main__.py", line 12, in <module>
        config = load_config()
    components.config.ConfigError: invalid stack configuration: golden-ami:targets is not set
""",
    stderr="error: preview failed\n",
    code=255,
)


def test_engine_message_keeps_the_diagnostics_that_say_what_went_wrong():
    assert engine_message(str(auto.CommandError(CLI_FAILURE))) == (
        "creating IAM Role (GoldenAmiFanoutRole): operation error IAM: CreateRole, https response "
        "error StatusCode: 403, api error AccessDenied: denied"
    )
    assert engine_message(str(auto.CommandError(PROGRAM_FAILURE))) == (
        "components.config.ConfigError: invalid stack configuration: golden-ami:targets is not set"
    )
    assert engine_message("\n code: 255\n stdout: \n stderr: error: update failed\n") == (
        "update failed"
    )


class _RecordingAutomationStack:
    """Stands in for pulumi.automation.Stack: its methods shell out to the CLI."""

    def __init__(self, failure: CommandResult | None = None) -> None:
        self.failure = failure
        self.config: dict[str, auto.ConfigValue] = {}
        self.kwargs: dict[str, object] = {}

    def set_all_config(self, config):
        self.config.update(config)

    def preview(self, **kwargs):
        self.kwargs = kwargs
        if self.failure is not None:
            raise auto.CommandError(self.failure)
        kwargs["on_output"]("+ 2 to create")
        return auto.PreviewResult(
            stdout="", stderr="", change_summary={auto.OpType.CREATE: 2, auto.OpType.SAME: 5}
        )

    def outputs(self):
        return {"imagePrefix": auto.OutputValue("acme-ecs", secret=False)}


def test_the_automation_adapter_translates_results_config_and_errors():
    fake = _RecordingAutomationStack()
    stack = AutomationStack(fake)
    lines: list[str] = []

    stack.set_config({"golden-ami:imagePrefix": "acme-ecs"})
    assert fake.config["golden-ami:imagePrefix"].value == "acme-ecs"
    assert fake.config["golden-ami:imagePrefix"].secret is False
    assert stack.preview(lines.append) == {"create": 2, "same": 5}
    assert lines == ["+ 2 to create"]
    assert fake.kwargs["color"] == "never"
    assert stack.outputs() == {"imagePrefix": StackOutput("acme-ecs", secret=False)}

    failing = AutomationStack(_RecordingAutomationStack(failure=CLI_FAILURE))
    with pytest.raises(StackOperationError, match=r"^creating IAM Role \(GoldenAmiFanoutRole\)"):
        failing.preview(lines.append)


def test_without_the_pulumi_cli_only_plan_runs(project, monkeypatch):
    monkeypatch.setenv("PATH", str(project))  # a directory with no `pulumi` in it

    out, err = io.StringIO(), io.StringIO()
    code = main(["preview", "--project-dir", str(project)], stdout=out, stderr=err)

    assert code == EXIT_USAGE
    assert "the Pulumi CLI is not on PATH" in err.getvalue()
    with pytest.raises(Exception, match="not on PATH"):
        AutomationStackFactory()


# --- the contract with the program ------------------------------------------------------------


def test_the_infra_program_exports_every_output_the_driver_propagates(stack_run):
    run = stack_run("infra")
    config = parse_config(run.config)

    assert set(PROPAGATED_OUTPUTS.values()) <= set(run.outputs)
    # The values `plan` predicts from the infra config when it checks workload stack files.
    assert run.outputs["infraAccountId"] == config.infra_account_id
    assert run.outputs["amiNamePrefix"] == config.image_prefix
    assert run.outputs["fanoutRoleArn"] == config.fanout_role_arn
    assert run.outputs["rolloutBusArn"] == config.rollout_bus_arn
