"""The long version of the engine fault test: many rounds of faults at random decode steps.

    python scripts/stress_engine.py            # 200 rounds
    python scripts/stress_engine.py 1000

Runs tests/integration/test_engine_faults.py::test_faults_at_random_steps_never_leave_a_caller_waiting with
BPO_STRESS_ROUNDS set; every call must return or raise within its bound in every round.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

if __name__ == "__main__":
    rounds = sys.argv[1] if len(sys.argv) > 1 else "200"
    os.environ["BPO_STRESS_ROUNDS"] = rounds
    root = Path(__file__).resolve().parents[1]
    test = root / "tests" / "integration" / "test_engine_faults.py"
    budget = str(max(300, int(rounds) * 30))  # per-test timeout for the long run
    sys.exit(
        pytest.main(
            [
                "-q",
                "-p",
                "no:cacheprovider",
                f"--timeout={budget}",
                "--rootdir",
                str(root),
                f"{test}::test_faults_at_random_steps_never_leave_a_caller_waiting",
            ]
        )
    )
