"""Rules the test suite itself keeps: no test depends on how fast the machine is.

A loaded 2-core CI machine runs several times slower than an idle one. Tests bound work by steps or epochs; a
timeout is only a hang guard (``conftest.HANG_GUARD_S``), never a figure a slow machine can miss.
"""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import HANG_GUARD_S

TESTS = Path(__file__).resolve().parent
TIMEOUT_KEYWORDS = {"timeout", "default_timeout"}
LIMIT_NAME_PARTS = ("timeout", "guard", "deadline", "wait")  # names that hold a wall-clock limit
# A connection attempt that is retried in a loop may time out quickly: the loop's deadline is the guard.
RETRIED_CALLS = {"create_connection"}
# Calls whose first positional argument is a timeout in seconds: Popen.wait(10), Thread.join(5), Future.result(60).
POSITIONAL_TIMEOUT_CALLS = {"wait", "join", "result"}


def _call_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _below_the_guard(value: ast.expr, scale: float = 1) -> bool:
    """Whether ``value`` is a number literal below the guard; ``scale`` is the unit's count per second (1000 for
    a limit in milliseconds)."""
    return (isinstance(value, ast.Constant) and isinstance(value.value, (int, float))
            and not isinstance(value.value, bool) and value.value < HANG_GUARD_S * scale)


def _unit_scale(name: str) -> float:
    return 1000 if name.lower().endswith("_ms") else 1


def short_wall_clock_limits(source: str) -> list[tuple[int, str]]:
    """(line, code) of every literal timeout below the hang guard (passed by keyword or as the first argument of
    a ``wait``/``join``/``result`` call, or a parameter's default), every constant named for a limit or a wait
    (``WAIT_MS = 600_000``: milliseconds when the name ends in ``_ms``) set below it, and every
    ``time.monotonic() + N`` deadline."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and _call_name(node) not in RETRIED_CALLS:
            for keyword in node.keywords:
                if keyword.arg in TIMEOUT_KEYWORDS and _below_the_guard(keyword.value):
                    found.append((node.lineno, ast.unparse(node)[:80]))
            if (_call_name(node) in POSITIONAL_TIMEOUT_CALLS and node.args
                    and _below_the_guard(node.args[0])):
                found.append((node.lineno, ast.unparse(node)[:80]))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args.args[len(node.args.args) - len(node.args.defaults):]
            for argument, default in zip(arguments, node.args.defaults):
                if any(part in argument.arg.lower() for part in LIMIT_NAME_PARTS) and _below_the_guard(default):
                    found.append((node.lineno, f"def {node.name}(… {argument.arg}={default.value})"))
        if isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            if any(_below_the_guard(node.value, _unit_scale(name)) for name in names
                   if any(part in name.lower() for part in LIMIT_NAME_PARTS)):
                found.append((node.lineno, ast.unparse(node)))
        if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and isinstance(node.left, ast.Call)
                and _call_name(node.left) == "monotonic" and isinstance(node.right, ast.Constant)):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_rule_catches_a_short_timeout_and_a_short_deadline():
    source = ("run(timeout=900)\nAppTest.from_file('a', default_timeout=60)\nd = time.monotonic() + 120\n"
              "def wait_for(condition, timeout=120):\n    pass\n"
              "def running(process, hang_guard_s=300):\n    pass\n"
              "HANG_GUARD_S = 600\n"
              "server.wait(10)\nthread.join(5.0)\nWAIT_MS = 600_000\n")
    assert sorted(line for line, _ in short_wall_clock_limits(source)) == [1, 2, 3, 4, 6, 8, 9, 10, 11]
    assert short_wall_clock_limits("run(timeout=HANG_GUARD_S)\nsocket.create_connection(a, timeout=1)\n"
                                   "server.wait(HANG_GUARD_S)\nmanager.wait(run_id, timeout=HANG_GUARD_S)\n"
                                   "WAIT_MS = HANG_GUARD_S * 1000\nWAIT_MS = 2_000_000\n") == []


def test_no_test_waits_on_a_wall_clock_shorter_than_the_hang_guard():
    offenders = {path.name: found for path in sorted(TESTS.glob("test_*.py"))
                 if (found := short_wall_clock_limits(path.read_text()))}
    assert offenders == {}, offenders
