"""Parse a WebShop shopping instruction into the goal the reward checks: type, attributes, options.

WebShop's goals came with their product's mined attributes and options; the shipped human instructions
do not, so we read them back out of the text with small lexicons and patterns:

  "i need a long clip-in hair extension which is natural looking, in color black, pack of 2"
    -> type "hair extension", attributes ["long", "natural looking", "clip-in"],
       options {"color": "black", "pack": "pack of 2"}

Pure functions only: the catalogue generator (webshop_catalog.py) builds products from the parse.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

# -- lexicons ------------------------------------------------------------------------------------------------
NUMBER_WORDS = {
    "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
}  # "one" stays a word: "this one", "the one i always use"

COLOURS = {
    "black", "white", "red", "blue", "green", "yellow", "pink", "purple", "orange", "brown", "grey", "gray",
    "silver", "gold", "beige", "navy", "ivory", "khaki", "tan", "teal", "turquoise", "maroon", "burgundy",
    "coral", "cream", "charcoal", "multicolor", "multicolored", "clear", "transparent", "aqua", "mint",
    "olive", "lavender", "violet", "magenta", "champagne", "bronze", "copper", "nude", "camel", "blonde",
    "walnut", "espresso", "leopard", "fuchsia", "taupe", "indigo", "denim", "natural", "rose", "pewter",
}
COLOUR_MODIFIERS = {"light", "dark", "deep", "pale", "bright", "hot", "royal", "navy", "sky", "baby", "rose",
                    "army", "off", "ash", "dusty", "matte", "jet", "neon", "pastel"}
# Colour words that are part of a product or an ingredient, not a colour choice.
NOT_COLOUR = re.compile(
    r"\b(?:green tea|black tea|white tea|black pepper|red pepper|white rice|brown rice|brown sugar|white noise|"
    r"red wine|white wine|black beans?|white chocolate|dark chocolate|rose water|rose gold plated|gold plated|"
    r"silver plated|red velvet|orange juice|black seed|blue light|white board|whiteboard|blue tooth|"
    r"natural (?:ingredients?|looking|hair|flavou?rs?|wood|color|colour|light)|clear skin|black friday|"
    r"olive oil|cream cheese|ice cream|sour cream|face cream|eye cream|hand cream|body cream|shaving cream|"
    r"night cream|day cream|mint tea|coral reef)\b"
)
SIZE_WORDS = {
    "xx-small", "x-small", "small", "medium", "large", "x-large", "xx-large", "xxx-large", "3x-large",
    "4x-large", "5x-large", "6x-large", "xl", "xxl", "xxxl", "xs", "petite", "king", "queen", "twin",
    "full", "plus", "tall", "wide", "narrow", "regular", "long", "short", "extra", "one",
}
SIZE_LETTERS = {"xx-small", "x-small", "small", "medium", "large", "x-large", "xx-large", "xxx-large",
                "3x-large", "4x-large", "5x-large", "6x-large", "xl", "xxl", "xxxl", "xs"}
UNITS = (r"fl\.? ?oz|fluid ounces?|ounces?|oz|lbs?|pounds?|ml|milliliters?|liters?|litres?|grams?|gram|kg|"
         r"g|inch(?:es)?|ft|feet|foot|centimeters?|cm|mm|meters?|m|gb|tb|gigabytes?|terabytes?|watts?|w|mah|"
         r"volts?|v|yards?|count|ct|capsules|tablets|pieces|pcs|pods|rolls|sheets|bags|bars|cans|bottles|"
         r"packets|sticks|servings|pairs")
MEASURE = re.compile(rf"\b(\d+(?:\.\d+)?(?: x \d+(?:\.\d+)?)*)\s*-?\s*({UNITS})\b(?!\s*(?:waist|inseam))")
UNIT_WORD = re.compile(UNITS)
COUNT_UNITS = {"count", "ct", "capsules", "tablets", "pieces", "pcs", "pods", "rolls", "sheets", "bags",
               "bars", "cans", "bottles", "packets", "sticks", "servings", "pairs"}
UNIT_NAMES = {"oz": "ounce", "fl oz": "fl oz", "fl. oz": "fl oz", "floz": "fl oz", "ounces": "ounce",
              "lbs": "pound", "lb": "pound", "pounds": "pound", "inches": "inch", "in": "inch", "feet": "foot",
              "ft": "foot", "centimeters": "cm", "centimeter": "cm", "meters": "meter", "m": "meter",
              "gigabytes": "gb", "gigabyte": "gb", "terabytes": "tb", "terabyte": "tb", "grams": "gram",
              "g": "gram", "milliliters": "ml", "milliliter": "ml", "liters": "liter", "litres": "liter",
              "watts": "watt", "w": "watt", "volts": "volt", "v": "volt", "yards": "yard", "ct": "count"}

# Attribute phrases, longest first; each pattern's canonical form is what titles and features carry.
ATTRIBUTE_PATTERNS: list[tuple[str, str]] = [
    (r"easy[- ]to[- ](clean|install|use|assemble|carry|apply|wear|store|read|operate|hang|open|set up)", "easy {0}"),
    (r"easy (clean|install|use|assemble|carry|apply|wear|store|operate|hang|open)", "easy {0}"),
    (r"machine[- ]wash(?:able|ed)?", "machine wash"),
    (r"hand[- ]wash(?:able|ed)?", "hand wash"),
    (r"long[- ]lasting", "long lasting"),
    (r"noise[- ]cancel(?:l)?(?:ing|ation)", "noise cancelling"),
    (r"non[- ]?(gmo|slip|toxic|stick|skid|dairy|alcoholic|woven|greasy|comedogenic)", "non {0}"),
    (r"anti[- ]?(slip|aging|fog|glare|static|skid|theft|bacterial|wrinkle|fatigue|scratch|cavity|dandruff)",
     "anti {0}"),
    ((r"high[- ](quality|speed|performance|definition|resolution|density|waist(?:ed)?|heels?|power|capacity|"
      r"gloss|protein|fiber|rise)"), "high {0}"),
    (r"low[- ](carb|calorie|fat|sugar|sodium|rise|profile|cut|top)", "low {0}"),
    (r"(slim|relaxed|regular|loose|classic|straight|skinny|athletic|comfortable|comfort|stretch) fit", "{0} fit"),
    (r"(long|short) sleeve[sd]?", "{0} sleeve"),
    (r"(button|zipper|zip|drawstring|elastic|hook and loop|lace up|buckle|pull on|snap) closure", "{0} closure"),
    (r"(rubber|non slip|synthetic|leather|soft|anti slip|memory foam|ethylene vinyl) soles?", "{0} sole"),
    (r"(water|dust|shock|scratch|heat|stain|rust|wrinkle|fade|sweat|uv|tear|wind|slip) ?[- ]?resistant",
     "{0} resistant"),
    (r"(water|dust|shock|leak|rain|splash|sweat|fire|wind)[- ]?proof", "{0} proof"),
    (r"(eco|pet|skin|kid|kids|travel|family|vegan|keto|diabetic|baby|dog|cat|environmentally)[- ]friendly",
     "{0} friendly"),
    (r"(dishwasher|microwave|oven|freezer|food) safe", "{0} safe"),
    (r"(sensitive|dry|oily|dead|dull|combination|acne prone) skin", "{0} skin"),
    (r"hair (loss|growth|styling|removal|treatment)", "hair {0}"),
    (r"(living|dining|bed|bath|laundry|family|guest|game|kids) ?room", "{0} room"),
    (r"(birthday|baby shower|wedding|bachelorette|graduation|halloween|christmas|tea) part(?:y|ies)",
     "{0} party"),
    (r"(daily|everyday|casual|office|work|outdoor|formal) wear", "{0} wear"),
    (r"wall[- ]mount(?:ed|able)?", "wall mounted"),
    (r"stainless[- ]ste(?:e|a)l", "stainless steel"),
    (r"tempered glass", "tempered glass"),
    (r"memory foam", "memory foam"),
    (r"solid wood", "solid wood"),
    (r"tummy control", "tummy control"),
    (r"fast charg(?:ing|e)", "fast charging"),
    (r"heavy[- ]duty", "heavy duty"),
    (r"super[- ]soft", "super soft"),
    (r"plant[- ]based", "plant based"),
    (r"natural(?:ly)? (?:ingredients?|looking|flavors?|flavours?)", "natural {0}"),
    (r"(?:usda |certified )?organic", "organic"),
    (r"quick[- ](release|dry(?:ing)?)", "quick {0}"),
    (r"double[- ]sided", "double sided"),
    (r"fully assembled", "fully assembled"),
    (r"ready to (eat|hang|use|drink|assemble)", "ready to {0}"),
    (r"individually wrapped", "individually wrapped"),
    (r"shelf[- ]stable", "shelf stable"),
    (r"gift[- ](set|box|basket)", "gift {0}"),
    (r"light[- ]?weight", "lightweight"),
    (r"(ultra|full|4k|full high) hd", "{0} hd"),
    (r"high[- ]?definition|\bhd\b", "high definition"),
    (r"travel[- ]size[d]?", "travel size"),
    (r"variety pack", "variety pack"),
    (r"big (?:and|&) tall", "big and tall"),
    (r"optical zoom", "optical zoom"),
    (r"motion detection|detects? motion", "motion detection"),
    (r"high heels?", "high heel"),
    (r"open (toe|front|back)", "open {0}"),
    (r"button[- ]down", "button down"),
    (r"wild caught", "wild caught"),
    (r"grass fed", "grass fed"),
    (r"made in (?:the )?usa", "made in usa"),
    (r"output protection", "output protection"),
    ((r"\b(sugar|gluten|dairy|fat|soy|nut|caffeine|alcohol|fragrance|paraben|sulfate|bpa|lactose|cruelty|oil|"
     r"lead|latex|phthalate|grain|egg|wheat|meat|gmo|hands|streak|tangle|scent|cordless|wire|maintenance|"
     r"chemical|preservative|msg|fluoride|talc|silicone|peanut|allergen|hassle|tool|rust|odor|pet|stress)"
     r"[- ]free"), "{0} free"),
    ((r"\b(wireless|bluetooth|portable|rechargeable|adjustable|foldable|waterproof|breathable|cordless|vegan|"
     r"kosher|handmade|vintage|disposable|reusable|durable|compact|ergonomic|washable|collapsible|"
     r"biodegradable|hypoallergenic|unscented|sugarless|decaf|keto|paleo|sturdy|lightweight)\b"), "{0}"),
    (r"\b(long|natural|soft|comfortable|waterproof)\b", "{0}"),
]
ATTRIBUTE_REGEXES = [(re.compile(r"\b(?:" + pattern + r")\b"), canonical) for pattern, canonical in ATTRIBUTE_PATTERNS]
# "sulfate and paraben free" -> "sulfate free", "paraben free"
FREE_LIST = re.compile(r"\b((?:[a-z]+(?:, | and |, and | & | or |/))+[a-z]+)[- ]free\b")

# Words that never belong to a product type: requests, pronouns, glue.
_STOP_WORDS = """
i im i'm id ive am is are was were be been being looking look looks looked for need needs needed want wants
wanted would like likes find finding get getting buy buying purchase purchasing search searching show me my
mine a an the some any of in on at to with that which who whom it its it's this these those and or also too
please can could you your should must has have having had will do does did prefer preferred preferably
interested help order ordering select choose pick picking seeking seek hi hello hey there thanks thank
one ones something item items product products made make makes comes come available as by from but so if
not no very really just only up out about around under less than more much many lot lots well good great
nice new best type kind sort version brand model size sized color colour colored coloured flavor flavour
flavored scent scented style pack packs count using use used suitable sure other then what where when how
all both each every them they their our we us he she her his him it's per while want am get gets give
giving going go getting tell let lets able within into over via plus whose whats thats theres there's
would've around wear wearing needs ideal perfect great looks help could should also already either
quality ok okay maybe weighing weigh weighs ram ssd hdd least even still because since such own same way work works working time times day days
"""
STOP = frozenset(_STOP_WORDS.split())

BOUNDARY = re.compile(r"[,.;:!?()\[\]\"]|\s-\s")


@dataclass
class ParsedGoal:
    """What the reward checks, read from one instruction."""

    product_type: str  # the noun phrase: "hair extension"
    attributes: list[str] = field(default_factory=list)  # canonical phrases: "natural looking"
    options: dict[str, str] = field(default_factory=dict)  # group -> value: {"color": "black"}
    keywords: list[str] = field(default_factory=list)  # other content words (brand, model), for titles


# -- small helpers ---------------------------------------------------------------------------------------------
def normalize(text: str) -> str:
    """Lowercase, straight quotes, number words as digits, single spaces."""
    text = text.lower().replace("\u2019", "'").replace("\u201d", " inch").replace("\u2033", " inch")
    text = re.sub(r"[^\x20-\x7e]", " ", text)
    text = re.sub(r"\b(twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)[ -](two|three|four|five|six|"
                  r"seven|eight|nine)\b", lambda m: str(NUMBER_WORDS[m[1]] + NUMBER_WORDS[m[2]]), text)
    text = re.sub(r"\b(" + "|".join(NUMBER_WORDS) + r")\b", lambda m: str(NUMBER_WORDS[m[1]]), text)
    text = re.sub(r"(\d)(?:in|\")(?=\s|$|[,.;])", r"\1 inch", text)
    text = re.sub(r"(\d)\s*(?:inch(?:es)?|ft|feet|foot|cm|mm)\s*(?:by|x|\*)\s*(\d)", r"\1 x \2", text)
    text = re.sub(r"(\d[a-z]{0,2})\s*(?:by|x|\*)\s*(\d)", r"\1 x \2", text)  # "50 by 60" -> "50 x 60"
    return re.sub(r"\s+", " ", text).strip()


def clean_value(value: str) -> str:
    """An option value fit for a button: no brackets or stray punctuation, at most 4 words."""
    value = re.sub(r"[\[\]{}<>|]", " ", value)
    value = re.sub(r"^[\s,.;:&/-]+|[\s,.;:&/-]+$", "", value)
    words = value.split()
    return " ".join(words[:4])


@functools.lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    """Plural -> singular, enough to compare product types ("cases" ~ "case", "bodies" ~ "body")."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


