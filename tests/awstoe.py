"""Run the ExecuteBash steps of an AWSTOE component document on a fake Image Builder build host.

What AWSTOE does with such a step (Image Builder user guide, "Action modules supported by
AWSTOE" and "Define and reference variables"): it substitutes `{{ Name }}` parameter references
in the step's inputs as plain text (spaces inside the braces trimmed), writes the `commands`
list into one file and runs it with bash; the script's exit status is the step's result, and
status 194 makes AWSTOE reboot the instance and run the same step again.

`BuildHost` is a temp directory standing in for the build instance:
- `bin/` comes first on PATH with fake `aws` (answers `s3api list-object-versions` and
  `get-object` from a recorded S3 listing and object bodies), `systemctl` and `dnf` (record
  their arguments; `dnf install awscli-2` installs the fake `aws`), and `python3` (this
  interpreter, newer than AL2023's 3.9: tests check the document's Python parses as 3.9).
  The rest of PATH is /usr/bin:/bin only, so no real AWS CLI is ever reached.
- `root/` stands in for `/`: the absolute paths the document writes (`REDIRECTED_PATHS`) are
  rewritten into it in the script text before bash runs it. The document hard-codes them, as a
  build host script should; the rewrite keeps the test away from the machine's own /etc and
  /var, and `run` refuses a script that names any other absolute path, so a new hard-coded
  path cannot slip past the sandbox.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PARAMETER_REFERENCE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
REBOOT_EXIT_STATUS = 194

# Absolute paths the payload runner may touch, each moved under the host's fake root.
REDIRECTED_PATHS = ("/etc/golden-ami", "/var/lib/ecs", "/tmp/golden-ami-payloads")
UNREDIRECTED_PATHS = frozenset({"/dev/null"})
# An absolute path in shell text: a `/` that does not continue a word, variable or URL.
_ABSOLUTE_PATH = re.compile(r"(?<![\w$}/.:-])/[A-Za-z][\w.-]*(?:/[\w.*-]+)*")


@dataclass(frozen=True)
class Step:
    phase: str
    name: str
    action: str
    inputs: Any


class ComponentDocument:
    """A parsed AWSTOE document and the bash AWSTOE would run for each ExecuteBash step."""

    def __init__(self, text: str) -> None:
        self.data: dict[str, Any] = yaml.safe_load(text)

    @property
    def parameter_names(self) -> list[str]:
        return [name for declaration in self.data.get("parameters", []) for name in declaration]

    def steps(self) -> list[Step]:
        return [
            Step(phase["name"], step["name"], step["action"], step["inputs"])
            for phase in self.data["phases"]
            for step in phase["steps"]
        ]

    def step(self, name: str) -> Step:
        [step] = [step for step in self.steps() if step.name == name]
        return step

    def bash(self, step_name: str, parameters: Mapping[str, str]) -> str:
        """The script AWSTOE writes for the step, parameters substituted."""
        step = self.step(step_name)
        if step.action != "ExecuteBash":
            raise ValueError(f"step {step_name} is {step.action}, not ExecuteBash")
        return substitute(
            "\n".join(step.inputs["commands"]) + "\n", self.parameter_names, parameters
        )


def substitute(text: str, declared: Iterable[str], parameters: Mapping[str, str]) -> str:
    declared = set(declared)

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in declared:
            raise KeyError(f"{{{{ {name} }}}} is not a declared parameter")
        if name not in parameters:
            raise KeyError(f"parameter {name} has no value (the document declares no default)")
        return parameters[name]

    return PARAMETER_REFERENCE.sub(value, text)


def referenced_parameters(text: str) -> set[str]:
    return set(PARAMETER_REFERENCE.findall(text))


# --- the fake build host ------------------------------------------------------------------------

# Each fake records its argv (NUL-separated, one file per call, numbered) before doing anything.
# Plain bash: a step makes a dozen calls, and a Python start-up each would dominate the test time.
_RECORD = """\
record() {
  local calls="$FAKE_HOST_STATE/calls" count
  count=$(( $(<"$calls/count") + 1 ))
  printf '%s\\n' "$count" > "$calls/count"
  printf '%s\\0' "$@" > "$calls/$(printf '%06d' "$count")"
}
"""

_FAKE_AWS = r"""
# Fake AWS CLI v2: the two s3api calls the payload runner makes, answered from files the test
# rendered (tests/awstoe.py BuildHost.serve_s3); anything else is a usage error.
record aws "$@"
s3="$FAKE_HOST_STATE/s3"
usage() { echo "aws: error: unexpected arguments: $*" >&2; exit 252; }
fail() {  # <operation> <code> <message>: a modelled service error, printed as the CLI does
  printf '\nAn error occurred (%s) when calling the %s operation: %s\n' "$2" "$1" "$3" >&2
  exit 254
}
fail_as_in() {  # <operation> <file holding "code<TAB>message">
  local code message
  IFS=$'\t' read -r code message < "$2"
  fail "$1" "$code" "$message"
}
(( $# >= 2 )) && [[ $1 == s3api ]] || usage "$@"
operation=$2
case $operation in
  list-object-versions) api=ListObjectVersions ;;
  get-object) api=GetObject ;;
  *) usage "$operation" ;;
