"""Fuzzing the history label's decoder: whatever a service carries there, the app keeps working.

The label is written by the controller, but anyone who deploys a stack can write any label; a
damaged history must be reset with a reason, never raise, and whatever it accepts it writes back
the same way (and bounded).
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from bluegreen.apps import App, Color
from bluegreen.labels import K_HISTORY
from bluegreen.state import HISTORY_MAX, AppState, Phase, decode_history, encode_history, load_state
from tests.support.fuzz import fuzz

ENTRY = st.fixed_dictionaries(
    {"rev": st.one_of(st.integers(-2, 12), st.booleans(), st.text(max_size=3)),
     "image": st.one_of(st.sampled_from(["web:1", "", "w\n", "x" * 600]), st.text(max_size=20)),
     "kind": st.sampled_from(["deploy", "switch", "rollback", "undo", "canary", ""]),
     "result": st.sampled_from(["Succeeded", "Failed", "RolledBack", "Aborted", "succeeded"]),
     "start": st.sampled_from(["2025-01-31T12:00:00.000Z", "2025-01-31T12:00:00Z\n", "yesterday", "٢٠٢٥"]),
     "end": st.sampled_from(["2025-01-31T12:00:01.000Z", ""])},
    optional={"phases": st.dictionaries(st.sampled_from(["Preparing", "Waiting", "Stable", "x"]),
                                        st.one_of(st.floats(allow_nan=True), st.integers(-5, 10**10), st.text(max_size=3)),
                                        max_size=4),
              "reason": st.text(max_size=200), "by": st.text(max_size=70), "extra": st.integers()})
JSONISH = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
                       lambda inner: st.one_of(st.lists(inner, max_size=4),
                                               st.dictionaries(st.text(max_size=5), inner, max_size=4)),
                       max_leaves=20)
TEXT = st.one_of(st.lists(ENTRY, max_size=HISTORY_MAX + 2).map(lambda e: json.dumps(e)),
                 JSONISH.map(json.dumps), st.text(max_size=200),
                 st.sampled_from(["[" * 3000, "[]", "null", "NaN", '[{"rev":1e999}]']))


@fuzz
@given(TEXT)
def test_the_history_decoder_reads_or_resets_never_raises_and_round_trips(text):
    history, problem = decode_history(text)
    assert (problem is None) or history == ()
    assert problem is None or (problem.isprintable() and len(problem) < 200)
    assert len(history) <= HISTORY_MAX
    if history:
        again = encode_history(history)
        assert again is not None and len(again) < 32_000 and decode_history(again) == (history, None)


@fuzz
@given(TEXT)
def test_a_damaged_history_never_breaks_the_state(text):
    app = App("web", "web-blue", "web-green", 8000, "Host(`w`)")
    state = AppState(active=Color.BLUE, phase=Phase.STABLE, since=0.0, generation=3)
    labels = {c: {**{k: v for k, v in state.to_labels().items() if v is not None}, K_HISTORY: text} for c in Color}
    loaded = load_state(app, labels, {Color.BLUE: 1, Color.GREEN: 0}, None, 1.0)
    assert loaded.problems == [] and loaded.state.generation == 3 and loaded.adopted is None
    assert (loaded.history_problem is None) == (decode_history(text)[1] is None)
