"""The lab's Python side: what `make demo` runs (lab/demo.py) and the helpers it shares with the tests.

`lab.common` (polling, ports, networks), `lab.load` (bounded load generators) and `lab.stack` (the
production stack with the lab's override, deployed and removed whole). The tests import them
through tests/support/; nothing here imports from tests/.
"""
