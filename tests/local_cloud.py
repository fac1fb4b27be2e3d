"""A local stand-in for a deployment, shared by tests/cold-start and tests/lambda-local: moto
(the table, the S3 source, the secret and contoso's config items, as `cloud config upload`
writes them) and a sandbox tenant (`m365-provisioner sandbox`), each on 127.0.0.1 and stopped
by its PID. Needs python with boto3 (the repo venv .venv, which `bash tests/run` creates) and is
run from the repository root.
"""

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from urllib.request import Request, urlopen

import boto3
from botocore.config import Config as BotoConfig

# The name messages start with; the importing script sets it.
PROG = "local-cloud"

REGION = "us-east-1"
TABLE = "m365-provisioner"
BUCKET = "identity-source"
SOURCE_KEY = "contoso/source.json"
SECRET_ID = "m365-provisioner/contoso"
CONNECTION = "contoso"
ACCOUNT = "123456789012"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw3fuKCNYM6H8="
# The sandbox's demo app (shared/sandbox: demo::INITIAL_DOMAIN, CLIENT_ID, CLIENT_SECRET).
DEMO_TENANT = "contoso.onmicrosoft.com"
DEMO_CLIENT_ID = "3c9d7a52-6b1f-4e2a-8d4c-7f0b5e9a1c23"
DEMO_CLIENT_SECRET = "sandbox-secret-NOT-for-production~1"


def log(message):
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=15.0):
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"{PROG}: {what} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{PROG}: {what} not listening on 127.0.0.1:{port} after {timeout} s")


def stop(proc):
    """Stops one child we started, by its PID."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------------------------
# The environment: moto (table, bucket, secret, config items) and the sandbox tenant.
# ---------------------------------------------------------------------------------------------


class Moto:
    def __init__(self, moto, logdir):
        self.port = free_port()
        self.log = open(os.path.join(logdir, "moto.log"), "wb")
        self.proc = subprocess.Popen(
            [moto, "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_port(self.port, self.proc, "moto_server")
        self.endpoint = f"http://127.0.0.1:{self.port}"
        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )
        config = BotoConfig(retries={"max_attempts": 2}, s3={"addressing_style": "path"})
        self.dynamodb = session.client("dynamodb", endpoint_url=self.endpoint, config=config)
        self.s3 = session.client("s3", endpoint_url=self.endpoint, config=config)
        self.secrets = session.client("secretsmanager", endpoint_url=self.endpoint, config=config)

    def reset(self):
        with urlopen(Request(f"{self.endpoint}/moto-api/reset", method="POST"), timeout=30):
            pass

    def create_table(self):
        self.dynamodb.create_table(
            TableName=TABLE,
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        self.dynamodb.update_time_to_live(
            TableName=TABLE, TimeToLiveSpecification={"AttributeName": "ttl", "Enabled": True}
        )

    def upload_config(self, text):
        """Version 1 of contoso's config, in the items `cloud config upload` writes."""
        sha = hashlib.sha256(text.encode()).hexdigest()
        now = str(int(time.time() * 1000))
        self.dynamodb.put_item(
            TableName=TABLE,
            Item={
                "pk": {"S": f"CFG#{CONNECTION}"},
                "sk": {"S": "V#0000000001"},
                "text": {"S": text},
                "sha256": {"S": sha},
                "uploaded_at": {"N": now},
                "uploaded_by": {"S": PROG},
                "version": {"N": "1"},
            },
        )
        self.dynamodb.put_item(
            TableName=TABLE,
            Item={
                "pk": {"S": "CFG"},
                "sk": {"S": CONNECTION},
                "version": {"N": "1"},
                "sha256": {"S": sha},
                "uploaded_at": {"N": now},
                "uploaded_by": {"S": PROG},
            },
        )

    def put_secret_and_source(self):
        self.secrets.create_secret(
            Name=SECRET_ID,
            SecretString=json.dumps(
                {
                    "tenant": DEMO_TENANT,
                    "client_id": DEMO_CLIENT_ID,
                    "client_secret": DEMO_CLIENT_SECRET,
                    "webhook_secrets": [WEBHOOK_SECRET],
                }
            ),
        )
        self.s3.create_bucket(Bucket=BUCKET)
        with open("examples/source.json", "rb") as f:
            self.s3.put_object(Bucket=BUCKET, Key=SOURCE_KEY, Body=f.read())

    def close(self):
        stop(self.proc)
        self.log.close()


def cloud_config():
    """The examples' rule as contoso's cloud config (as tests/src/cloud.rs builds it). It names
    no host: the bootstrap reaches the sandbox tenant through M365_LOCAL_TENANT_URL."""
    with open("examples/m365-provisioner.toml") as f:
        example = f.read()
    rule = example[example.index("[rule]"):]
    return (
        f'[connection]\nname = "{CONNECTION}"\n\n'
        f'[source]\ntype = "file"\nlocation = "s3://{BUCKET}/{SOURCE_KEY}"\n\n'
        f'[secrets]\ntype = "aws-secrets-manager"\nsecret_id = "{SECRET_ID}"\n\n{rule}'
    )


def find_cli():
    explicit = os.environ.get("M365_CLI")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for candidate in ("target/release/m365-provisioner", "target/debug/m365-provisioner"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


class Sandbox:
    """`m365-provisioner sandbox --port 0`: a fresh demo tenant (in memory)."""

    def __init__(self, cli, logdir):
        self.log = open(os.path.join(logdir, "sandbox.log"), "wb")
        self.proc = subprocess.Popen(
            [cli, "sandbox", "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        line = self.proc.stdout.readline().decode().strip()
        marker = "sandbox tenant listening on "
        if not line.startswith(marker):
            stop(self.proc)
            raise SystemExit(f"{PROG}: {cli} sandbox did not start: {line!r}")
        self.url = line[len(marker):]
        # Keep draining its stdout so it never blocks on a full pipe.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def close(self):
        stop(self.proc)
        self.log.close()
