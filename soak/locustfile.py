"""The Locust side of the soak: one Locust user per browser (soak/agent.py).

Run by the soak as `locust -f soak/locustfile.py --headless ...` in a process of its own,
with SOAK_LOAD_PLAN naming the plan (soak/observations.py). When every browser has passed
the plan's deadline the run stops itself, and what the browsers saw is written to the
plan's observations file.
"""

from __future__ import annotations

import os
from pathlib import Path

import gevent
from locust import User, constant, events, task
from locust.exception import StopUser

from soak.agent import Agent
from soak.household import Household
from soak.observations import LoadPlan, Recorder, SessionCounterRecord

PLAN = LoadPlan.load(Path(os.environ["SOAK_LOAD_PLAN"]))
RECORDER = Recorder()
HOUSEHOLD = Household(run_id=PLAN.run_id, users=PLAN.users)


class SoakBrowser(User):
    host = PLAN.base_url
    # Each browser paces itself (think time inside the agent's step).
    wait_time = constant(0)

    def on_start(self) -> None:
        self.agent = Agent(self, plan=PLAN, household=HOUSEHOLD, recorder=RECORDER)
        self.agent.start()

    @task
    def act(self) -> None:
        if self.agent.step():
            return
        HOUSEHOLD.finished += 1
        if HOUSEHOLD.finished >= PLAN.users:
            # Every browser is done: end the run now rather than at Locust's time limit.
            gevent.spawn_later(1, self.environment.runner.quit)
        raise StopUser()


def write_observations(**_kwargs) -> None:
    RECORDER.session_counters.clear()
    for agent in HOUSEHOLD.browsers.values():
        for session_id, counter in agent.browser.max_counter.items():
            RECORDER.session_counters.append(SessionCounterRecord(agent.index, session_id, counter))
    RECORDER.dump(Path(PLAN.observations_file))


events.test_stop.add_listener(write_observations)
events.quitting.add_listener(write_observations)
