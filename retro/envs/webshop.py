"""An offline WebShop (Yao et al. 2022): the text shopping site, over a catalogue built by this program.

Pages and their buttons (clickable text is shown in brackets, matched case-insensitively):

  search       search[query]
  results      [Back to Search] [< Prev] [Next >] [B0XXXXXXXX] ... (10 per page, 50 results at most)
  item         [Back to Search] [< Prev] option values by group, [Description] [Features] [Buy Now]
  description  [Back to Search] [< Prev]
  features     [Back to Search] [< Prev]

`click[buy now]` ends the episode with the WebShop reward (webshop_reward.py) as its return. An action
that does not fit the page is answered "Invalid action: ..." (info invalid=True), never an exception.
The catalogue (webshop_catalog.py) is built on first use under settings.cache_dir/webshop.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

from retro.config import Settings
from retro.envs.actions import BracketActions, bracket_choices, bracket_forms
from retro.envs.base import ActionSpace, StepResult, Task
from retro.envs.webshop_catalog import DATA_DIR, Catalogue, ensure_catalogue, eval_indices, read_instructions
from retro.envs.webshop_reward import score_purchase
from retro.errors import UnknownEnvError

PAGE_SIZE = 10
MAX_RESULTS = 50  # WebShop's search engine returns 50 results
SPLITS = ("train", "eval")
EXAMPLE_SEED = 0  # which train goals become the worked examples
EXAMPLE_OBSERVATION_CHARS = 420  # observations in the worked examples are cut to this
MAX_STEPS = 15  # ReAct's and Reflexion's WebShop agents stopped after 15 steps
NO_ACTION = "Invalid action: write one action: search[<query>] or click[<button>]."

ACTION_HELP = """You are shopping on a web store for the item the instruction describes.
Available actions:
(1) search[query]: search the store (only on the search page).
(2) click[button]: click a button shown in [brackets]: a product id such as [B0ABC12345] opens that product;
an option value such as [black] or [large] selects it; [Next >] and [< Prev] move between result pages or go
back; [Back to Search] returns to the search page; [Description] and [Features] show details; [Buy Now]
buys the product on its page and ends the task.
The purchase is scored on product type, attributes, selected options and price, against the instruction."""

ALIASES = {"next": "next >", "next>": "next >", "prev": "< prev", "<prev": "< prev", "previous": "< prev",
           "< previous": "< prev", "back": "back to search", "search": "back to search", "buy": "buy now",
           "buy it": "buy now", "buy now!": "buy now"}


def _button(text: str) -> str:
    """A clicked button's name, normalised: lowercase, single spaces, common aliases resolved."""
    name = re.sub(r"\s+", " ", text.strip().strip("[]").strip()).lower()
    return ALIASES.get(name, name)


def _invalid(message: str) -> StepResult:
    return StepResult(f"Invalid action: {message}", 0.0, False, {"invalid": True})


