import gc
import json

import pytest

from exporter.jobs.answers import KnownAnswers
from exporter.jobs.tree import InvalidJobError, JobTree, flatten
from tests.standins.jobs import job_object


def _body(phase: str = "Running") -> bytes:
    return json.dumps(job_object("job-1", phase, [job_object("s-1", "Success")])).encode()


class Reader:
    """Reads a body as the client does, counting the reads."""

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self, body: bytes) -> JobTree:
        """Read `body` as the job's JSON."""
        self.reads += 1
        return flatten(json.loads(body), "job-1")


def test_an_unchanged_answer_gives_the_same_tree_unread() -> None:
    """The same body for the same job gives back the very tree read before, without reading."""
    answers, reader = KnownAnswers(), Reader()
    body = _body()
    first = answers.read("p/job-1", body, lambda: reader(body))
    again = answers.read("p/job-1", bytes(body), lambda: reader(body))
    assert again is first
    assert reader.reads == 1


def test_a_changed_answer_is_read_afresh() -> None:
    """A body that differs in any byte is read again and gives its own tree."""
    answers, reader = KnownAnswers(), Reader()
    running, done = _body("Running"), _body("Success")
    first = answers.read("p/job-1", running, lambda: reader(running))
    second = answers.read("p/job-1", done, lambda: reader(done))
    assert reader.reads == 2
    assert second is not first
    assert second.root.phase == "Success"
    assert second == flatten(json.loads(done), "job-1")


def test_the_same_body_of_another_job_is_read_for_that_job() -> None:
    """The key is part of the entry: one body read for two jobs is read twice."""
    answers, reader = KnownAnswers(), Reader()
    body = _body()
    one = answers.read("p/job-1", body, lambda: reader(body))
    other = answers.read("p/job-2", body, lambda: reader(body))
    assert reader.reads == 2
    assert other is not one


def test_an_answer_that_does_not_read_is_not_remembered() -> None:
    """A body the reader refuses is refused again next time, not turned into a tree."""
    answers = KnownAnswers()
    calls = []

    def refuse() -> JobTree:
        calls.append(1)
        msg = "not a job"
        raise InvalidJobError(msg)

    for _ in range(2):
        with pytest.raises(InvalidJobError):
            answers.read("p/job-1", b"[]", refuse)
    assert len(calls) == 2
    assert len(answers) == 0


def test_an_entry_lives_as_long_as_its_tree() -> None:
    """Once nothing holds a tree any more, its entry is gone: memory follows the trees held."""
    answers, reader = KnownAnswers(), Reader()
    bodies = [_body(phase) for phase in ("Running", "Success", "Failed")]
    held = [
        answers.read(f"p/job-{n}", body, lambda b=body: reader(b)) for n, body in enumerate(bodies)
    ]
    assert len(answers) == 3
    del held[1:]
    gc.collect()
    assert len(answers) == 1
    assert answers.read("p/job-0", bodies[0], lambda: reader(bodies[0])) is held[0]