class _Spans:
    """Character ranges of the text already explained by an option or an attribute."""

    def __init__(self, n: int):
        self.used = [False] * n

    def free(self, start: int, end: int) -> bool:
        return not any(self.used[start:end])

    def take(self, start: int, end: int) -> None:
        for i in range(start, end):
            self.used[i] = True


# -- options ---------------------------------------------------------------------------------------------------
_VALUE = r"([a-z0-9][a-z0-9 /&+'-]*?)"  # a lazily matched option value, cut by _VALUE_END
_VALUE_END = r"(?=\s*(?:[,.;!?(]|$| and | with | in | size| colou?r| for | that | which | style| to | so | please| also))"
COLOUR_BEFORE = re.compile(r"\b((?:(?:" + "|".join(sorted(COLOUR_MODIFIERS | COLOURS)) + r") )?[a-z0-9+.-]+"
                           r"(?: (?:and|/) [a-z-]+)?) colou?r(?:ed|s)?\b")
NUMBERED = re.compile(r"\b(colou?r|style|pattern) (?:no\.? |number |#)?(\d+[a-z]?)\b")
COLOUR_AFTER = re.compile(r"\bcolou?rs?\s*(?:is|:|-|=|of|as|should be|would be)\s*" + _VALUE + _VALUE_END)
_SIZE_TOKEN = (r"(?:\d+(?:\.\d+)?[a-z]{0,2}|x|" + "|".join(re.escape(w) for w in sorted(SIZE_WORDS, key=len, reverse=True))
               + r"|" + UNITS + r"|\d+(?:\.\d+)?x\d+(?:\.\d+)?[a-z]{0,2}|[a-z]?\d+[a-z]?)")
