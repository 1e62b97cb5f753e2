"""Deploy the golden-ami stacks from CI (or a laptop) with the Pulumi Automation API.

    python -m deploy plan     [--stack NAME]... [--json] [--project-dir DIR]
    python -m deploy preview  [--stack NAME]... [--json] [--project-dir DIR] [--parallel N]
    python -m deploy up       [--stack NAME]... [--json] [--project-dir DIR] [--parallel N]
    python -m deploy destroy  --yes [--stack NAME]... [--json] [--project-dir DIR] [--parallel N]
    python -m deploy outputs  [--stack NAME]... [--json] [--project-dir DIR]

`plan` reads the stack files only (no Pulumi CLI, no credentials). The other commands run the
infra stack first, then the workload stacks in parallel (destroy: the reverse), feeding the infra
stack's outputs into each workload stack's config. Progress goes to stderr, each line prefixed
with its stack name; the summary (`--json`: one JSON document) goes to stdout.

Exit codes:
    0  success; for preview: no changes pending
    1  a stack failed, or was skipped because a stack it depends on failed
    2  preview succeeded and found changes pending (lets a PR check tell "would change" apart)
    3  usage or configuration error (bad arguments, invalid stack file, no Pulumi CLI); nothing ran
"""