esac
shift 2
declare -A option=()
positional=()
while (( $# )); do
  case $1 in
    --bucket | --prefix | --output | --key | --version-id)
      (( $# >= 2 )) && [[ ! -v option[$1] ]] || usage "$@"
      option[$1]=$2
      shift 2 ;;
    --*) usage "$1" ;;
    *) positional+=("$1"); shift ;;
  esac
done
[[ ${option[--bucket]-} == "$(<"$s3/bucket")" ]] \
  || fail "$api" NoSuchBucket "The specified bucket does not exist"
case $operation in
  list-object-versions)
    (( ${#positional[@]} == 0 )) && [[ ! -v option[--key] && ! -v option[--version-id] ]] \
      || usage "${positional[@]}"
    [[ ${option[--output]-} == json ]] || usage "--output must be json: the runner parses it"
    [[ ${option[--prefix]-} == "$(<"$s3/prefix")" ]] \
      || usage "this fake serves prefix $(<"$s3/prefix") only, not ${option[--prefix]-}"
    [[ ! -e $s3/list-error ]] || fail_as_in "$api" "$s3/list-error"
    cat "$s3/list.json" ;;
  get-object)
    (( ${#positional[@]} == 1 )) && [[ ! -v option[--prefix] && ! -v option[--output] ]] \
      || usage "${positional[@]}"
    object="$s3/objects/${option[--version-id]-}"
    [[ ${option[--version-id]-} =~ ^[A-Za-z0-9._-]+$ && -d $object \
      && $(<"$object/key") == "${option[--key]-}" ]] \
      || fail "$api" NoSuchVersion "The specified version does not exist."
    [[ ! -e $object/error ]] || fail_as_in "$api" "$object/error"
    cp "$object/body" "${positional[0]}"
    printf '{"VersionId": "%s", "ContentLength": %s}\n' \
      "${option[--version-id]}" "$(wc -c < "$object/body")" ;;
esac
"""


def _fake_command(name: str, then: str = "exit 0") -> str:
    return f'#!/bin/bash\n{_RECORD}record {name} "$@"\n{then}\n'


class BuildHost:
    """A fake build instance in `directory`; see the module docstring."""

    def __init__(self, directory: Path, *, aws_installed: bool = True) -> None:
        if not re.fullmatch(r"[\w/.-]+", str(directory)):
            raise ValueError(f"{directory} must not need shell quoting: it is spliced into scripts")
        self.directory = directory
        self.bin = directory / "bin"
        self.root = directory / "root"
        self.state = directory / "state"
        for path in (self.bin, self.root / "tmp", self.state / "calls", self.state / "s3"):
            path.mkdir(parents=True)
        (self.state / "calls" / "count").write_text("0\n")
        fake_aws = f"#!/bin/bash\n{_RECORD}{_FAKE_AWS}"
        (self.state / "aws").write_text(fake_aws)
        if aws_installed:
            self._install("aws", fake_aws)
        (self.bin / "python3").symlink_to(sys.executable)
        self._install("systemctl", _fake_command("systemctl"))
        # `dnf install -y awscli-2` is how the runner gets a missing CLI: it installs the fake.
        aws = self.bin / "aws"
        self._install(
            "dnf",
            _fake_command(
                "dnf",
                f'[[ "$*" != "install -y awscli-2" ]] || install -m 0755 {self.state}/aws {aws}',
            ),
        )
        self.serve_s3(bucket="", prefix="", listing={})

    def _install(self, name: str, text: str) -> None:
        path = self.bin / name
        path.write_text(text)
        path.chmod(0o755)

    def fail_command(self, name: str, status: int) -> None:
        """Make `name` (systemctl, dnf) record its call, then exit with `status`."""
        self._install(name, _fake_command(name, f"exit {status}"))

    def serve_s3(
        self,
        *,
        bucket: str,
        prefix: str,
        listing: Mapping[str, list[dict[str, Any]]],
        bodies: Mapping[str, tuple[str, bytes]] | None = None,
        errors: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        """What the fake `aws` answers for `bucket` and `prefix`.

        `listing`: the merged ListObjectVersions pages of the bucket, JSON-shaped (Versions,
        DeleteMarkers); the fake keeps what is under `prefix` and, on purpose, reverses S3's
        key order, so the runner must impose its own order. `bodies`: {version id: (key,
        content)}. `errors`: {"ListObjectVersions" or a version id: (code, message)}.
        """
        s3 = self.state / "s3"
        shutil.rmtree(s3)
        s3.mkdir()
        (s3 / "bucket").write_text(bucket)
        (s3 / "prefix").write_text(prefix)
        under_prefix = {
            kind: [
                entry
                for entry in reversed(listing.get(kind, []))
                if entry["Key"].startswith(prefix)
            ]
            for kind in ("Versions", "DeleteMarkers")
        }
        (s3 / "list.json").write_text(
            json.dumps(
                {kind: entries for kind, entries in under_prefix.items() if entries}, indent=4
            )
        )
        errors = dict(errors or {})
        if "ListObjectVersions" in errors:
            (s3 / "list-error").write_text("\t".join(errors.pop("ListObjectVersions")) + "\n")
        for version_id, (key, content) in (bodies or {}).items():
            object_dir = s3 / "objects" / version_id
            object_dir.mkdir(parents=True)
            (object_dir / "key").write_text(key)
            (object_dir / "body").write_bytes(content)
            if version_id in errors:
                (object_dir / "error").write_text("\t".join(errors.pop(version_id)) + "\n")
        if errors:
            raise ValueError(f"errors for versions not served: {sorted(errors)}")

    def path(self, absolute: str) -> Path:
        """Where the host keeps `absolute` (one of REDIRECTED_PATHS or below it)."""
        if not any(absolute == p or absolute.startswith(p + "/") for p in REDIRECTED_PATHS):
            raise ValueError(f"{absolute} is not redirected into the fake root")
        return self.root / absolute.lstrip("/")

    def run(
        self, script: str, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a step's script the way AWSTOE does (bash, the exit status is the result)."""
        stray = {
            path
            for path in set(_ABSOLUTE_PATH.findall(script)) - UNREDIRECTED_PATHS
            if not any(path.startswith(redirected) for redirected in REDIRECTED_PATHS)
        }
        if stray:
            raise AssertionError(
                f"script names absolute paths outside the sandbox: {sorted(stray)}"
            )
        for absolute in REDIRECTED_PATHS:
            script = script.replace(absolute, str(self.path(absolute)))
        script_file = self.directory / "input.sh"
        script_file.write_text(script)
        return subprocess.run(
            ["bash", str(script_file)],
            cwd=self.directory,
            env={
                "PATH": f"{self.bin}:/usr/bin:/bin",
                "HOME": str(self.directory),
                "LC_ALL": "C",  # the most hostile locale a build host can have
                "FAKE_HOST_STATE": str(self.state),
                **(env or {}),
            },
            stdin=subprocess.DEVNULL,
            check=False,  # the exit status is what the tests examine
            capture_output=True,
            text=True,
            timeout=30,
        )

    def calls(self, program: str | None = None) -> list[list[str]]:
        """argv of every fake command run so far, oldest first (optionally of one program)."""
        files = sorted(path for path in (self.state / "calls").iterdir() if path.name != "count")
        argvs = [path.read_text().split("\0")[:-1] for path in files]
        return [argv for argv in argvs if program in (None, argv[0])]
