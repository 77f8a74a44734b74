"""A warm interpreter for the tests' command lines (``tests/conftest.py``'s ``run_cli``), run as
``python -m tests.warm_cli``.

Most of a tiny CLI run is the interpreter importing torch, Lightning and Hydra (seconds), not its training (well under
a second), and the suite runs the CLI about a hundred times. This process imports the entry points once, then for
each command it reads (one JSON line on stdin: entry, arguments, environment, output files) forks a child that runs
``cifar_lit.<entry>`` as ``__main__`` with those arguments, exactly as ``python -m cifar_lit.<entry> ...`` would from
that point on: Hydra's command line, the run, its exit status (SystemExit or an uncaught exception end the child as
they end an interpreter, atexit handlers included). It answers the child's pid, then its exit status.

Forking is safe here because this process never runs a torch operation (no thread pool exists yet) and prints
nothing (no buffered output is duplicated). ``CIFAR_LIT_TESTS_FRESH_PROCESS=1`` makes ``run_cli`` start a fresh
interpreter per command instead.
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import sys
from typing import Any, NoReturn

ENTRIES = ("train", "eval", "predict", "export", "report")


def run_child(request: dict[str, Any]) -> NoReturn:
    """In the forked child: the command's environment, input and output files, arguments, then its entry point."""
    os.environ.clear()
    os.environ.update(request["env"])
    extra = [path for path in request["env"].get("PYTHONPATH", "").split(os.pathsep) if path and path not in sys.path]
    sys.path[:0] = extra  # what a fresh interpreter would put first from $PYTHONPATH
    os.chdir(request["cwd"])
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    sys.stdin = open(os.devnull)  # noqa: SIM115 - the child's stdin for its whole life
    sys.argv = [f"cifar_lit.{request['entry']}", *request["args"]]
    runpy.run_module(f"cifar_lit.{request['entry']}", run_name="__main__", alter_sys=True)
    raise SystemExit(0)  # through the interpreter's own exit: atexit handlers, flushed output


def serve() -> None:
    for entry in ENTRIES:  # what they import stays; each runs afresh as __main__, as `python -m` runs it
        importlib.import_module(f"cifar_lit.{entry}")
        del sys.modules[f"cifar_lit.{entry}"]
    replies = os.dup(1)  # the answers go to the original stdout; fd 1 itself is each child's output file
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.close(replies)
            run_child(request)
        os.write(replies, f"{pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        os.write(replies, f"{os.waitstatus_to_exitcode(status)}\n".encode())


if __name__ == "__main__":
    serve()