class WebShopEpisode:
    """One shopping trip for one goal: the page the agent is on, its last search, its selected options."""

    def __init__(self, catalogue: Catalogue, goal: dict[str, Any]):
        self.catalogue = catalogue
        self.goal = goal
        self.reset()

    # -- rendering ----------------------------------------------------------------------------------------------
    def _search_page(self) -> str:
        return f"WebShop\nInstruction:\n{self.goal['question']}\n[Search]"

    def _results_page(self) -> str:
        first = self.page_no * PAGE_SIZE
        lines = ["[Back to Search]", f"Page {self.page_no + 1} (Total results: {len(self.results)})"]
        if self.page_no > 0:
            lines.append("[< Prev]")
        if first + PAGE_SIZE < len(self.results):
            lines.append("[Next >]")
        for pid, title, price in self.results[first:first + PAGE_SIZE]:
            lines += [f"[{pid}]", title, f"${price:.2f}"]
        if not self.results:
            lines.append("No products match your query.")
        return "\n".join(lines)

    def _item_page(self) -> str:
        p = self.product
        lines = ["[Back to Search]", "[< Prev]"]
        lines += [f"{group} " + "".join(f"[{v}]" for v in values) for group, values in p["options"].items()]
        lines += [p["title"], f"Price: ${p['price']:.2f}", "Rating: N.A.", "[Description]", "[Features]", "[Buy Now]"]
        return "\n".join(lines)

    def _sub_page(self) -> str:
        body = self.product["description"] if self.page == "description" else "\n".join(self.product["features"])
        return f"[Back to Search]\n[< Prev]\n{body}"

    def observation(self) -> str:
        """The current page as text."""
        return {"search": self._search_page, "results": self._results_page, "item": self._item_page,
                "description": self._sub_page, "features": self._sub_page}[self.page]()

    def labels(self) -> list[tuple[str, str]]:
        """(as the worked examples write it, normalised name) of every button on the current page: product ids
        and option values as the page shows them, the site's own buttons in lower case (`buy now`)."""
        if self.page == "search":
            return []
        if self.page == "results":
            first = self.page_no * PAGE_SIZE
            found = ["back to search"] + (["< prev"] if self.page_no > 0 else [])
            found += ["next >"] if first + PAGE_SIZE < len(self.results) else []
            found += [pid for pid, _, _ in self.results[first:first + PAGE_SIZE]]
        elif self.page == "item":
            values = [v for vs in self.product["options"].values() for v in vs]
            found = ["back to search", "< prev", *values, "description", "features", "buy now"]
        else:
            found = ["back to search", "< prev"]
        return [(label, label.lower()) for label in found]

    def buttons(self) -> list[str]:
        """What can be clicked on the current page (normalised names)."""
        return [name for _, name in self.labels()]

    def actions(self) -> ActionSpace:
        """`search[<query>]` on the search page; elsewhere `click[<button>]` for each button of this page that
        a click names as written (an option value called "next" would click [Next >] instead: left out)."""
        if self.page == "search":
            return bracket_forms("search")
        return bracket_choices("click", [label for label, name in self.labels() if _button(label) == name])

    # -- the protocol -------------------------------------------------------------------------------------------
    def reset(self) -> str:
        self.page = "search"
        self.results: list[tuple[str, str, float]] = []
        self.page_no = 0
        self.product: dict[str, Any] = {}
        self.selected: dict[str, str] = {}
        self.done = False
        return self.observation()

    def step(self, action: str) -> StepResult:
        if self.done:
            return StepResult("The episode is over.", 0.0, True, {"invalid": True})
        m = re.fullmatch(r"\s*(search|click)\s*\[(.*)\]\s*", action, flags=re.IGNORECASE | re.DOTALL)
        if m is None:
            return _invalid(f"'{action.strip()}' is not search[query] or click[button].")
        verb, arg = m[1].lower(), m[2].strip()
        result = self._search(arg) if verb == "search" else self._click(arg)
        result.info.setdefault("invalid", False)
        result.info["page"] = self.page
        return result

    def close(self) -> None:
        pass  # the catalogue's connection belongs to the environment

    # -- actions ------------------------------------------------------------------------------------------------
    def _search(self, query: str) -> StepResult:
        if self.page != "search":
            return _invalid("search is only possible on the search page; click[Back to Search] first.")
        if not re.search(r"\w", query):
            return _invalid("the search query is empty; use search[words describing the item].")
        self.results = self.catalogue.search(query, MAX_RESULTS)
        self.page, self.page_no = "results", 0
        return StepResult(self.observation(), 0.0, False)

    def _click(self, text: str) -> StepResult:
        name = _button(text)
        buttons = self.buttons()
        if name not in buttons:
            where = "the search page has no buttons; use search[query]" if self.page == "search" else \
                f"there is no [{text.strip()}] button on this page"
            return _invalid(where + ".")
        if name == "back to search":
            self.reset()
            return StepResult(self.observation(), 0.0, False)
        if self.page == "results":
            return self._click_results(name)
        if self.page == "item":
            return self._click_item(name)
        self.page = "item"  # "< prev" on a description or features page
        return StepResult(self.observation(), 0.0, False)

    def _click_results(self, name: str) -> StepResult:
        if name == "next >":
            self.page_no += 1
        elif name == "< prev":
            self.page_no -= 1
        else:
            self.product = self.catalogue.product(name.upper()) or {}
            self.selected = {}
            self.page = "item"
        return StepResult(self.observation(), 0.0, False)

    def _click_item(self, name: str) -> StepResult:
        if name == "< prev":
            self.page = "results"
            return StepResult(self.observation(), 0.0, False)
        if name in ("description", "features"):
            self.page = name
            return StepResult(self.observation(), 0.0, False)
        if name == "buy now":
            return self._buy()
        for group, values in self.product["options"].items():
            for value in values:
                if value.lower() == name:
                    self.selected[group] = value
                    return StepResult(f"You have clicked {value}.", 0.0, False)
        return _invalid(f"there is no [{name}] button on this page.")  # unreachable: buttons() lists them all

    def _buy(self) -> StepResult:
        goal = {**self.goal, "options": json.loads(self.goal["options"])}
        reward = score_purchase(goal, self.product, self.selected)
        self.done = True
        info = {**reward, "product_id": self.product["product_id"], "selected": dict(self.selected)}
        text = f"Thank you for shopping with us! Your score (min 0.0, max 1.0): {reward['score']:.2f}"
        return StepResult(text, reward["score"], True, info)


