"""A digit classifier that trains itself on its own pseudo-labels, behind a guard.

Run it with ``python examples/self_training_digits.py`` (or ``guardrails demo``);
it needs the ``demo`` extra: ``pip install -e '.[demo]'``. The scenario lives
in ``guardrails_plugins.demo_digits`` so that the command line can run it too.
"""

from guardrails_plugins.demo_digits import main

if __name__ == "__main__":
    main()
