"""The WebShop reward (Yao et al. 2022, section 3), re-implemented over our own catalogue.

    r = r_type * (|U_att & Y_att| + |U_opt & Y_opt| + 1[y_price <= u_price]) / (|U_att| + |U_opt| + 1)

U is the goal (attributes, options, price cap), Y the purchased product with the options the agent
selected. WebShop matches attributes and options with fuzzy token-set matching (a score of 100 when one
token set contains the other); we keep a one-way containment rule on stemmed tokens (the product's value
has every token of the goal's), which is stricter about numbers ("pack of 4" never matches "pack of 6"). r_type: 1 when the product is of the goal's type, 0.5
when the types only share a word with the title or category, 0.1 when nothing overlaps.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

from retro.envs.webshop_goals import stem

SYNONYMS = {"grey": "gray", "colour": "color", "multicolored": "multicolor", "multi": "multicolor"}
TYPE_MATCH, TYPE_PARTIAL, TYPE_NONE = 1.0, 0.5, 0.1


@functools.lru_cache(maxsize=1 << 16)
def tokens(text: str) -> frozenset[str]:
    """Stemmed lowercase word tokens ("Light Grey, 2-Pack" -> {light, gray, 2, pack})."""
    words = re.findall(r"[a-z0-9]+(?:\.[0-9]+)?", text.lower())
    return frozenset(SYNONYMS.get(stem(w), stem(w)) for w in words)


def phrase_in(phrase: str, text: str) -> bool:
    """Whether a phrase occurs in a text as whole words (case and punctuation ignored)."""
    words = " ".join(re.findall(r"[a-z0-9]+", phrase.lower()))
    return bool(words) and f" {words} " in " " + " ".join(re.findall(r"[a-z0-9]+", text.lower())) + " "


def covers(wanted: str, offered: str) -> bool:
    """Token-set match: the offered value has every token of the wanted one ("black" ~ "black and white").

    WebShop's fuzzy token_set_ratio also scores 100 the other way round, so selecting "twin" would satisfy
    "twin-over-twin bunk beds"; we only let a more specific value satisfy a less specific one.
    """
    a, b = tokens(wanted), tokens(offered)
    return bool(a) and a <= b


def type_reward(goal_type: str, product: Mapping[str, Any]) -> float:
    """1 if the product is of the goal's type, 0.5 if they share a word in title/category, else 0.1."""
    wanted = tokens(goal_type)
    if wanted and wanted <= tokens(product["product_type"]):
        return TYPE_MATCH
    if wanted & (tokens(product["title"]) | tokens(product["category"])):
        return TYPE_PARTIAL
    return TYPE_NONE


def attribute_matches(goal_attributes: Iterable[str], product: Mapping[str, Any]) -> int:
    """How many goal attributes the product has: in its attribute list, else named in its text."""
    text = " ".join([product["title"], product["description"], *product["features"]])
    found = 0
    for attr in goal_attributes:
        wanted = tokens(attr)
        if any(wanted and wanted <= tokens(have) for have in product["attributes"]) or phrase_in(attr, text):
            found += 1
    return found


def option_matches(goal_options: Iterable[str], selected: Iterable[str]) -> int:
    """How many goal option values are among the selected ones."""
    chosen = list(selected)
    return sum(any(covers(want, have) for have in chosen) for want in goal_options)


def score_purchase(goal: Mapping[str, Any], product: Mapping[str, Any], selected: Mapping[str, str]) -> dict[str, Any]:
    """The episode return of buying `product` with `selected` options (group -> value) for `goal`.

    goal: product_type, attributes (list), options (group -> value), price_upper.
    product: product_type, title, category, description, features, attributes, price.
    """
    attributes = list(goal["attributes"])
    options = list(goal["options"].values())
    r_type = type_reward(goal["product_type"], product)
    n_att = attribute_matches(attributes, product)
    n_opt = option_matches(options, selected.values())
    price_ok = float(product["price"]) <= float(goal["price_upper"])
    score = r_type * (n_att + n_opt + int(price_ok)) / (len(attributes) + len(options) + 1)
    return {
        "score": score,
        "success": score >= 1.0,
        "r_type": r_type,
        "r_att": n_att / len(attributes) if attributes else None,
        "r_option": n_opt / len(options) if options else None,
        "r_price": float(price_ok),
    }
