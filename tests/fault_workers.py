"""An actor for the fault tests, in a module of its own: a Ray worker imports the module that defines an actor's
class, and this one imports only Ray (a test module imports its fixtures, and they torch: about 3 s a process)."""

import os
import time

import ray

from actors.calls import node_of_this_process


@ray.remote
class Worker:
    """Answers after `delay` seconds, raises on demand, or dies (its process ends) when asked."""

    def __init__(self):
        self.started = time.time()

    def ready(self) -> str:
        return node_of_this_process()

    def work(self, x: int, delay: float = 0.0, fail: bool = False, die: bool = False) -> int:
        if die:
            os._exit(1)
        if fail:
            raise ValueError(f"bad input {x}")
        time.sleep(delay)
        return x * 10

    def pid(self) -> int:
        return os.getpid()
