"""schemathesis hooks of scripts/contract/run: sign webhook bodies the way Svix does.

Without a valid signature every generated webhook stops at 401, and nothing behind verification (parsing,
recording, applying) would meet generated input. So each generated body is serialized here, signed with the
daemon's secret (CLERK_WEBHOOK_SIGNING_SECRET) and sent as those exact bytes. One case in four keeps the Svix
headers schemathesis generated (or none), so refusals stay covered too.
"""

import base64
import hashlib
import hmac
import itertools
import json
import os
import time
import uuid

import schemathesis
from schemathesis.core import NotSet

SECRET = base64.b64decode(os.environ["CLERK_WEBHOOK_SIGNING_SECRET"].removeprefix("whsec_"))
CALLS = itertools.count()


def body_bytes(body: object) -> bytes:
    if isinstance(body, NotSet):
        return b""
    if isinstance(body, bytes):
        return body
    return json.dumps(body).encode()


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.path != "/webhooks/clerk":
        return
    if next(CALLS) % 4 == 3:
        return
    body = body_bytes(case.body)
    message_id = f"msg_contract_{uuid.uuid4().hex}"
    timestamp = str(int(time.time()))
    signed = f"{message_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(SECRET, signed, hashlib.sha256).digest()).decode()
    case.headers = {
        **(case.headers or {}),
        "svix-id": message_id,
        "svix-timestamp": timestamp,
        "svix-signature": f"v1,{signature}",
    }
    kwargs["data"] = body
