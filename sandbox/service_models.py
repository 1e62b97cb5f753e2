"""One botocore data loader for every session: the sandbox's and the tests' speed-up.

Each handler invocation builds its own boto3 Session, as in Lambda, and a new session parses the
service models and endpoint rules again, which is most of a sandbox run's time. Sharing the
loader (its cache holds read-only models) changes nothing but that.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from unittest import mock

import botocore.loaders


@contextmanager
def shared_service_models() -> Iterator[None]:
    with mock.patch("botocore.session.create_loader", cache(botocore.loaders.create_loader)):
        yield