class WebShop(BracketActions):
    """The WebShop environment: tasks are the shipped instructions; the catalogue is generated from them."""

    name = "webshop"
    action_help = ACTION_HELP
    invalid_action = NO_ACTION
    max_steps = MAX_STEPS
    held_out_split = "eval"
    reflection_tokens = 128  # room for the places and objects a plan names

    def __init__(self, settings: Settings, seed: int = 0, limit: int | None = None,
                 data_dir: Path | None = None, examples: int = 1):
        """seed: the catalogue's seed; limit: build only the first `limit` goals (tests); examples: 1 or 2."""
        self.settings = settings
        self.seed = seed
        self.limit = limit
        self.data_dir = Path(data_dir or DATA_DIR)
        self.examples = examples
        self._catalogue: Catalogue | None = None
        self._goals: dict[str, dict[str, Any]] | None = None
        self._few_shot: dict[str, str] = {}

    @property
    def catalogue(self) -> Catalogue:
        if self._catalogue is None:
            folder = ensure_catalogue(self.settings.cache_dir, self.seed, self.limit, self.data_dir)
            self._catalogue = Catalogue(folder)
        return self._catalogue

    def goal(self, task_id: str) -> dict[str, Any]:
        if self._goals is None:
            self._goals = {g["task_id"]: g for g in self.catalogue.goals.to_dicts()}
        if task_id not in self._goals:
            raise UnknownEnvError(f"unknown webshop task '{task_id}': ids look like ws-00042 (see load_tasks)")
        return self._goals[task_id]

    def splits(self) -> dict[str, int]:
        """Counted from the instructions alone: listing environments never waits for a catalogue build."""
        instructions = read_instructions(self.data_dir)
        n = len(instructions) if self.limit is None else min(self.limit, len(instructions))
        held_out = sum(1 for i in eval_indices(instructions) if i < n)
        return {"train": n - held_out, "eval": held_out}

    def load_tasks(self, split: str) -> list[Task]:
        if split not in SPLITS:
            raise UnknownEnvError(f"unknown webshop split '{split}': choose one of {', '.join(SPLITS)}")
        goals = self.catalogue.goals.filter(self.catalogue.goals["split"] == split).sort("task_id")
        return [
            Task(self.name, split, g["task_id"], g["question"], "\n".join(g["gold_actions"]),
                 metadata={"instruction": g["instruction"], "product_type": g["product_type"],
                           "attributes": g["attributes"], "options": json.loads(g["options"]),
                           "price_upper": g["price_upper"], "gold_product_id": g["gold_product_id"]})
            for g in goals.iter_rows(named=True)
        ]

    def start(self, task: Task) -> WebShopEpisode:
        return WebShopEpisode(self.catalogue, self.goal(task.task_id))

    def gold_path(self, task: Task) -> list[str]:
        """The expert's actions for a task: search, page to the target if needed, open it, pick options, buy.

        task.answer holds the same path assuming the target is on the first result page (true for about 9 in
        10 goals); this one searches to find its page.
        """
        goal = self.goal(task.task_id)
        for query in (goal["query"], re.sub(r"[\[\]]", " ", goal["instruction"]).strip()):
            found = [pid for pid, _, _ in self.catalogue.search(query, MAX_RESULTS)]
            if goal["gold_product_id"] in found:
                pages = found.index(goal["gold_product_id"]) // PAGE_SIZE
                return [f"search[{query}]", *["click[next >]"] * pages, *goal["gold_actions"][1:]]
        return list(goal["gold_actions"])

    # -- worked examples ----------------------------------------------------------------------------------------
    def few_shot(self, task: Task | None = None) -> str:
        """1-2 worked examples: gold paths of train goals played in this environment (never `task`'s goal)."""
        skip = task.task_id if task is not None else ""
        if skip not in self._few_shot:
            chosen = [g for g in self._example_goals() if g["task_id"] != skip][: self.examples]
            self._few_shot[skip] = "\n\n".join(self._play_example(g) for g in chosen)
        return self._few_shot[skip]

    def _example_goals(self) -> list[dict[str, Any]]:
        """Train goals that make clear examples: an attribute, an option, the target on the first page."""
        goals = self.catalogue.goals
        rows = goals.filter(goals["split"] == "train").sort("task_id").to_dicts()
        random.Random(EXAMPLE_SEED).shuffle(rows)
        found = []
        for g in rows:
            if not (g["attributes"] and json.loads(g["options"]) and len(g["instruction"].split()) <= 20):
                continue
            first_page = [pid for pid, _, _ in self.catalogue.search(g["query"], PAGE_SIZE)]
            if g["gold_product_id"] in first_page:
                found.append(g)
            if len(found) == 3:
                break
        return found

    def _play_example(self, goal: dict[str, Any]) -> str:
        episode = WebShopEpisode(self.catalogue, goal)
        lines = [episode.reset()]
        options = json.loads(goal["options"])
        for n, action in enumerate(goal["gold_actions"], start=1):
            thought = self._example_thought(goal, episode, action, options)
            result = episode.step(action)
            lines += [f"Thought {n}: {thought}", f"Action {n}: {action}",
                      f"Observation {n}: {_truncate(result.observation)}"]
        return "\n".join(lines)

    @staticmethod
    def _example_thought(goal: dict[str, Any], episode: WebShopEpisode, action: str, options: dict) -> str:
        if action.startswith("search["):
            wants = ", ".join([*goal["attributes"], *options.values()])
            return (f"I need a {goal['product_type']} ({wants}) for less than {goal['price_upper']:.2f} dollars. "
                    "I will search for it.")
        if action == "click[buy now]":
            return "The product matches the type and attributes, the options are selected and the price is fine. I will buy it."
        name = action[len("click["):-1]
        if episode.page == "results":
            price = next(p for pid, _, p in episode.results if pid == name)
            return f"{name} is a {goal['product_type']} for ${price:.2f}, under the budget. I will open it."
        return f"The instruction asks for {name}, so I select that option."


def _truncate(observation: str) -> str:
    text = observation if len(observation) <= EXAMPLE_OBSERVATION_CHARS else \
        observation[:EXAMPLE_OBSERVATION_CHARS].rsplit("\n", 1)[0] + "\n..."
    return text
