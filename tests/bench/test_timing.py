"""The one timer of every command: interleaved rounds, the median as the statistic."""

from mambaout.measure.timing import interleaved, median_iqr


def test_rounds_call_every_candidate_once_in_turn_after_the_warmup():
    calls = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4  # one untimed round, then three timed ones
    assert [len(times["a"]), len(times["b"])] == [3, 3] and min(times["a"] + times["b"]) >= 0


def test_settling_calls_a_candidate_untimed_right_before_each_of_its_timed_calls():
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "ab"}
    times = interleaved(fns, repeats=2, settle=1)
    assert calls == ["a", "a", "b", "b"] * 2  # no timed call of b follows a call of a
    assert [len(times["a"]), len(times["b"])] == [2, 2]


def test_the_statistic_is_the_median_with_the_interquartile_range_as_spread():
    # one stalled call does not move the median (a mean would be 22), one quiet call does not set it (a minimum would)
    assert median_iqr([1.0, 2.0, 3.0, 4.0, 100.0]) == (3.0, 52.0 - 1.5)
    assert median_iqr([0.01, 5.0, 5.0])[0] == 5.0
    assert median_iqr([7.0]) == (7.0, 0.0)


def test_update_timer_gives_the_seconds_of_each_update_after_the_warm_up():
    import time

    import torch

    from mambaout.engine.run import RunConfig, Task, run
    from mambaout.measure import UpdateTimer

    class Slow(UpdateTimer, Task):  # every update sleeps 20 ms, the first two of five are warm-up
        warmup = 2

        def model(self):
            return torch.nn.Linear(2, 1)

        def train_data(self):
            return iter([torch.ones(4, 2)] * 5)

        def loss(self, forward, batch):
            time.sleep(0.02)
            return forward(batch).square().mean()

    task = Slow()
    run(task, RunConfig(updates=5, device="cpu", progress="none"))
    assert len(task.update_seconds) == 3 and all(0.02 <= s < 2.0 for s in task.update_seconds)