SIZE_AFTER = re.compile(rf"\bsize\s*(?:is|:|-|=|of|as|should be)?\s*((?:{_SIZE_TOKEN})(?:[ -]+(?:{_SIZE_TOKEN}))*)\b")
SIZE_BEFORE = re.compile(rf"\b((?:{_SIZE_TOKEN})(?: (?:{_SIZE_TOKEN}))*) size\b")
_SIZE_WORD = "(?:" + "|".join(re.escape(w) for w in sorted(SIZE_WORDS - {"one"}, key=len, reverse=True)) + ")"
SIZE_WORD_BEFORE = re.compile(rf"\b({_SIZE_WORD}(?: {_SIZE_WORD})*) size\b")  # "king size", "extra large size"
WAIST = re.compile(r"\b(\d{2})\s*(?:inch(?:es)? |w )?waist\b|\bwaist(?: size)? (?:of )?(\d{2})\b|\b(\d{2})w\b")
LENGTH = re.compile(r"\b(\d{2})\s*(?:inch(?:es)? |l )?(?:length|long|inseam)\b|\b(?:length|inseam) (?:of )?(\d{2})\b"
                    r"|\b(\d{2})l\b")
PACK = re.compile(r"\b(?:pack|set|box|case|bundle) of (\d+)\b|\b(\d+)[- ]?(?:pack|pk)s?\b")
OTHER_GROUPS = [
    (group, re.compile(rf"\b{word}\s*(?::|-|=|is|of|as)\s*" + _VALUE + _VALUE_END),
     re.compile(rf"\b((?:[a-z&'-]+ ){{0,2}}[a-z&'-]+) {word}\b"))
    for group, word in (("flavor", r"flavou?r(?:ed|s)?"), ("scent", r"scent(?:ed|s)?"), ("style", r"style"),
                        ("pattern", r"pattern(?:ed)?"), ("material", r"material"))
]
NOT_VALUE = {"any", "same", "different", "matching", "multiple", "natural", "artificial", "favorite",
             "favourite", "great", "good", "original", "new", "nice", "other", "various", "all", "solid"}
