"""A digit classifier that trains itself on its own pseudo-labels, behind a guard.

Run it with ``python examples/self_training_digits.py`` (or ``guardrails demo``);
it needs the ``demo`` extra: ``pip install -e '.[demo]'``. The scenario lives
in ``guardrails_plugins.demos.digits`` so that the command line can run it too.
It starts fresh each time and leaves its ledger in ``.guardrails/demo-ledger.db``.
"""

import argparse
import time

import structlog
from guardrails_plugins.demos.digits import DEFAULT_SEED, run_demo

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=".guardrails", help="where the ledger is left")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args()
    # An application configures logging; the demo only wants warnings from the library.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    started = time.perf_counter()
    run_demo(args.workdir, rounds=args.rounds, seed=args.seed)
    print(f"done in {time.perf_counter() - started:.1f} s")
