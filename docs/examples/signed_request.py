"""A signed request to the retention-offers API with the standardwebhooks library (pip install
standardwebhooks==1.1.0 requests), for a client created with `retention keys create --sign`.

    python docs/examples/signed_request.py --url http://127.0.0.1:8000 --key "$KEY" --secret "$SECRET" \
        POST /v1/decisions '{"request_id": "c-1", "customer_id": "cust-1", "reason": "temporary", ...}'

Prints the status code and the response body (with --print-headers, first the headers it sent as JSON).
Everything that matters is in `signed_headers`: copy it into your client.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit

import requests
from standardwebhooks import Webhook


def signed_headers(secret: str, method: str, path_and_query: str, body: bytes) -> dict[str, str]:
    """webhook-id, webhook-timestamp and webhook-signature for one request.

    The signed payload is "<METHOD>\\n<path>\\n<query>\\n<body>": the path percent-decoded, the query string
    exactly as it goes on the wire (without "?"), the body exactly as sent. A new webhook-id every request:
    the service refuses an id it has seen (a replay), so a retry is signed again with a new id."""
    url = urlsplit(path_and_query)
    payload = f"{method.upper()}\n{unquote(url.path)}\n{url.query}\n{body.decode()}"
    msg_id = f"msg_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    # A whsec_ secret is given as it is; a secret made before those (no prefix) as its bytes.
    wh = Webhook(secret if secret.startswith("whsec_") else secret.encode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": wh.sign(msg_id, now, payload)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:8000")
    parser.add_argument("--key", required=True, help="the client's API key")
    parser.add_argument("--secret", required=True, help="the client's signing secret (whsec_...)")
    parser.add_argument("--print-headers", action="store_true", help="print the headers sent, as JSON, first")
    parser.add_argument("method")
    parser.add_argument("path", help="path and query, e.g. /v1/offers or /v1/customers/c-1/decisions?limit=5")
    parser.add_argument("body", nargs="?", default="", help="JSON body (POST)")
    args = parser.parse_args(argv)
    body = args.body.encode()
    sent = {"Authorization": f"Bearer {args.key}", "Content-Type": "application/json",
            **signed_headers(args.secret, args.method, args.path, body)}
    r = requests.request(args.method, args.url.rstrip("/") + args.path, data=body or None, headers=sent, timeout=10)
    if args.print_headers:
        print(json.dumps(sent))
    print(r.status_code)
    print(r.text.strip())
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())