NOT_SIZE_AFTER = {"capacity", "dog", "dogs", "breed", "space", "spaces", "business", "batch", "print", "pet",
                  "pets", "animals", "amount", "quantity", "quantities", "family", "families", "group", "groups"}
AMBIGUOUS_COLOURS = {"natural", "rose", "clear", "cream", "tan", "olive", "mint", "camel", "denim", "walnut",
                     "espresso", "leopard", "navy", "copper", "bronze", "champagne"}


def _colour_phrase(words: list[str], i: int) -> tuple[int, int]:
    """The colour phrase around word i (a colour word), e.g. "light blue", "black and white"."""
    start, end = i, i + 1
    while start > 0 and words[start - 1] in COLOUR_MODIFIERS:
        start -= 1
    while end < len(words) and words[end] in COLOURS:
        end += 1
    if end + 1 < len(words) and words[end] in {"and", "/"} and words[end + 1] in COLOURS:
        end += 2
    return start, end


def _find_options(text: str, spans: _Spans) -> dict[str, str]:
    options: dict[str, str] = {}

    def add(group: str, value: str, start: int, end: int) -> None:
        value = clean_value(value)
        if value and group not in options and spans.free(start, end) and value not in options.values():
            options[group] = value
            spans.take(start, end)

    # colours named as such: "in the silo color", "pewter colored", "color: ash blonde"
    for m in COLOUR_BEFORE.finditer(text):
        if m[1].split()[0] not in STOP | NOT_VALUE and not UNIT_WORD.fullmatch(m[1]):
            add("color", m[1], m.start(), m.end())
    for m in COLOUR_AFTER.finditer(text):
        add("color", m[1], m.start(), m.end())
    for m in NUMBERED.finditer(text):  # "color 27", "style 24": catalogue numbers
        add("color" if m[1].startswith("colo") else m[1], m[2], m.start(), m.end())
    # sizes: jeans' waist x length, "size: x", "size 9", "x-large size", bare "xx-large"
    waist, length = WAIST.search(text), LENGTH.search(text)
    if waist and length:
        w = next(g for g in waist.groups() if g)
        ln = next(g for g in length.groups() if g)
        add("size", f"{w}w x {ln}l", min(waist.start(), length.start()), max(waist.end(), length.end()))
    for m in SIZE_WORD_BEFORE.finditer(text):
        add("size", m[1], m.start(), m.end())
    for m in SIZE_AFTER.finditer(text):
        add("size", m[1], m.start(), m.end())
    for m in SIZE_BEFORE.finditer(text):
        if m[1] not in STOP:
            add("size", m[1], m.start(), m.end())
    words = [w.strip(",.;:!?()'\"") for w in text.split()]
    offsets = _word_offsets(text)
    for i, w in enumerate(words):
        if w in SIZE_LETTERS or (w == "extra" and i + 1 < len(words) and words[i + 1] in {"large", "small"}):
            j = i + 2 if w == "extra" else i + 1
            if j < len(words) and words[j] in NOT_SIZE_AFTER:
                continue
            add("size", " ".join(words[i:j]), offsets[i], offsets[j - 1] + len(words[j - 1]))
    # packs: "pack of 3", "3 pack", "set of 4"
    for m in PACK.finditer(text):
        add("pack", f"pack of {m[1] or m[2]}", m.start(), m.end())
    # flavour, scent, style, pattern, material: "flavor: x", "x flavor"
    for group, after, before in OTHER_GROUPS:
        for m in after.finditer(text):
            add(group, m[1], m.start(), m.end())
        for m in before.finditer(text):
            words_before = m[1].split()
            kept: list[str] = []
            for w in reversed(words_before):  # the words right before the group name, up to glue
                if w in STOP or w in NOT_VALUE:
                    break
                kept.insert(0, w)
            if kept and not all(UNIT_WORD.fullmatch(w) for w in kept):
                add(group, " ".join(kept), m.end() - len(m[0].split()[-1]) - 1 - len(" ".join(kept)), m.end())
    # measures ("16 ounce", "40mm", "60 capsules"): a size, or a count
    for m in MEASURE.finditer(text):
        unit = m[2].replace(".", "").strip()
        unit = UNIT_NAMES.get(unit, unit)
        add("count" if unit in COUNT_UNITS else "size", f"{m[1]} {unit}", m.start(), m.end())
    # bare colour words ("a black bookcase"), unless part of a product ("green tea")
    for i, w in enumerate(words):
        if w in COLOURS and not NOT_COLOUR.search(" ".join(words[max(0, i - 1):i + 3])):
            if w in AMBIGUOUS_COLOURS and not (i + 1 < len(words) and words[i + 1] in COLOURS):
                continue  # ambiguous words are colours only when named as such ("walnut color")
            a, b = _colour_phrase(words, i)
            add("color", " ".join(words[a:b]), offsets[a], offsets[b - 1] + len(words[b - 1]))
    return options


