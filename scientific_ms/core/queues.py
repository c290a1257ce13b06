"""The waiting queue of one tag once its tasks have priorities: a heap.

The scheduler (``scheduling.py``) keeps each tag's waiting tasks in a plain
``collections.deque`` (O(1) at both ends: the hot path of millions of tiny
tasks) and switches a tag to a :class:`PriorityQueue` only when one of its
tasks has a priority other than 0; the tag goes back to a deque once its
queue empties. A :class:`PriorityQueue` answers the few deque operations
the scheduler uses, in the order of ``scheduling.queue_key`` (priority,
then requeued first, then request order), so that the scheduler reads
either kind of queue the same way.
"""

from __future__ import annotations

import heapq
from typing import Callable, Iterable, Iterator, List, Tuple

from .tasks import Task

#: A task's place in the order; unique per task (it ends with the request number).
Key = Callable[[Task], tuple]


class PriorityQueue:
    """Waiting tasks of one tag, smallest ``key`` first, with the deque methods the scheduler calls."""

    __slots__ = ("_heap", "_key")

    def __init__(self, key: Key, tasks: Iterable[Task] = ()):
        self._key = key
        # keys are unique (request numbers are): the heap never compares two tasks
        self._heap: List[Tuple[tuple, Task]] = [(key(task), task) for task in tasks]
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._heap)

    def __getitem__(self, index: int) -> Task:
        if index != 0:
            raise IndexError("a priority queue shows its head only (index 0)")
        return self._heap[0][1]

    def __iter__(self) -> Iterator[Task]:
        """Every waiting task, in no particular order."""
        return (task for _, task in self._heap)

    def append(self, task: Task) -> None:
        heapq.heappush(self._heap, (self._key(task), task))

    #: The key puts a requeued task first among those of its priority: no separate front.
    appendleft = append

    def popleft(self) -> Task:
        return heapq.heappop(self._heap)[1]

    def remove(self, task: Task) -> None:
        """Take out a task that is not at the head (it was cancelled or answered): O(n)."""
        for index, (_, queued) in enumerate(self._heap):
            if queued is task:
                last = self._heap.pop()
                if index < len(self._heap):
                    self._heap[index] = last
                    heapq.heapify(self._heap)
                return
        raise ValueError(f"task {task.task_id} is not in this queue")
