"""moto_server for the tests, with one change to moto's DynamoDB TransactWriteItems.

moto (5.2.5) backs up a table before a transaction so that it can roll back a cancelled one, but
it deep-copies the whole table once per *action* of the transaction: a 100-action transaction on a
table of 10,000 items copies a million items. The state store fences every write with a
transaction (a ConditionCheck on the lease beside the writes), so the tests would spend minutes
in those copies. Here the backup is taken once per table per transaction: the same backup, the
same rollback, the same answers.

moto's server answers requests on several threads, and its DynamoDB writes check a condition and
then write without a lock: two concurrent conditional writes (or transactions) on the same item
can both pass their checks, where DynamoDB lets exactly one through
(https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis.html#transaction-conflict-handling).
Here every DynamoDB write runs under one lock, so concurrent writers see DynamoDB's outcome.
Everything else is moto as installed.

Usage: python server.py [moto_server arguments], e.g. `-H 127.0.0.1 -p 5000`.
"""

import copy as _copy
import sys
import threading

import moto.dynamodb.models as _models
from moto.server import main

_active = threading.local()


class _OncePerTransaction:
    """`copy` as seen by moto's DynamoDB models: inside a transaction, `deepcopy` of the same
    object returns the first copy taken; outside, the real `copy` module."""

    def deepcopy(self, value, memo=None):
        cache = getattr(_active, "cache", None)
        if cache is None:
            return _copy.deepcopy(value, memo)
        key = id(value)
        if key not in cache:
            cache[key] = _copy.deepcopy(value, memo)
        return cache[key]

    def __getattr__(self, name):
        return getattr(_copy, name)


_models.copy = _OncePerTransaction()
_transact = _models.DynamoDBBackend.transact_write_items


def _transact_write_items(self, transact_items):
    _active.cache = {}
    try:
        return _transact(self, transact_items)
    finally:
        _active.cache = None


_models.DynamoDBBackend.transact_write_items = _transact_write_items

_writes = threading.RLock()


def _serialised(method):
    def run(self, *args, **kwargs):
        with _writes:
            return method(self, *args, **kwargs)

    return run


for _name in ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item"):
    if hasattr(_models.DynamoDBBackend, _name):
        setattr(
            _models.DynamoDBBackend,
            _name,
            _serialised(getattr(_models.DynamoDBBackend, _name)),
        )

if __name__ == "__main__":
    sys.argv[0] = "moto_server"
    sys.exit(main())