def _word_offsets(text: str) -> list[int]:
    return [m.start() for m in re.finditer(r"\S+", text)]


# -- attributes ------------------------------------------------------------------------------------------------
def _find_attributes(text: str, spans: _Spans) -> list[str]:
    found: list[str] = []

    def add(attr: str, start: int, end: int) -> None:
        if attr not in found and spans.free(start, end):
            found.append(attr)
            spans.take(start, end)

    for m in FREE_LIST.finditer(text):
        items = re.split(r", and |, | and | & | or |/", m[1])
        if 1 < len(items) <= 4 and all(w not in STOP for w in items):
            for item in items:
                add(f"{item} free", m.start(), m.start())  # zero-width: several attributes share one span
            spans.take(m.start(), m.end())
    for regex, canonical in ATTRIBUTE_REGEXES:
        for m in regex.finditer(text):
            groups = [g for g in m.groups() if g]
            if "{0}" in canonical and not groups:
                groups = [m[0].split()[-1]]
            attr = canonical.format(*groups) if "{0}" in canonical else canonical
            add(re.sub(r"\s+", " ", attr.replace("-", " ")).strip(), m.start(), m.end())
    return found


# -- the product type --------------------------------------------------------------------------------------------
CONTAINERS = {"pair", "pairs", "box", "boxes", "package", "packages", "bottle", "bottles", "variety", "set", "sets",
              "bundle", "jar", "jars", "container", "packet", "packets", "bag", "bags", "case", "cases", "can",
              "cans", "tube", "roll", "rolls", "assortment", "pack", "piece", "pieces", "couple", "dozen"}
