"""What the client and the CLI refuse at their boundary, in one line, before any Redis
call: job ids that are not strings (a list given where the ids go as separate
arguments), a queue name no queue can have in a read or a bulk requeue."""

from __future__ import annotations

import pytest
from helpers import cli

from runtime.client import Client
from runtime.errors import InvalidParams
from runtime.settings import Settings


def test_ids_that_are_not_strings_are_refused_saying_how_to_give_them(client: Client) -> None:
    job_id = client.queue_job("testtasks.add", {"a": 1, "b": 2}, delay=60)
    separate = "job ids go as separate arguments .*client.abort[(][*]ids[)][)], got a list among them$"
    for call in (client.abort, client.cancel, client.requeue):
        with pytest.raises(InvalidParams, match=separate):
            call([job_id])
    with pytest.raises(InvalidParams, match=separate):
        client.move([job_id], queue="other")
    with pytest.raises(InvalidParams, match="^job ids must be strings, got int 7$"):
        client.cancel(7)  # type: ignore[arg-type]
    with pytest.raises(InvalidParams, match="^job ids must be a list of strings, got one string"):
        client.control_many("cancel", job_id)
    with pytest.raises(InvalidParams, match="^job ids must be a list of strings, got one string"):
        client.move_many(job_id, queue="other")
    assert client.get_job(job_id).status.value == "queued"  # nothing was done
    assert client.cancel(job_id) == [job_id]
    assert client.move_many([job_id], priority=5) == ["cancel"]


def test_a_bad_queue_name_is_refused_by_jobs_and_requeue_as_by_every_command(settings: Settings) -> None:
    for args in (["jobs", "--queue", "a:b"], ["requeue", "--queue", "a:b"], ["enqueue", "testtasks.add", "-q", "a:b"]):
        r = cli(settings, *args)
        assert r.exit_code == 2 and r.stderr.startswith("error: queue name 'a:b' is not one"), (args, r.stderr)
        assert len(r.stderr.splitlines()) == 1
    assert cli(settings, "jobs", "--queue", "a.b").stdout.strip().endswith("(no jobs)")
