"""What the sandbox sets on botocore for every session: one shared data loader, and hooks.

`builtin_hooks` registers event handlers the way moto installs itself, so every client created
inside the block, by any session, answers through them.

Each handler invocation builds its own boto3 Session, as in Lambda, and a new session parses the
service models and endpoint rules again, which is most of a sandbox run's time. Sharing the
loader (its cache holds read-only models) changes nothing but that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from unittest import mock

import botocore.handlers
import botocore.loaders


@contextmanager
def shared_service_models() -> Iterator[None]:
    with mock.patch("botocore.session.create_loader", cache(botocore.loaders.create_loader)):
        yield


@contextmanager
def builtin_hooks(hooks: Sequence[tuple[str, Callable[..., object]]]) -> Iterator[None]:
    botocore.handlers.BUILTIN_HANDLERS.extend(hooks)
    try:
        yield
    finally:
        for hook in hooks:
            botocore.handlers.BUILTIN_HANDLERS.remove(hook)