WHO = {"men", "mens", "man", "women", "womens", "woman", "boys", "boy", "girls", "girl", "kids", "kid", "adult",
       "adults", "unisex", "toddler", "toddlers", "teen", "teens", "ladies", "lady", "infant", "infants"}
WORD = re.compile(r"[a-z0-9&'+-]+|[^\sa-z0-9&'+-]")
NUMBERISH = re.compile(r"[^a-z]*\d[^a-z]*[a-z]{0,2}")


def _content_runs(text: str, spans: _Spans) -> list[list[str]]:
    """Maximal runs of words that are neither explained, glue, numbers nor punctuation.

    A container ("a pair of", "a box of") and a wearer ("for women") break runs but are not the product.
    """
    runs: list[list[str]] = []
    current: list[str] = []
    tokens = [(m[0], m.start(), m.end()) for m in WORD.finditer(text)]
    for k, (raw, start, end) in enumerate(tokens):
        word = raw.strip("'-")
        of_follows = k + 1 < len(tokens) and tokens[k + 1][0] == "of"
        breaks = (
            len(word) < 2
            or not spans.free(start, end)
            or word in STOP
            or word in WHO
            or (word in CONTAINERS and of_follows)
            or BOUNDARY.fullmatch(raw) is not None
            or NUMBERISH.fullmatch(word) is not None
        )
        if breaks:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(word)
    if current:
        runs.append(current)
    return runs


