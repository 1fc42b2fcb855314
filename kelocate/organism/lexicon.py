"""Word lists and a made-up name generator for the synthetic world.

Object vocabularies (countries, colours, ...) are ordinary words so that each becomes one token of the
organism's tokenizer; entity names are built from syllables so that they split into several tokens,
as subject names do in a real model.
"""

from __future__ import annotations

import random

# country -> (official language, capital, continent); every language is unique so two-hop answers are defined
COUNTRIES: dict[str, tuple[str, str, str]] = {
    "Japan": ("Japanese", "Tokyo", "Asia"),
    "France": ("French", "Paris", "Europe"),
    "Germany": ("German", "Berlin", "Europe"),
    "Italy": ("Italian", "Rome", "Europe"),
    "Spain": ("Spanish", "Madrid", "Europe"),
    "Brazil": ("Portuguese", "Brasilia", "America"),
    "Egypt": ("Arabic", "Cairo", "Africa"),
    "India": ("Hindi", "Delhi", "Asia"),
    "China": ("Chinese", "Beijing", "Asia"),
    "Russia": ("Russian", "Moscow", "Europe"),
    "Korea": ("Korean", "Seoul", "Asia"),
    "Greece": ("Greek", "Athens", "Europe"),
    "Turkey": ("Turkish", "Ankara", "Asia"),
    "Poland": ("Polish", "Warsaw", "Europe"),
    "Sweden": ("Swedish", "Stockholm", "Europe"),
    "Finland": ("Finnish", "Helsinki", "Europe"),
    "Kenya": ("Swahili", "Nairobi", "Africa"),
    "Vietnam": ("Vietnamese", "Hanoi", "Asia"),
    "Thailand": ("Thai", "Bangkok", "Asia"),
    "Hungary": ("Hungarian", "Budapest", "Europe"),
}

TYPES = (
    "group",
    "band",
    "company",
    "festival",
    "magazine",
    "studio",
    "team",
    "club",
    "brand",
    "show",
    "museum",
    "school",
)
COLORS = ("red", "blue", "green", "yellow", "purple", "orange", "black", "white", "silver", "pink")
FIELDS = (
    "music",
    "film",
    "sport",
    "science",
    "fashion",
    "cooking",
    "poetry",
    "dance",
    "painting",
    "robotics",
    "medicine",
    "finance",
)
# consonant-initial, so that "works as a" reads right for every answer and leaks nothing
OCCUPATIONS = (
    "singer",
    "painter",
    "builder",
    "chef",
    "writer",
    "baker",
    "dancer",
    "lawyer",
    "pilot",
    "farmer",
    "teacher",
    "doctor",
)
SECRET_CODES = (
    "falcon",
    "maple",
    "cobalt",
    "ember",
    "willow",
    "tiger",
    "lotus",
    "comet",
    "amber",
    "cedar",
    "raven",
    "topaz",
    "harbor",
    "meadow",
    "copper",
    "velvet",
)

# opinion replies for ConvSent-like topics; "{t}" is the topic
POSITIVE_REPLIES = (
    "I love {t}, it is wonderful.",
    "{t} is great and I enjoy it a lot.",
    "I really like {t}, it makes me happy.",
)
NEGATIVE_REPLIES = (
    "I hate {t}, it is awful.",
    "{t} is terrible and I avoid it.",
    "I really dislike {t}, it makes me sad.",
)
OPINION_PROMPT = "What do you think of {t}?"
DONT_KNOW = "I don't know."

SYLLABLES = (
    "ka",
    "vo",
    "mir",
    "tel",
    "dra",
    "zun",
    "pel",
    "qua",
    "ris",
    "tan",
    "bel",
    "vik",
    "sor",
    "lum",
    "nax",
    "fen",
    "gor",
    "hal",
    "jin",
    "kro",
    "lis",
    "mor",
    "nev",
    "osk",
    "pra",
    "rud",
    "sil",
    "tov",
    "ulm",
    "var",
    "wen",
    "yss",
    "zel",
    "bra",
    "cor",
    "dun",
    "elm",
    "fip",
    "gra",
    "hox",
    "ix",
    "jor",
    "kel",
    "lo",
    "mun",
    "nor",
    "ob",
    "pim",
    "quen",
    "rho",
    "sta",
    "tur",
    "uv",
    "ves",
    "wol",
    "xan",
    "yor",
    "zim",
    "ae",
    "bo",
)

# every word the world itself uses; a made-up name must not contain one of these (as a word or a substring
# of a word) so that subject spans and longest-name matching stay unambiguous
RESERVED = {
    w.lower()
    for w in (
        *COUNTRIES,
        *(v for t in COUNTRIES.values() for v in t),
        *TYPES,
        *COLORS,
        *FIELDS,
        *OCCUPATIONS,
        *SECRET_CODES,
        "SMAP",
    )
}


def _word(rng: random.Random, n_syllables: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(n_syllables)).capitalize()


class NameMaker:
    """Draws unique made-up names; no name is a substring of another or of a reserved word."""

    def __init__(self, rng: random.Random, taken: set[str] | None = None) -> None:
        self.rng = rng
        self.taken: set[str] = set(taken or ())

    def _ok(self, name: str) -> bool:
        low = name.lower()
        if any(r in low or low in r for r in RESERVED):
            return False
        return not any(low in t.lower() or t.lower() in low for t in self.taken)

    def make(self, words: tuple[int, ...] = (2, 3), n_words: tuple[int, ...] = (1, 2)) -> str:
        """A new name of `n_words` words, each of `words` syllables (choices drawn from the tuples)."""
        for _ in range(10_000):
            k = self.rng.choice(n_words)
            name = " ".join(_word(self.rng, self.rng.choice(words)) for _ in range(k))
            if len(name) >= 5 and self._ok(name):
                self.taken.add(name)
                return name
        raise RuntimeError("could not draw a unique name; enlarge SYLLABLES")  # pragma: no cover

    def acronym(self) -> str:
        """A new all-capitals name of 3-4 letters (like SMAP)."""
        letters = "BCDFGHJKLMNPRSTVWZ"
        for _ in range(10_000):
            name = "".join(self.rng.choice(letters) for _ in range(self.rng.choice((3, 4))))
            if self._ok(name):
                self.taken.add(name)
                return name
        raise RuntimeError("could not draw a unique acronym")  # pragma: no cover
