"""Who the browsers belong to: people, their accounts, and which browser plays which part.

Browsers are numbered as Locust starts them. In every eight: 0 and 1 are the laptop and
the phone of one person (the laptop sometimes signs the phone out from the devices page),
2 is a person whose cookies get copied (a thief replays an old refresh token), and the
rest are people with one browser each. Everybody browses, and most sign out and in again
now and then.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gevent.event import Event

if TYPE_CHECKING:
    from .agent import Agent

PASSWORD = "soak correct horse battery staple"
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36",
)


class Role(enum.Enum):
    LAPTOP = "laptop"  # signs its person's phone out now and then
    PHONE = "phone"  # the second device of the laptop's person
    VICTIM = "victim"  # its refresh tokens get copied and replayed
    PLAIN = "plain"


def role_of(index: int, users: int) -> Role:
    slot = index % 8
    if slot == 0 and index + 1 < users:
        return Role.LAPTOP
    if slot == 1:
        return Role.PHONE
    if slot == 2:
        return Role.VICTIM
    return Role.PLAIN


def person_of(index: int, users: int) -> int:
    """A phone belongs to the person of the laptop before it."""
    return index - 1 if role_of(index, users) is Role.PHONE else index


@dataclass
class Account:
    email: str
    registered: Event = field(default_factory=Event)


@dataclass
class Household:
    """The accounts and the browsers of one soak, shared by every browser of the Locust
    process (greenlets of one thread: no locks needed)."""

    run_id: str
    users: int
    accounts: dict[int, Account] = field(default_factory=dict)
    browsers: dict[int, Agent] = field(default_factory=dict)  # index -> its agent
    started: int = 0
    finished: int = 0

    def next_index(self) -> int:
        index = self.started
        self.started += 1
        return index

    def account_of(self, index: int) -> Account:
        person = person_of(index, self.users)
        if person not in self.accounts:
            self.accounts[person] = Account(f"soak-{self.run_id}-{person}@example.com")
        return self.accounts[person]

    def user_agent(self, index: int) -> str:
        role = role_of(index, self.users)
        if role is Role.LAPTOP:
            return USER_AGENTS[0]
        if role is Role.PHONE:
            return USER_AGENTS[1]
        return USER_AGENTS[index % len(USER_AGENTS)]