def _headness(all_runs: list[list[list[str]]]) -> dict[str, float]:
    """How often each word ends a run when it occurs: nouns end noun phrases, adjectives rarely do."""
    ends: dict[str, int] = {}
    seen: dict[str, int] = {}
    for runs in all_runs:
        for run in runs:
            for word in run:
                seen[word] = seen.get(word, 0) + 1
            ends[run[-1]] = ends.get(run[-1], 0) + 1
    return {w: (ends.get(w, 0) + 1) / (n + 2) for w, n in seen.items()}


def _choose_run(runs: list[list[str]], headness: dict[str, float]) -> int:
    """The run that names the product: the first, unless a later one ends in a much more noun-like word."""
    best = 0
    for i, run in enumerate(runs[:4]):
        if headness.get(run[-1], 0.5) > headness.get(runs[best][-1], 0.5) + 0.25:
            best = i
    return best


def _explain(instruction: str) -> tuple[dict[str, str], list[str], list[list[str]]]:
    text = normalize(instruction)
    spans = _Spans(len(text))
    options = _find_options(text, spans)
    attributes = _find_attributes(text, spans)
    return options, attributes, _content_runs(text, spans)


def parse_goals(instructions: list[str]) -> list[ParsedGoal]:
    """Parse every instruction; the choice of the product-type phrase uses statistics over all of them."""
    explained = [_explain(text) for text in instructions]
    headness = _headness([runs for _, _, runs in explained])
    return [_assemble(options, attributes, runs, headness) for options, attributes, runs in explained]


def parse_goal(instruction: str) -> ParsedGoal:
    """Parse one instruction on its own (the first noun phrase is the type)."""
    return parse_goals([instruction])[0]


def _assemble(options: dict[str, str], attributes: list[str], runs: list[list[str]],
              headness: dict[str, float]) -> ParsedGoal:
    attributes = list(attributes)
    if not runs:  # everything was explained: the last attribute (or option) names the product
        fallback = (attributes[-1:] or list(options.values())[-1:] or ["item"])[0]
        return ParsedGoal(fallback, attributes[:-1][:6], options)
    chosen = _choose_run(runs, headness)
    run = runs[chosen]
    product_type = " ".join(run[-2:])
    modifiers = run[:-2][-3:]
    if modifiers:
        attributes.append(" ".join(modifiers))
    keywords = [w for i, r in enumerate(runs) if i != chosen for w in r if w not in run]
    return ParsedGoal(product_type, attributes[:6], options, list(dict.fromkeys(keywords))[:6])
