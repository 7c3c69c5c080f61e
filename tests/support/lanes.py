"""Runs the lab tests in two concurrent pytest sessions: the heavy ones one at a time, the rest beside them.

`make test` and `make test-lab` call `python -m tests.support.lanes [pytest args]`.

- `heavy` lane: the tests marked `heavy` (sustained load, CPU burn, or a time bound), one after
  another, so that no two of them ever overlap.
- `beside` lane: every other lab test, at the same time, in its own session. (Two such sessions
  were tried: on two cores the heavy tests then missed their rates and time bounds.)
- `fuzz` lane, with SWARMSHIFT_FUZZ_LANE=1 (`make test`): the unit tests marked `fuzz`, at the
  lowest CPU priority (nice 19). They are CPU-bound and take minutes, and the lab tests spend
  most of their time waiting on Docker and timers: the fuzzing uses the CPU they leave idle
  instead of adding its minutes to the suite's. No fuzz test has a time bound, so being
  pre-empted cannot fail one.

- With SWARMSHIFT_CLUSTER_LANE=1 (`make test`, after `make cluster`), the tests of the three-node
  cluster (tests/cluster) join these two lanes by the same rule: the heavy ones (load through
  Traefik, CPU burn) in the heavy lane, after its other tests (tests/conftest.py orders them
  last), the others at the start of the beside lane. They kill nodes of the one cluster, so no
  two may overlap: each holds the cluster's lock for its whole run (tests/cluster/conftest.py),
  and the order keeps the two lanes' cluster tests apart in time, so neither waits. A third lane
  for them was tried, even at nice 10 with the cluster's engines at nice 10: beside it the heavy
  tests' load fell to 81-94 req/s of the 100 asked, and a rollback deadline of 3 s took 4.3 s,
  in two fresh-clone runs. With all of them in the heavy lane, that lane took 18.7 min and the
  beside lane 12.9; split this way, 14.5 and 14.3 (fresh-clone runs).

Each lane is a separate pytest process, so each has its own owner label (tests/support/lab.py):
neither lane's autoscaler or controller sees the other's services, and neither removes the
other's resources as leftovers. Both lanes' output is streamed with a prefix; the exit status is
the first non-zero one. (pytest-xdist's `--dist loadgroup` would do this in one session, but it
does not group on pytest 9.2: pytest-dev/pytest-xdist#1386.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

LANES = {"heavy": "lab and heavy", "beside": "lab and not heavy"}
NICE = {"fuzz": 19}  # the fuzz lane takes only idle CPU


def lanes(env: dict[str, str]) -> dict[str, str]:
    """The lanes of this run and the marks each selects.

    With the cluster (SWARMSHIFT_CLUSTER_LANE=1, `make test`), its tests join the two lab lanes,
    heavy or not.
    """
    out = dict(LANES)
    if env.get("SWARMSHIFT_FUZZ_LANE") == "1":
        out["fuzz"] = "unit and fuzz"
    if env.get("SWARMSHIFT_CLUSTER_LANE") == "1":
        out["heavy"] = "(lab or cluster) and heavy"
        out["beside"] = "(lab or cluster) and not heavy"
    return out


def _stream(name: str, proc: subprocess.Popen, lock: threading.Lock) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        with lock:
            sys.stdout.write(f"[{name}] {line}")
            sys.stdout.flush()


def main(args: list[str]) -> int:
    started = time.monotonic()
    lock = threading.Lock()
    procs, threads = {}, []
    for name, marks in lanes(dict(os.environ)).items():
        nice = ["nice", "-n", str(NICE[name])] if name in NICE else []
        argv = [*nice, sys.executable, "-m", "pytest", "-m", marks, "--basetemp", f"/tmp/swarmshift-lab-{name}",
                "--durations", "12", *args]  # where a lane's minutes go, in every CI log
        procs[name] = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        threads.append(threading.Thread(target=_stream, args=(name, procs[name], lock), daemon=True))
        threads[-1].start()
    codes = {name: proc.wait() for name, proc in procs.items()}
    for thread in threads:
        thread.join(5)
    took = time.monotonic() - started
    print(f"lab lanes: {', '.join(f'{n} exit {c}' for n, c in codes.items())} in {took / 60:.1f} min", flush=True)
    # pytest's 5 ("no tests collected") in a lane that a -k or path left empty is not a failure.
    failed = [c for c in codes.values() if c not in (0, 5)]
    if not failed and set(codes.values()) == {5}:
        return 5
    return failed[0] if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
