"""The embedded world: a deterministic, fictional knowledge base, its corpus and its QA sets.

The default profile cannot download NQ, HotpotQA or wiki-18, so it invents a world instead. Every
entity (people, cities, countries, universities, companies, films, books, bands, albums) has a
made-up, pronounceable name, so no language model can know a single answer: the agent has to
search. The world is built to be *learnable* by a small model with top-3 retrieval:

* each fact is stated plainly in a Wikipedia-like passage whose title is the entity's name (or
  ``"<Name> (early life)"`` and similar for a second section that holds part of the facts);
* questions name their subject entity and have short answers (a name, a year, a word, yes/no);
* distractor "mention" passages (festivals, prizes, lists, exhibitions...) name several entities in
  passing without stating any asked fact, so a lexical search on a name also finds non-answers.

Popularity follows a Zipf law: entity ``r`` in a random ranking is named in mention passages with
weight ``1 / r**POPULARITY_EXPONENT``. PopQA's questions take the least-mentioned subjects first (its
long tail); NQ and TriviaQA favour popular subjects.

Size. With ``n`` entities the corpus holds about ``n * (1 + s + mentions_per_entity)`` passages, where
``s`` (about 0.32) is the share of entities whose facts are split over a second "section" passage. At
the default (2,500 entities, 1.5 mentions per entity) that is 7,059 passages, 2.82 per entity;
``n_entities=71_000`` gives about 201,000 passages (generated in about 12 s, 0.25 GB peak RSS).

Question sets (one record per question, FlashRAG schema) mirror their benchmark's style:

=================  =========================================================================
nq                 single hop, lowercase, no question mark ("who directed the film x")
triviaqa           single hop, a full trivia sentence with "?"
popqa              single hop over PopQA's 14 relation types, long-tail subjects
hotpotqa           2-hop bridge questions and comparisons (which first? / same country? yes-no)
2wikimultihopqa    compositional, inference (in-laws, grandparents), comparison, bridge-comparison
musique            2-, 3- and 4-hop chains (shares 52 / 31 / 17 %, like MuSiQue-Ans dev)
bamboogle          2-hop compositional questions
=================  =========================================================================

Every record's ``metadata`` carries the hop chain (subject, relation, object, passage id of the
passage that states the fact) and the supporting passage ids. No (question text) and no (subject,
relation chain) appears in two sets or splits. Apart from comparisons, no golden answer (nor alias)
occurs in its question.

Determinism: every random choice comes from ``random.Random`` instances seeded with strings derived
from ``WorldConfig.seed`` (string seeds are hashed with SHA-512, independent of PYTHONHASHSEED); no
output depends on set iteration order. The same config gives byte-identical files.
"""
from __future__ import annotations

import bisect
import dataclasses
import math
import random
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from tqdm import tqdm

from searchr2.corpus import format_contents, passage_line
from searchr2.data import PAPER_EVAL_SPLITS, PAPER_TRAIN_SETS, TRAIN_SPLIT, qa_path, write_qa_file
from searchr2.io import atomic_dir, atomic_file
from searchr2.params import check_types

#: NQ's share of the paper's merged train set: 79,168 of 169,615 questions
NQ_TRAIN_SHARE = 79168 / 169615

#: share of each entity type among n_entities (persons take the remainder)
TYPE_SHARES = {"country": 0.03, "city": 0.12, "university": 0.05, "person": 0.40, "company": 0.08,
               "film": 0.14, "book": 0.10, "band": 0.04, "album": 0.04}
#: fewest entities of each type, so that even a tiny world has every relation
TYPE_MINIMUM = {"country": 3, "city": 10, "university": 4, "person": 30, "company": 6, "film": 8,
                "book": 6, "band": 3, "album": 3}
#: Zipf exponent of entity popularity (how unevenly mention passages spread over entities)
POPULARITY_EXPONENT = 0.8
#: share of entities whose secondary facts get their own section passage even when all would fit
SECOND_PASSAGE_SHARE = 0.3
#: passage length bounds, in whitespace-separated words of the text (the title excluded)
MIN_WORDS, MAX_WORDS = 40, 90
#: MuSiQue-like mix of hop counts (MuSiQue-Ans dev: 1252 / 760 / 405 questions of 2 / 3 / 4 hops)
MUSIQUE_HOPS = {2: 0.52, 3: 0.31, 4: 0.17}


@dataclass(frozen=True)
class WorldConfig:
    """Knobs of the fictional world (the ``world`` params section; used when ``data.source`` is "world").
    Type shares and text templates are fixed in code (see above)."""

    seed: int = 2026                  # every random choice derives from it (same seed -> same bytes)
    n_entities: int = 2500            # total entities: people, places, works, organisations (>= 100); ~2.8 corpus
                                      # passages each at the defaults
    mentions_per_entity: float = 1.5  # distractor "mention" passages per entity (total = this x n_entities);
    #                                   each names 3-5 entities, Zipf-distributed over popularity
    train_questions: int = 5000       # train size, split nq/train : hotpotqa/train like the paper (~47 : 53)
    test_questions: int = 100         # questions per eval set (nq, triviaqa, popqa, hotpotqa, 2wiki, musique)
    bamboogle_questions: int = 125    # size of the bamboogle eval set (the real one has 125)
    comparison_share: float = 0.2     # share of comparison questions in hotpotqa and 2wikimultihopqa, in [0, 1]

    def __post_init__(self):
        check_types(self, "world.")
        for name in ("n_entities", "train_questions", "test_questions", "bamboogle_questions"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"world.{name} must be a positive integer, got {value!r}")
        if self.n_entities < 100:
            raise ValueError(f"world.n_entities must be at least 100 (every entity type needs a few members), "
                             f"got {self.n_entities}")
        if not 0 <= self.mentions_per_entity <= 50:
            raise ValueError(f"world.mentions_per_entity must be a number in [0, 50], got {self.mentions_per_entity!r}")
        if not 0 <= self.comparison_share <= 1:
            raise ValueError(f"world.comparison_share must be in [0, 1], got {self.comparison_share!r}")


# ----------------------------------------------------------------------------------------------
# Vocabulary: syllables for names, real words for titles and categories
# ----------------------------------------------------------------------------------------------

_ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "h", "j", "k", "kr", "l", "m", "n", "p", "r", "s", "st",
           "t", "tr", "v", "z", "th", "sh", "c", "w"]
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "ai", "ei", "ou"]
_CODAS = ["", "", "", "", "n", "r", "l", "s", "m", "th", "nd", "rk", "v", "x"]
_MALE_ENDINGS = ["", "", "o", "an", "ek", "is", "or", "en"]
_FEMALE_ENDINGS = ["a", "ina", "elle", "ia", "ene", "ara"]
_CITY_SUFFIXES = ["holm", "ford", "burg", "stad", "mouth", "haven", "grad", "mere", "wick", "dale"]
_COUNTRY_SUFFIXES = ["ia", "land", "ora", "ania", "mark", "istan", "ovia", "ene"]
_LANGUAGE_SUFFIXES = ["ish", "ese", "ic", "i", "an"]
_UNIVERSITY_FORMS = ["{w} University", "University of {w}", "{w} Institute of Technology", "{w} College",
                     "Royal {w} Academy", "{w} Polytechnic", "{w} State University"]
_COMPANY_SUFFIXES = {"film production": ["Pictures", "Studios", "Films"],
                     "music recording": ["Records", "Music", "Sound"],
                     "publishing": ["Press", "Books", "Publishing"],
                     "shipping": ["Shipping", "Lines"], "mining": ["Mining", "Minerals"],
                     "engineering": ["Industries", "Works", "Engineering"], "banking": ["Bank", "Capital"],
                     "software": ["Systems", "Software"]}
_INDUSTRY_WEIGHTS = {"film production": 0.28, "music recording": 0.18, "publishing": 0.2, "shipping": 0.07,
                     "mining": 0.07, "engineering": 0.08, "banking": 0.06, "software": 0.06}
_ADJECTIVES = ["Silent", "Golden", "Last", "Broken", "Hidden", "Distant", "Crimson", "Quiet", "Burning",
               "Endless", "Hollow", "Northern", "Pale", "Savage", "Secret", "Wandering", "Winter", "Bitter",
               "Frozen", "Lonely", "Restless", "Scarlet", "Shining", "Stolen", "Sudden", "Velvet", "Wild",
               "Iron", "Glass", "Paper", "Second", "Small", "Long", "Empty", "Gentle", "Narrow", "Open",
               "Painted", "Falling", "Rising", "Amber", "Silver", "Brave", "Early", "Slow"]
_NOUNS = ["River", "Harbor", "Garden", "Mirror", "Lantern", "Orchard", "Voyage", "Promise", "Shadow",
          "Letter", "Bridge", "Crown", "Storm", "Tide", "Harvest", "Island", "Road", "Season", "Signal",
          "Summer", "Tower", "Valley", "Window", "Echo", "Horizon", "Journey", "Kingdom", "Meadow",
          "Mountain", "Night", "Ocean", "Passage", "Question", "Silence", "Stranger", "Thread", "Traveler",
          "Verdict", "Wedding", "Witness", "Compass", "Lighthouse", "Carousel", "Archive", "Ferry",
          "Furnace", "Glacier", "Rampart", "Sparrow", "Tapestry", "Anchor", "Candle", "Feather", "Harp"]
_FILM_TITLES = ["The {A} {N}", "{N} of {F}", "The {N} of {F}", "{A} {N}", "{F}", "Return to {F}",
                "The {F} {N}", "{F} and the {N}"]
_BOOK_TITLES = ["The {N} of {F}", "A {N} for {F}", "{F}'s {N}", "The {A} {N}", "{Ns} of {F}",
                "Letters from {F}", "The {F} {N}", "{F}"]
_ALBUM_TITLES = ["{A} {Ns}", "{F}", "Songs of {F}", "{N} and {N2}", "Live in {F}", "The {A} {N}",
                 "{F} {N}"]
_BAND_NAMES = ["The {F}s", "The {A} {Ns}", "{F} Collective", "{F} Ensemble", "{A} {F}", "The {F} {Ns}"]

_OCCUPATION_WEIGHTS = {"film director": 0.07, "screenwriter": 0.06, "composer": 0.06, "novelist": 0.08,
                       "poet": 0.04, "entrepreneur": 0.08, "musician": 0.08, "athlete": 0.12, "painter": 0.05,
                       "architect": 0.05, "chemist": 0.04, "physicist": 0.04, "historian": 0.04,
                       "politician": 0.05, "journalist": 0.04}
#: the occupation a role needs, and the earliest birth year that makes the role's dates plausible
_ROLE_OCCUPATIONS = {"film director": 1850, "screenwriter": 1850, "composer": 1830, "novelist": 1800,
                     "poet": 1800, "entrepreneur": 1800, "musician": 1885, "athlete": 1800}
_SPORTS = ["fencing", "rowing", "cricket", "tennis", "cycling", "archery", "wrestling", "handball", "polo",
           "sailing", "badminton", "curling"]
_RELIGIONS = ["Aurelism", "Velanism", "Doranism", "Kethism", "Solvarism", "Irunism", "Maelism", "Tovarism",
              "Ostrism"]
_FILM_GENRES = ["comedy", "drama", "thriller", "western", "documentary", "horror", "musical",
                "science fiction", "romance", "adventure"]
_BOOK_GENRES = ["mystery", "fantasy", "poetry", "biography", "satire", "historical fiction", "crime fiction",
                "travel writing", "science fiction", "memoir"]
_MUSIC_GENRES = ["jazz", "folk", "punk rock", "synth-pop", "blues", "heavy metal", "reggae", "soul",
                 "ambient", "bluegrass", "gospel", "ska"]
#: honest alternative spellings of category answers (EM accepts any golden answer)
_ALIASES = {"science fiction": ["sci-fi"], "synth-pop": ["synthpop"], "heavy metal": ["metal"],
            "punk rock": ["punk"], "film director": ["director"], "crime fiction": ["crime novel"]}

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def _norm(text: str) -> str:
    """Lowercase, drop punctuation and articles, collapse spaces (SQuAD-style, for overlap checks)."""
    text = _PUNCT.sub(" ", text.lower())
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


def _plural(noun: str) -> str:
    if noun.endswith("y"):
        return noun[:-1] + "ies"
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


# ----------------------------------------------------------------------------------------------
# Data model
# ----------------------------------------------------------------------------------------------

@dataclass(slots=True)
class Entity:
    """One fictional entity. ``attrs`` maps a relation to an entity index (entity-valued relations),
    an int year or a category word; ``where`` maps each relation to the passage id stating it."""

    idx: int
    type: str
    name: str = ""
    gender: str = ""                                   # "m" / "f" for persons, "" otherwise
    attrs: dict = field(default_factory=dict)
    where: dict = field(default_factory=dict)
    mentions: int = 0                                  # mention passages naming it (its popularity)

    @property
    def id(self) -> str:
        return f"E{self.idx}"


@dataclass(slots=True)
class Passage:
    """One corpus passage; ``contents`` is the wiki-18 format: the title in quotes, a newline, the text."""

    id: str
    title: str
    text: str
    kind: str                                          # "main", "section" or "mention"
    entity: int | None = None                          # the entity it describes (None for mentions)

    @property
    def contents(self) -> str:
        return format_contents(self.title, self.text)


@dataclass
class World:
    """A generated world held in memory: entities, corpus passages and QA sets."""

    config: WorldConfig
    entities: list[Entity]
    passages: list[Passage]
    qa: dict[str, dict[str, list[dict]]]               # dataset -> split -> records

    def passage(self, passage_id: str) -> Passage:
        return self.passages[int(passage_id)]

    def qa_sets(self) -> Iterator[tuple[str, str, list[dict]]]:
        """Yield ``(dataset, split, records)`` in a fixed order: eval sets, then train sets."""
        for dataset, splits in self.qa.items():
            for split, records in splits.items():
                yield dataset, split, records


# ----------------------------------------------------------------------------------------------
# Relations: what each entity type knows, and how questions ask about it
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Rel:
    obj: str                                   # entity type of the object, or "year" / "word"
    np: tuple[str, ...] = ()                   # noun phrases for the object, "{x}" = the subject phrase
    ask: dict = field(default_factory=dict)    # style -> question templates with "{x}"
    popqa: str | None = None                   # PopQA's name for the relation, when it has one


_ENTITY_TYPES = tuple(TYPE_SHARES)

REL: dict[tuple[str, str], _Rel] = {
    ("person", "birth_year"): _Rel("year", ask={
        "nq": ("when was {x} born", "what year was {x} born", "{x} year of birth"),
        "trivia": ("In which year was {x} born?", "{x} was born in what year?"),
        "multi": ("In what year was {x} born?", "When was {x} born?")}),
    ("person", "occupation"): _Rel("word", popqa="occupation", ask={
        "nq": ("what is {x}'s occupation", "what does {x} do for a living", "what was {x}'s profession"),
        "trivia": ("What profession did {x} follow?", "What was the occupation of {x}?"),
        "popqa": ("What is {x}'s occupation?", "What does {x} do for a living?"),
        "multi": ("What is the occupation of {x}?", "What was the profession of {x}?")}),
    ("person", "nationality"): _Rel("country", np=("the country of citizenship of {x}", "the home country of {x}"), ask={
        "nq": ("what country is {x} from", "what is the nationality of {x}"),
        "trivia": ("Of which country was {x} a citizen?", "{x} held the citizenship of which country?"),
        "multi": ("What is the nationality of {x}?", "Which country is {x} a citizen of?")}),
    ("person", "sport"): _Rel("word", popqa="sport", ask={
        "nq": ("what sport does {x} play", "what sport did {x} compete in"),
        "trivia": ("In which sport did {x} compete?", "{x} is known for which sport?"),
        "popqa": ("What sport does {x} play?",),
        "multi": ("Which sport does {x} play?", "In which sport does {x} compete?")}),
    ("person", "spouse"): _Rel("person", np=("the spouse of {x}", "the person married to {x}"), ask={
        "nq": ("who is {x} married to", "who was {x}'s spouse", "who is the wife or husband of {x}"),
        "trivia": ("To whom was {x} married?", "Who was the spouse of {x}?"),
        "multi": ("Who is the spouse of {x}?", "Who was {x} married to?")}),
    ("person", "birthplace"): _Rel("city", popqa="place of birth",
                                   np=("the birthplace of {x}", "the home town of {x}"), ask={
        "nq": ("where was {x} born", "{x} place of birth", "what city was {x} born in"),
        "trivia": ("In which city was {x} born?", "{x} was born in which city?"),
        "popqa": ("In what city was {x} born?", "Where was {x} born?"),
        "multi": ("Where was {x} born?", "In which city was {x} born?")}),
    ("person", "father"): _Rel("person", popqa="father", np=("the father of {x}",), ask={
        "nq": ("who is the father of {x}", "who was {x}'s father", "{x} father name"),
        "trivia": ("Who was the father of {x}?", "Which man was the father of {x}?"),
        "popqa": ("Who is the father of {x}?",),
        "multi": ("Who is the father of {x}?", "Who was the father of {x}?")}),
    ("person", "mother"): _Rel("person", popqa="mother", np=("the mother of {x}",), ask={
        "nq": ("who is the mother of {x}", "who was {x}'s mother", "{x} mother name"),
        "trivia": ("Who was the mother of {x}?", "Which woman was the mother of {x}?"),
        "popqa": ("Who is the mother of {x}?",),
        "multi": ("Who is the mother of {x}?", "Who was the mother of {x}?")}),
    ("person", "alma_mater"): _Rel("university", np=("the alma mater of {x}", "the university attended by {x}"), ask={
        "nq": ("where did {x} go to college", "what university did {x} attend", "where did {x} study"),
        "trivia": ("At which university did {x} study?", "{x} graduated from which university?"),
        "multi": ("Which university did {x} attend?", "Where did {x} study?")}),
    ("person", "religion"): _Rel("word", popqa="religion", ask={
        "nq": ("what religion is {x}", "what is {x}'s religion", "what faith did {x} follow"),
        "trivia": ("Which faith did {x} follow?", "What was the religion of {x}?"),
        "popqa": ("What is the religion of {x}?", "What religion does {x} follow?"),
        "multi": ("What religion does {x} follow?", "What is the religion of {x}?")}),
    ("city", "country"): _Rel("country", popqa="country", np=("the country that contains {x}", "the country where {x} lies"), ask={
        "nq": ("what country is {x} in", "{x} is located in which country", "which country is {x} in"),
        "trivia": ("In which country is the city of {x}?", "The city of {x} lies in which country?"),
        "popqa": ("In what country is {x}?", "Which country is {x} in?"),
        "multi": ("In which country is {x}?", "Which country is {x} located in?")}),
    ("city", "founded"): _Rel("year", ask={
        "nq": ("when was {x} founded", "what year was {x} founded"),
        "trivia": ("In what year was the city of {x} founded?",),
        "multi": ("When was {x} founded?", "In what year was {x} founded?")}),
    ("country", "capital"): _Rel("city", popqa="capital", np=("the capital of {x}", "the capital city of {x}"), ask={
        "nq": ("what is the capital of {x}", "capital city of {x}", "what is the capital city of {x}"),
        "trivia": ("What is the capital city of {x}?", "Which city is the capital of {x}?"),
        "popqa": ("What is the capital of {x}?",),
        "multi": ("What is the capital of {x}?", "Which city is the capital of {x}?")}),
    ("country", "language"): _Rel("word", ask={
        "nq": ("what language do they speak in {x}", "official language of {x}", "what language is spoken in {x}"),
        "trivia": ("What is the official language of {x}?", "Which language is officially spoken in {x}?"),
        "multi": ("What language is spoken in {x}?", "What is the official language of {x}?")}),
    ("country", "independence"): _Rel("year", ask={
        "nq": ("when did {x} become independent", "what year did {x} gain independence"),
        "trivia": ("In which year did {x} gain independence?",),
        "multi": ("When did {x} become independent?", "In what year did {x} gain independence?")}),
    ("university", "location"): _Rel("city", np=("the city that hosts {x}", "the home city of {x}"), ask={
        "nq": ("where is {x} located", "what city is {x} in", "{x} location city"),
        "trivia": ("In which city is {x}?", "{x} is based in which city?"),
        "multi": ("In which city is {x} located?", "Where is {x}?")}),
    ("university", "founded"): _Rel("year", ask={
        "nq": ("when was {x} established", "what year was {x} founded"),
        "trivia": ("In which year was {x} established?",),
        "multi": ("When was {x} established?", "In what year was {x} founded?")}),
    ("company", "headquarters"): _Rel("city", np=("the headquarters city of {x}", "the city where {x} has its headquarters"), ask={
        "nq": ("where is {x} headquartered", "where are the headquarters of {x}", "{x} headquarters location"),
        "trivia": ("In which city does {x} have its headquarters?", "{x} is headquartered in which city?"),
        "multi": ("Where is {x} headquartered?", "In which city are the headquarters of {x}?")}),
    ("company", "founder"): _Rel("person", np=("the founder of {x}", "the person who founded {x}"), ask={
        "nq": ("who founded {x}", "who is the founder of {x}", "who started {x}"),
        "trivia": ("Who founded the company {x}?", "Which entrepreneur founded {x}?"),
        "multi": ("Who founded {x}?", "Who is the founder of {x}?")}),
    ("company", "founded"): _Rel("year", ask={
        "nq": ("when was {x} founded", "what year was {x} established"),
        "trivia": ("In which year was the company {x} founded?",),
        "multi": ("When was {x} founded?", "In what year was {x} established?")}),
    ("film", "director"): _Rel("person", popqa="director", np=("the director of {x}", "the person who directed {x}"), ask={
        "nq": ("who directed {x}", "who is the director of {x}", "director of {x}"),
        "trivia": ("Who directed {x}?", "Which film-maker directed {x}?"),
        "popqa": ("Who was the director of {x}?", "Who directed {x}?"),
        "multi": ("Who directed {x}?", "Who is the director of {x}?")}),
    ("film", "release_year"): _Rel("year", ask={
        "nq": ("when did {x} come out", "what year was {x} released", "when was {x} released"),
        "trivia": ("In which year was {x} released?", "{x} was first shown in which year?"),
        "multi": ("When was {x} released?", "In what year did {x} come out?")}),
    ("film", "genre"): _Rel("word", popqa="genre", ask={
        "nq": ("what genre is {x}", "what kind of film is {x}", "what type of movie is {x}"),
        "trivia": ("To which genre does {x} belong?", "What genre of film is {x}?"),
        "popqa": ("What genre is {x}?",),
        "multi": ("What genre is {x}?", "What kind of film is {x}?")}),
    ("film", "screenwriter"): _Rel("person", popqa="screenwriter", np=("the screenwriter of {x}", "the writer of the screenplay of {x}"), ask={
        "nq": ("who wrote the screenplay for {x}", "who wrote the script of {x}", "screenwriter of {x}"),
        "trivia": ("Who wrote the screenplay of {x}?", "Which screenwriter wrote {x}?"),
        "popqa": ("Who was the screenwriter for {x}?", "Who wrote the screenplay for {x}?"),
        "multi": ("Who wrote the screenplay of {x}?", "Who is the screenwriter of {x}?")}),
    ("film", "producer"): _Rel("company", popqa="producer", np=("the company that produced {x}", "the production company of {x}"), ask={
        "nq": ("what company produced {x}", "who produced {x}", "production company of {x}"),
        "trivia": ("Which studio produced {x}?", "{x} was produced by which company?"),
        "popqa": ("Who was the producer of {x}?", "Which company produced {x}?"),
        "multi": ("Which company produced {x}?", "What is the production company of {x}?")}),
    ("film", "composer"): _Rel("person", popqa="composer", np=("the composer of the score of {x}", "the composer of {x}"), ask={
        "nq": ("who composed the music for {x}", "who wrote the score for {x}", "composer of {x}"),
        "trivia": ("Who composed the score of {x}?", "Which composer wrote the music for {x}?"),
        "popqa": ("Who was the composer of {x}?", "Who composed the music of {x}?"),
        "multi": ("Who composed the music for {x}?", "Who is the composer of {x}?")}),
    ("book", "author"): _Rel("person", popqa="author", np=("the author of {x}", "the writer of {x}"), ask={
        "nq": ("who wrote {x}", "who is the author of {x}", "author of {x}"),
        "trivia": ("Who wrote {x}?", "Which writer is the author of {x}?"),
        "popqa": ("Who is the author of {x}?", "Who wrote {x}?"),
        "multi": ("Who wrote {x}?", "Who is the author of {x}?")}),
    ("book", "genre"): _Rel("word", popqa="genre", ask={
        "nq": ("what genre is {x}", "what kind of book is {x}"),
        "trivia": ("To which genre does {x} belong?", "What genre of writing is {x}?"),
        "popqa": ("What genre is {x}?",),
        "multi": ("What genre is {x}?", "What kind of book is {x}?")}),
    ("book", "publication_year"): _Rel("year", ask={
        "nq": ("when was {x} published", "what year was {x} written"),
        "trivia": ("In which year was {x} first published?",),
        "multi": ("When was {x} published?", "In what year was {x} first published?")}),
    ("book", "publisher"): _Rel("company", np=("the publisher of {x}", "the company that published {x}"), ask={
        "nq": ("who published {x}", "what company published {x}", "publisher of {x}"),
        "trivia": ("Which publishing house issued {x}?", "Who published {x}?"),
        "multi": ("Who published {x}?", "Which company published {x}?")}),
    ("band", "origin"): _Rel("city", np=("the home city of {x}", "the city where {x} formed"), ask={
        "nq": ("where is {x} from", "where was {x} formed", "what city is {x} from"),
        "trivia": ("In which city was {x} formed?", "{x} come from which city?"),
        "multi": ("Where was {x} formed?", "Which city is {x} from?")}),
    ("band", "genre"): _Rel("word", popqa="genre", ask={
        "nq": ("what genre is {x}", "what kind of music does {x} play"),
        "trivia": ("What style of music does {x} play?", "To which genre does {x} belong?"),
        "popqa": ("What genre is {x}?",),
        "multi": ("What genre of music does {x} play?", "What genre is {x}?")}),
    ("band", "founder"): _Rel("person", np=("the founder of {x}", "the musician who founded {x}"), ask={
        "nq": ("who founded {x}", "who started the group {x}"),
        "trivia": ("Who founded {x}?", "Which musician formed {x}?"),
        "multi": ("Who founded {x}?", "Who formed {x}?")}),
    ("band", "founded"): _Rel("year", ask={
        "nq": ("when was {x} formed", "what year did {x} form"),
        "trivia": ("In which year was {x} formed?",),
        "multi": ("When was {x} formed?", "In what year was {x} formed?")}),
    ("album", "performer"): _Rel("band", np=("the band that recorded {x}", "the band behind {x}"), ask={
        "nq": ("who recorded {x}", "which band released {x}", "who sang {x}"),
        "trivia": ("Which band recorded {x}?", "{x} is an album by which band?"),
        "multi": ("Which band recorded {x}?", "Who released {x}?")}),
    ("album", "release_year"): _Rel("year", ask={
        "nq": ("when did {x} come out", "what year was {x} released"),
        "trivia": ("In which year was {x} released?",),
        "multi": ("When was {x} released?", "In what year did {x} come out?")}),
    ("album", "genre"): _Rel("word", popqa="genre", ask={
        "nq": ("what genre is {x}", "what kind of music is {x}"),
        "trivia": ("What style of music is {x}?", "To which genre does {x} belong?"),
        "popqa": ("What genre is {x}?",),
        "multi": ("What genre is {x}?", "What kind of music is {x}?")}),
    ("album", "label"): _Rel("company", np=("the label that released {x}", "the record label of {x}"), ask={
        "nq": ("what label released {x}", "record label of {x}", "who put out {x}"),
        "trivia": ("On which record label was {x} released?", "Which label issued {x}?"),
        "multi": ("Which label released {x}?", "What is the record label of {x}?")}),
}

#: relations a type's role determines the occupation of (asking that occupation would be a giveaway)
_ROLE_RELS = {"director", "screenwriter", "composer", "author", "founder"}
#: two-step relation pairs that only undo each other or answer trivially
_SILLY_PAIRS = {("spouse", "spouse"), ("father", "spouse"), ("mother", "spouse"), ("capital", "country")}
#: 2WikiMultiHopQA "inference" questions: a relation pair and the kinship term that names it
_INFERENCE = {("spouse", "father"): "father-in-law", ("spouse", "mother"): "mother-in-law",
              ("father", "father"): "paternal grandfather", ("father", "mother"): "paternal grandmother",
              ("mother", "father"): "maternal grandfather", ("mother", "mother"): "maternal grandmother"}
_INFERENCE_ASK = ("Who is the {rel} of {x}?", "Who is {x}'s {rel}?", "Who was the {rel} of {x}?")

#: how a question first names its subject, per style and type ({n} name, {occ} occupation, {year})
_BASE_NP = {
    "nq": {"film": ("the film {n}", "the movie {n}", "{n}"), "book": ("the book {n}", "{n}"),
           "album": ("the album {n}", "{n}"), "band": ("the band {n}", "{n}")},
    "trivia": {"person": ("{n}", "the {occ} {n}"), "film": ("the film {n}", "the {year} film {n}"),
               "book": ("the book {n}",), "album": ("the album {n}",), "band": ("the band {n}",),
               "city": ("the city of {n}", "{n}")},
    "popqa": {},
    "multi": {"film": ("the film {n}",), "book": ("the book {n}",), "album": ("the album {n}",),
              "band": ("the band {n}",)},
    "wiki2": {"film": ("film {n}",), "book": ("the book {n}",), "album": ("the album {n}",),
              "band": ("the band {n}",)},
}

# ----------------------------------------------------------------------------------------------
# Passage text: fact sentences per type, neutral fillers, mention events
# ----------------------------------------------------------------------------------------------

_FILLERS = {
    "person": ["{s} was known among colleagues for a patient and methodical manner.",
               "Several of {pos} letters are preserved in private collections.",
               "{s} gave many public talks over the course of {pos} career.",
               "Biographers describe {pos} working habits as disciplined and steady.",
               "{s} avoided publicity and rarely granted interviews.",
               "A number of portraits of {objp} survive in regional archives.",
               "{s} is often cited by younger generations as an influence.",
               "Friends remembered {objp} as generous, curious and stubborn.",
               "{p} notebooks were later edited and published by admirers.",
               "{s} spent long periods travelling for work.",
               "Contemporaries disagreed sharply about the value of {pos} achievements.",
               "{s} kept a modest household and a small circle of close friends.",
               "Later accounts of {pos} life rely heavily on family recollections.",
               "{s} received several minor honours late in life."],
    "city": ["{s} is known for its old market square and narrow streets.",
             "The local economy depends on trade, crafts and small workshops.",
             "A river crossing made the site important for early travellers.",
             "{s} hosts a weekly market that draws visitors from nearby villages.",
             "Its historic centre contains several well preserved stone houses.",
             "Public gardens line the main avenue leading to the old quarter.",
             "The town walls were partly demolished to make room for new roads.",
             "{s} suffered repeated floods before embankments were built.",
             "Its cathedral bell tower can be seen from far across the plain.",
             "The population grew quickly once a railway line reached the area.",
             "Fishing and boat building were once its main sources of income.",
             "{s} is twinned with several towns abroad."],
    "country": ["{s} is divided into several administrative provinces.",
                "Its landscape ranges from coastal plains to high wooded hills.",
                "Agriculture and trade have long shaped the national economy.",
                "The national flag shows three horizontal bands of colour.",
                "Its parliament meets in a building completed after a long restoration.",
                "Seasonal festivals mark the end of the harvest in many regions.",
                "{s} has a long tradition of choral singing.",
                "Mountain passes in the north were once important trade routes.",
                "The national currency was reformed more than once.",
                "Its road network expanded greatly during the last century.",
                "{s} maintains embassies in many foreign capitals.",
                "Several regional dialects are spoken in remote valleys."],
    "university": ["{s} is organised into several faculties and research centres.",
                   "Its library holds a large collection of rare manuscripts.",
                   "The main campus is known for its tree lined courtyards.",
                   "{s} admits students from many countries each year.",
                   "The institution runs an evening programme for adult learners.",
                   "Its rowing club and debating society are among the oldest student groups.",
                   "The observatory on its roof is open to visitors on certain nights.",
                   "{s} awards a number of scholarships every year.",
                   "Its botanical garden is used for teaching and research.",
                   "Student numbers rose sharply after a period of expansion.",
                   "The institution publishes its own academic journal.",
                   "Several of its buildings are protected as historic monuments."],
    "company": ["{s} employs staff in several regional offices.",
                "The firm has changed ownership more than once.",
                "{s} is privately held and publishes few financial details.",
                "Its logo was redesigned during a period of expansion.",
                "The company sponsors a modest programme of community events.",
                "Analysts describe its growth as slow but steady.",
                "{s} weathered a difficult period of losses before recovering.",
                "Its annual report is known for unusually frank commentary.",
                "The firm trains apprentices in a small workshop of its own.",
                "{s} has been involved in several long legal disputes.",
                "Its early premises were a pair of rented rooms.",
                "The company keeps an archive of its own history."],
    "film": ["The film received mixed reviews on its initial release.",
             "Critics praised its photography and its pacing.",
             "It was later restored and screened at several retrospectives.",
             "The film has since developed a small but devoted following.",
             "Audiences responded warmly to its ending.",
             "Several scenes were shot on location over a long summer.",
             "Its opening sequence is often discussed by critics.",
             "The film was a modest success at the box office.",
             "A restored print was released some decades later.",
             "The cast rehearsed for several weeks before shooting began.",
             "Some scenes were cut before release to shorten the running time.",
             "The film was dubbed into a number of languages."],
    "book": ["The book was reprinted several times after its first edition.",
             "Reviewers admired its careful structure and clear prose.",
             "It has been translated into a number of languages.",
             "Some readers found its ending abrupt, others found it fitting.",
             "The work is still taught in some literature courses.",
             "A later edition added a foreword and a short glossary.",
             "The manuscript went through several drafts.",
             "Its title was changed shortly before printing.",
             "The first edition is now sought after by collectors.",
             "The book sold slowly at first but found readers over time.",
             "Several chapters first appeared in a magazine.",
             "It was adapted for radio in a shortened form."],
    "band": ["The band toured widely during its most active years.",
             "{s} has gone through several changes of line-up.",
             "Its concerts were known for long improvised passages.",
             "The group has kept a loyal audience in its home region.",
             "Members of the band have also pursued side projects.",
             "{s} rarely gave interviews, preferring to let the music speak.",
             "The group took a long break before returning to the stage.",
             "Its early recordings were made in a converted garage.",
             "{s} is known for its elaborate stage lighting.",
             "The band has played at many open air festivals.",
             "Fans followed the group from town to town.",
             "A documentary about the band was made for television."],
    "album": ["The album was recorded over several weeks.",
              "Reviewers singled out its opening track for praise.",
              "It was reissued with additional recordings some years later.",
              "The cover artwork became widely recognised.",
              "Several of its songs became staples of the band's concerts.",
              "The record sold modestly at first but gained attention over time.",
              "It was recorded mostly live, with few overdubs.",
              "A single from the album received regular radio play.",
              "The sleeve notes were written by a close friend of the band.",
              "Its closing track runs for more than ten minutes.",
              "The album was mixed twice before its release.",
              "Critics were divided about its slower second half."],
}
_REF = {"city": "The city", "country": "The country", "university": "The university", "company": "The company",
        "film": "The film", "book": "The book", "band": "The band", "album": "The album"}
_SECTION_TITLES = {"person": "early life", "city": "history", "country": "history", "university": "history",
                   "company": "history", "film": "production", "book": "publication", "band": "history",
                   "album": "release"}

_MENTION_EVENTS = [
    ("{year} {w} Festival", "The {year} {w} Festival was held in {city}.",
     "Its programme looked back on the work and careers of {names}."),
    ("{w} Prize ({year})", "The {w} Prize of {year} drew a long list of nominations.",
     "Among the names discussed by the jury were {names}."),
    ("List of {w} honorees", "This list gathers people and works honoured by the {w} Foundation.",
     "Entries include {names}."),
    ("{year} {w} Exhibition", "The {year} {w} Exhibition opened in {city} in the spring.",
     "Its displays referred to {names}."),
    ("{w} Society yearbook", "The {w} Society publishes a yearbook on culture and public life.",
     "Recent volumes have carried short notes on {names}."),
    ("{year} {w} Symposium", "The {year} {w} Symposium brought speakers together in {city}.",
     "Sessions touched on {names}."),
    ("{w} Gala ({year})", "The {w} Gala of {year} took place in {city}.",
     "Tributes were paid to {names}."),
    ("{w} Archive collection", "The {w} Archive collects clippings, programmes and photographs.",
     "Its catalogue holds material connected with {names}."),
]
_MENTION_FILLERS = ["Attendance was reported to be higher than in previous years.",
                    "Organisers announced plans to extend the event.",
                    "Local newspapers covered the occasion in some detail.",
                    "The proceedings were later summarised in a short booklet.",
                    "Volunteers handled most of the practical arrangements.",
                    "A few of the planned items had to be postponed.",
                    "Admission was free for students and pensioners.",
                    "The selection was criticised by some commentators as too cautious.",
                    "A recording of the closing session was broadcast regionally."]


@dataclass
class _Sent:
    """A sentence template, the relations it states, and its values ({s}/{p}/{pos}/{objp}/{n} added later)."""

    template: str
    rels: tuple[str, ...]
    values: dict


# ----------------------------------------------------------------------------------------------
# Generation of the entities
# ----------------------------------------------------------------------------------------------

class _Namer:
    """Pronounceable, unique fictional words and names from syllable pools."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.words: set[str] = set()       # every fictional root handed out (lowercase)
        self.names: set[str] = set()       # every entity name handed out (lowercase)

    def _syllable(self) -> str:
        r = self.rng
        return r.choice(_ONSETS) + r.choice(_VOWELS) + r.choice(_CODAS)

    def word(self, syllables: int = 2, suffixes: list[str] | None = None, unique: bool = True) -> str:
        while True:
            w = "".join(self._syllable() for _ in range(syllables))
            if suffixes:
                w += self.rng.choice(suffixes)
            w = w.capitalize()
            if len(w) < 4 or len(w) > 14:
                continue
            if not unique or w.lower() not in self.words:
                self.words.add(w.lower())
                return w

    def first_name(self, gender: str) -> str:
        w = self._syllable() + (self._syllable() if self.rng.random() < 0.5 else "")
        w += self.rng.choice(_MALE_ENDINGS if gender == "m" else _FEMALE_ENDINGS)
        return w.capitalize() if len(w) >= 3 else self.first_name(gender)

    def claim(self, make: Callable[[], str]) -> str:
        """Call ``make`` until it returns a name not used yet (case-insensitively)."""
        for _ in range(1000):
            name = make()
            if name.lower() not in self.names:
                self.names.add(name.lower())
                return name
        raise RuntimeError("could not find a fresh name; the syllable pools are exhausted")


def _type_counts(n: int) -> dict[str, int]:
    counts = {t: max(TYPE_MINIMUM[t], round(share * n)) for t, share in TYPE_SHARES.items() if t != "person"}
    counts["person"] = n - sum(counts.values())
    if counts["person"] < TYPE_MINIMUM["person"]:
        raise ValueError(f"world.n_entities={n} is too small to hold every entity type")
    return {t: counts[t] for t in TYPE_SHARES}


class _Builder:
    """Builds entities with consistent facts (dates, families, roles)."""

    def __init__(self, cfg: WorldConfig):
        self.cfg = cfg
        self.rng = random.Random(f"{cfg.seed}:entities")
        self.namer = _Namer(self.rng)
        self.entities: list[Entity] = []
        self.by_type: dict[str, list[int]] = {t: [] for t in TYPE_SHARES}

    def new(self, etype: str) -> Entity:
        e = Entity(idx=len(self.entities), type=etype)
        self.entities.append(e)
        self.by_type[etype].append(e.idx)
        return e

    def title(self, forms: list[str]) -> str:
        r = self.rng
        noun = r.choice(_NOUNS)
        return r.choice(forms).format(A=r.choice(_ADJECTIVES), N=noun, Ns=_plural(noun), N2=r.choice(_NOUNS),
                                      F=self.namer.word(r.choice((2, 2, 3))))

    def make_entities(self) -> list[Entity]:
        counts = _type_counts(self.cfg.n_entities)
        r, E = self.rng, self.entities
        namer = self.namer
        # countries, each with its own language and year of independence
        for _ in range(counts["country"]):
            c = self.new("country")
            c.name = namer.claim(lambda: namer.word(r.choice((1, 2)), _COUNTRY_SUFFIXES) if r.random() < 0.7
                                 else namer.word(3))
            c.attrs["language"] = namer.word(2, _LANGUAGE_SUFFIXES)
            c.attrs["independence"] = r.randint(1650, 1990)
        countries = self.by_type["country"]
        # cities: every country gets one (its capital), the rest spread at random
        for k in range(counts["city"]):
            c = self.new("city")
            c.name = namer.claim(lambda: namer.word(2, _CITY_SUFFIXES) if r.random() < 0.4
                                 else namer.word(r.choice((2, 3))))
            country = countries[k] if k < len(countries) else r.choice(countries)
            c.attrs["country"] = country
            c.attrs["founded"] = r.randint(700, 1820)
            if k < len(countries):
                E[country].attrs["capital"] = c.idx
        cities = self.by_type["city"]
        for _ in range(counts["university"]):
            u = self.new("university")
            u.name = namer.claim(lambda: r.choice(_UNIVERSITY_FORMS).format(w=namer.word(r.choice((2, 3)))))
            u.attrs["location"] = r.choice(cities)
            u.attrs["founded"] = r.randint(1450, 1960)
        self._persons(counts["person"])
        self._works(counts)
        return E

    # -- persons: dates first, then families, then names (children inherit the father's surname)
    def _persons(self, n: int) -> None:
        r, E = self.rng, self.entities
        years = sorted(r.randint(1830, 1995) for _ in range(n))
        people = []
        for by in years:
            p = self.new("person")
            p.gender = r.choice("mf")
            p.attrs["birth_year"] = by
            people.append(p)
        # occupations, honouring the birth years a role needs; every role gets at least one holder
        occs, weights = list(_OCCUPATION_WEIGHTS), list(_OCCUPATION_WEIGHTS.values())
        for p in people:
            while True:
                occ = r.choices(occs, weights)[0]
                if p.attrs["birth_year"] >= _ROLE_OCCUPATIONS.get(occ, 0):
                    break
            p.attrs["occupation"] = occ
        for occ, earliest in _ROLE_OCCUPATIONS.items():
            if not any(p.attrs["occupation"] == occ for p in people):
                fit = [p for p in people if p.attrs["birth_year"] >= max(earliest, 1900)]
                r.choice(fit or people).attrs["occupation"] = occ
        cities, unis = self.by_type["city"], self.by_type["university"]
        for p in people:
            by = p.attrs["birth_year"]
            if p.attrs["occupation"] == "athlete":
                p.attrs["sport"] = r.choice(_SPORTS)
            if r.random() < 0.65:
                p.attrs["religion"] = r.choice(_RELIGIONS)
            for _ in range(20):
                city = r.choice(cities)
                if E[city].attrs["founded"] < by:
                    break
            p.attrs["birthplace"] = city
            p.attrs["nationality"] = E[city].attrs["country"]
            if r.random() < 0.7:
                for _ in range(10):
                    u = r.choice(unis)
                    if E[u].attrs["founded"] <= by + 17:
                        p.attrs["alma_mater"] = u
                        break
        # marriages: men and women born within 8 years of each other
        women_by_year: dict[int, list[Entity]] = {}
        for p in people:
            if p.gender == "f":
                women_by_year.setdefault(p.attrs["birth_year"], []).append(p)
        men = [p for p in people if p.gender == "m"]
        r.shuffle(men)
        couples = []
        for m in men:
            if r.random() > 0.7:
                continue
            for _ in range(6):
                pool = women_by_year.get(m.attrs["birth_year"] + r.randint(-8, 6))
                if pool:
                    w = pool.pop(r.randrange(len(pool)))
                    m.attrs["spouse"], w.attrs["spouse"] = w.idx, m.idx
                    couples.append((m.attrs["birth_year"], m.idx, w.idx))
                    break
        couples.sort()
        husband_years = [c[0] for c in couples]
        # parents: a couple whose husband is 20-48 and wife 18-44 years older than the child
        for p in people:
            by = p.attrs["birth_year"]
            if r.random() > 0.75:
                continue
            lo, hi = bisect.bisect_left(husband_years, by - 48), bisect.bisect_right(husband_years, by - 20)
            if lo >= hi:
                continue
            for _ in range(5):
                _, father, mother = couples[r.randrange(lo, hi)]
                spouse = p.attrs.get("spouse")
                sibling_marriage = spouse is not None and E[spouse].attrs.get("father") == father
                if 18 <= by - E[mother].attrs["birth_year"] <= 44 and not sibling_marriage:
                    p.attrs["father"], p.attrs["mother"] = father, mother
                    break
        # names, in birth order so that fathers are named before their children
        namer = self.namer
        for p in people:
            father = p.attrs.get("father")
            surname = E[father].name.split(" ", 1)[1] if father is not None else namer.word(r.choice((2, 2, 3)))
            p.name = namer.claim(lambda: f"{namer.first_name(p.gender)} {surname}")

    def _pick(self, pool: list[int], ok: Callable[[Entity], bool], tries: int = 12) -> int | None:
        for _ in range(tries):
            cand = self.rng.choice(pool)
            if ok(self.entities[cand]):
                return cand
        return None

    # -- organisations and works, each tied to people whose dates fit
    def _works(self, counts: dict[str, int]) -> None:
        r, E, namer = self.rng, self.entities, self.namer
        people = self.by_type["person"]
        cities = self.by_type["city"]
        holders: dict[str, list[int]] = {}
        for i in people:
            holders.setdefault(E[i].attrs["occupation"], []).append(i)
        industries, iweights = list(_INDUSTRY_WEIGHTS), list(_INDUSTRY_WEIGHTS.values())
        for k in range(counts["company"]):
            c = self.new("company")
            industry = industries[k] if k < 3 else r.choices(industries, iweights)[0]
            c.attrs["industry"] = industry
            c.name = namer.claim(lambda: f"{namer.word(r.choice((2, 3)))} {r.choice(_COMPANY_SUFFIXES[industry])}")
            founder = self._pick(holders["entrepreneur"], lambda p: p.attrs["birth_year"] <= 1995)
            start = 1800
            if founder is not None:
                c.attrs["founder"] = founder
                start = E[founder].attrs["birth_year"] + r.randint(22, 60)
            c.attrs["founded"] = min(start, 2022)
            hq = self._pick(cities, lambda x: x.attrs["founded"] < c.attrs["founded"])
            c.attrs["headquarters"] = hq if hq is not None else r.choice(cities)
        companies = {ind: [i for i in self.by_type["company"] if E[i].attrs["industry"] == ind] for ind in industries}

        def born_between(lo: int, hi: int) -> Callable[[Entity], bool]:
            return lambda p: lo <= p.attrs["birth_year"] <= hi

        for _ in range(counts["film"]):
            f = self.new("film")
            f.name = namer.claim(lambda: self.title(_FILM_TITLES))
            d = E[r.choice(holders["film director"])]
            by = d.attrs["birth_year"]
            year = r.randint(max(by + 25, 1905), max(min(by + 70, 2023), max(by + 25, 1905)))
            f.attrs.update(director=d.idx, release_year=year, genre=r.choice(_FILM_GENRES))
            sw = self._pick(holders["screenwriter"], born_between(year - 85, year - 20))
            if sw is not None and sw != d.idx:
                f.attrs["screenwriter"] = sw
            if r.random() < 0.8:
                comp = self._pick(holders["composer"], born_between(year - 85, year - 20))
                if comp is not None:
                    f.attrs["composer"] = comp
            prod = self._pick(companies["film production"], lambda c: c.attrs["founded"] <= year)
            if prod is not None:
                f.attrs["producer"] = prod
        writers = holders["novelist"] + holders["poet"]
        for _ in range(counts["book"]):
            b = self.new("book")
            b.name = namer.claim(lambda: self.title(_BOOK_TITLES))
            a = E[r.choice(writers)]
            year = min(a.attrs["birth_year"] + r.randint(22, 75), 2023)
            poet = a.attrs["occupation"] == "poet" and r.random() < 0.8
            b.attrs.update(author=a.idx, publication_year=year, genre="poetry" if poet else r.choice(_BOOK_GENRES))
            pub = self._pick(companies["publishing"], lambda c: c.attrs["founded"] <= year)
            if pub is not None:
                b.attrs["publisher"] = pub
        for _ in range(counts["band"]):
            b = self.new("band")
            b.name = namer.claim(lambda: self.title(_BAND_NAMES))
            founder = E[r.choice(holders["musician"])]
            b.attrs.update(founder=founder.idx, origin=r.choice(cities), genre=r.choice(_MUSIC_GENRES),
                           founded=min(founder.attrs["birth_year"] + r.randint(17, 40), 2020))
        bands = self.by_type["band"]
        for _ in range(counts["album"]):
            a = self.new("album")
            a.name = namer.claim(lambda: self.title(_ALBUM_TITLES))
            band = E[r.choice(bands)]
            year = min(band.attrs["founded"] + r.randint(0, 25), 2024)
            genre = band.attrs["genre"] if r.random() < 0.75 else r.choice(_MUSIC_GENRES)
            a.attrs.update(performer=band.idx, release_year=year, genre=genre)
            label = self._pick(companies["music recording"], lambda c: c.attrs["founded"] <= year)
            if label is not None:
                a.attrs["label"] = label


# ----------------------------------------------------------------------------------------------
# Generation of the passages
# ----------------------------------------------------------------------------------------------

class _Writer:
    """Turns entities into passages (one main passage, sometimes a section) and adds mention passages."""

    def __init__(self, cfg: WorldConfig, entities: list[Entity]):
        self.cfg = cfg
        self.entities = entities
        self.rng = random.Random(f"{cfg.seed}:passages")
        self.passages: list[Passage] = []

    def n(self, idx: int) -> str:
        return self.entities[idx].name

    def add(self, title: str, text: str, kind: str, entity: int | None) -> Passage:
        p = Passage(id=str(len(self.passages)), title=title, text=text, kind=kind, entity=entity)
        self.passages.append(p)
        return p

    # -- fact sentences, split into (primary, secondary) per type
    def sentences(self, e: Entity) -> tuple[list[_Sent], list[_Sent]]:
        r, a, n = self.rng, e.attrs, self.n
        S = _Sent
        if e.type == "person":
            by, occ = a["birth_year"], a["occupation"]
            verb = "was" if by < 1935 else "is"
            v = dict(by=by, occ=occ, art=_article(occ), nat=n(a["nationality"]), verb=verb)
            lead = r.choice(["{n} (born {by}) {verb} {art} {occ} from {nat}.",
                             "{n} {verb} {art} {occ} from {nat}, born in {by}.",
                             "Born in {by}, {n} {verb} {art} {occ} and a citizen of {nat}."])
            prim = [S(lead, ("birth_year", "occupation", "nationality"), v)]
            if "sport" in a:
                prim.append(S(r.choice(["{s} competed in {o} at the national level.",
                                        "{p} chosen sport was {o}.",
                                        "{s} built {pos} sporting career in {o}."]), ("sport",), dict(o=a["sport"])))
            if "spouse" in a:
                prim.append(S(r.choice(["{s} married {o}.", "{p} spouse was {o}.", "{s} was married to {o}."]),
                              ("spouse",), dict(o=n(a["spouse"]))))
            sec = [S(r.choice(["{s} was born in {o}.", "{p} birthplace was the city of {o}.",
                               "{s} was born and raised in {o}."]), ("birthplace",), dict(o=n(a["birthplace"])))]
            if "father" in a:
                sec.append(S(r.choice(["{p} father was {f} and {pos} mother was {m}.",
                                       "{s} was born to {f}, {pos} father, and {m}, {pos} mother.",
                                       "{p} parents were {f} (father) and {m} (mother)."]),
                             ("father", "mother"), dict(f=n(a["father"]), m=n(a["mother"]))))
            if "alma_mater" in a:
                sec.append(S(r.choice(["{s} studied at {o}.", "{s} graduated from {o}.",
                                       "{s} received {pos} education at {o}."]), ("alma_mater",),
                             dict(o=n(a["alma_mater"]))))
            if "religion" in a:
                sec.append(S(r.choice(["{s} was an adherent of {o}.", "{p} religion was {o}.",
                                       "{s} followed {o} throughout {pos} life."]), ("religion",), dict(o=a["religion"])))
            return prim, sec
        if e.type == "city":
            v = dict(c=n(a["country"]))
            prim = [S(r.choice(["{n} is a city in {c}.", "{n} is a town located in {c}.", "{n} is a city of {c}."]),
                      ("country",), v)]
            if self.entities[a["country"]].attrs.get("capital") == e.idx:
                prim.append(S("{s} is the capital of {c}.", (), v))
            sec = [S(r.choice(["{s} was founded in {y}.", "Historians date the founding of {n} to {y}.",
                               "{s} received its charter in {y}, the year it was founded."]), ("founded",),
                     dict(y=a["founded"]))]
            return prim, sec
        if e.type == "country":
            prim = [S(r.choice(["{n} is a country whose capital is {c}.",
                                "{n} is a sovereign state; its capital and largest city is {c}."]),
                      ("capital",), dict(c=n(a["capital"]))),
                    S(r.choice(["The official language of {n} is {l}.", "{s} has {l} as its official language."]),
                      ("language",), dict(l=a["language"]))]
            sec = [S(r.choice(["{s} became independent in {y}.", "{n} gained independence in {y}."]),
                     ("independence",), dict(y=a["independence"]))]
            return prim, sec
        if e.type == "university":
            prim = [S(r.choice(["{n} is a university in {c}.", "{n} is a public research university located in {c}."]),
                      ("location",), dict(c=n(a["location"])))]
            sec = [S(r.choice(["{s} was established in {y}.", "{n} was founded in {y}."]), ("founded",),
                     dict(y=a["founded"]))]
            return prim, sec
        if e.type == "company":
            ind = a["industry"]
            prim = [S(r.choice(["{n} is {art} {ind} company headquartered in {c}.",
                                "{n} is {art} {ind} firm based in {c}, where it has its headquarters."]),
                      ("headquarters",), dict(ind=ind, art=_article(ind), c=n(a["headquarters"])))]
            if "founder" in a:
                sec = [S(r.choice(["{s} was founded by {f} in {y}.", "{f} founded {n} in {y}."]),
                         ("founder", "founded"), dict(f=n(a["founder"]), y=a["founded"]))]
            else:
                sec = [S("{s} was founded in {y}.", ("founded",), dict(y=a["founded"]))]
            return prim, sec
        if e.type == "film":
            g = a["genre"]
            prim = [S(r.choice(["{n} is a {y} {g} film directed by {d}.",
                                "{n} is {art} {g} film released in {y} and directed by {d}."]),
                      ("release_year", "genre", "director"), dict(y=a["release_year"], g=g, art=_article(g),
                                                                  d=n(a["director"])))]
            sec = []
            if "screenwriter" in a:
                sec.append(S(r.choice(["The screenplay was written by {o}.", "{o} wrote the screenplay."]),
                             ("screenwriter",), dict(o=n(a["screenwriter"]))))
            if "producer" in a:
                sec.append(S(r.choice(["{s} was produced by {o}.", "{o} produced the film."]), ("producer",),
                             dict(o=n(a["producer"]))))
            if "composer" in a:
                sec.append(S(r.choice(["The music was composed by {o}.", "{o} composed the score."]),
                             ("composer",), dict(o=n(a["composer"]))))
            return prim, sec
        if e.type == "book":
            prim = [S(r.choice(["{n} is a book by {au}; it belongs to the {g} genre.",
                                "{n} is a work of {g} written by {au}."]),
                      ("author", "genre"), dict(au=n(a["author"]), g=a["genre"]))]
            if "publisher" in a:
                sec = [S(r.choice(["{s} was first published in {y} by {pb}.", "{pb} first published {n} in {y}."]),
                         ("publication_year", "publisher"), dict(y=a["publication_year"], pb=n(a["publisher"])))]
            else:
                sec = [S("{s} was first published in {y}.", ("publication_year",), dict(y=a["publication_year"]))]
            return prim, sec
        if e.type == "band":
            g = a["genre"]
            prim = [S(r.choice(["{n} is {art} {g} band formed in {c}.", "{n} is {art} {g} group from {c}."]),
                      ("origin", "genre"), dict(g=g, art=_article(g), c=n(a["origin"])))]
            sec = [S(r.choice(["{s} was founded by {f} in {y}.", "{f} formed {n} in {y}."]),
                     ("founder", "founded"), dict(f=n(a["founder"]), y=a["founded"]))]
            return prim, sec
        if e.type == "album":
            g = a["genre"]
            prim = [S(r.choice(["{n} is {art} {g} album by {b}, released in {y}.",
                                "{n} is the {y} album of {b}, a record in the {g} style."]),
                      ("performer", "release_year", "genre"), dict(g=g, art=_article(g), b=n(a["performer"]),
                                                                   y=a["release_year"]))]
            sec = []
            if "label" in a:
                sec = [S(r.choice(["{s} was released on the {o} label.", "{o} issued the album."]), ("label",),
                         dict(o=n(a["label"])))]
            return prim, sec
        raise AssertionError(e.type)

    def render(self, e: Entity, sents: list[_Sent], n_words: tuple[int, int], fillers: list[_Sent]) -> str:
        """Interleave fact sentences with neutral fillers until the text reaches a random target length
        within [MIN_WORDS, MAX_WORDS]; the first sentence names the subject, later ones use its name or
        a pronoun. Fillers used are popped from ``fillers`` (shared by an entity's passages, so no
        filler repeats between its main passage and its section)."""
        r = self.rng
        refs = [True] + [r.random() < 0.4 for _ in range(len(sents) + len(fillers))]   # name or pronoun
        order = list(sents)
        text = self._fill(e, order, refs)
        target = r.randint(*n_words)
        while len(text.split()) < max(target, MIN_WORDS) and fillers:
            longer_order = list(order)
            longer_order.insert(r.randint(1, len(order)), fillers.pop())
            longer = self._fill(e, longer_order, refs)
            if len(longer.split()) > MAX_WORDS:
                continue                                  # try a shorter filler
            order, text = longer_order, longer
        return text

    @staticmethod
    def _fill(e: Entity, order: list[_Sent], refs: list[bool]) -> str:
        if e.type == "person":
            pron = ("He", "His", "his", "him") if e.gender == "m" else ("She", "Her", "her", "her")
        else:
            ref = _REF[e.type]
            pron = (ref, ref + "'s", "its", "it")
        out = []
        for s, use_name in zip(order, refs):
            subj, poss = (e.name, e.name + "'s") if use_name else pron[:2]
            out.append(s.template.format(**s.values, n=e.name, s=subj, p=poss, pos=pron[2], objp=pron[3]))
        return " ".join(out)

    def entity_passages(self) -> None:
        r = self.rng
        for e in tqdm(self.entities, desc="world: entity passages", unit="entity", mininterval=2):
            prim, sec = self.sentences(e)
            fillers = [_Sent(f, (), {}) for f in _FILLERS[e.type]]
            r.shuffle(fillers)
            count = lambda ss: sum(len(s.template.split()) + 2 * len(s.values) for s in ss)  # rough length
            split = bool(sec) and (r.random() < SECOND_PASSAGE_SHARE or count(prim) + count(sec) > 62)
            main_sents = prim if split else prim + sec
            main = self.add(e.name, self.render(e, main_sents, (45, 75), fillers), "main", e.idx)
            for s in main_sents:
                for rel in s.rels:
                    e.where[rel] = main.id
            if split:
                title = f"{e.name} ({_SECTION_TITLES[e.type]})"
                section = self.add(title, self.render(e, sec, (42, 65), fillers), "section", e.idx)
                for s in sec:
                    for rel in s.rels:
                        e.where[rel] = section.id

    def mention_passages(self) -> None:
        """Distractors: events and lists that name 3-5 entities in passing (Zipf popularity)."""
        r, E = self.rng, self.entities
        n_mentions = round(self.cfg.mentions_per_entity * len(E))
        ranking = list(range(len(E)))
        r.shuffle(ranking)
        cum, total = [], 0.0
        for rank in range(len(E)):
            total += 1.0 / (rank + 1) ** POPULARITY_EXPONENT
            cum.append(total)
        cities = [e.idx for e in E if e.type == "city"]
        namer = _Namer(random.Random(f"{self.cfg.seed}:mention-words"))
        namer.words = {e.name.split()[0].lower() for e in E}
        for _ in tqdm(range(n_mentions), desc="world: mention passages", unit="passage", mininterval=2):
            k = r.randint(3, 5)
            chosen: list[int] = []
            while len(chosen) < k:
                idx = ranking[bisect.bisect_left(cum, r.random() * total)]
                if idx not in chosen:
                    chosen.append(idx)
            city = r.choice(cities)
            title_t, first, second = r.choice(_MENTION_EVENTS)
            names = [E[i].name for i in chosen]
            v = dict(year=r.randint(1900, 2023), w=namer.word(2, unique=False), city=E[city].name,
                     names=", ".join(names[:-1]) + " and " + names[-1])
            sents = [first.format(**v), second.format(**v)]
            fillers = list(_MENTION_FILLERS)
            r.shuffle(fillers)
            words, target = sum(len(s.split()) for s in sents), r.randint(45, 70)
            while words < target and fillers:
                f = fillers.pop()
                if words + len(f.split()) > MAX_WORDS:
                    break
                sents.append(f)
                words += len(f.split())
            self.add(title_t.format(**v), " ".join(sents), "mention", None)
            for i in chosen + ([city] if "{city}" in first else []):
                E[i].mentions += 1


# ----------------------------------------------------------------------------------------------
# Generation of the questions
# ----------------------------------------------------------------------------------------------

class _Coin:
    """A balanced coin: in every consecutive pair of *accepted* draws one is True and one False."""

    def __init__(self, rng: random.Random):
        self.rng, self.buffer = rng, []

    def peek(self) -> bool:
        if not self.buffer:
            self.buffer = [True, False] if self.rng.random() < 0.5 else [False, True]
        return self.buffer[0]

    def advance(self) -> None:
        self.peek()
        self.buffer.pop(0)


class _LazyShuffle:
    """A random permutation drawn one element at a time (incremental Fisher-Yates), so a kind of
    question only pays for the candidates it actually looks at."""

    def __init__(self, items: list[int], rng: random.Random):
        self.items, self.rng, self.pos = list(items), rng, 0

    def __iter__(self):
        items, rng = self.items, self.rng
        while self.pos < len(items):
            j = rng.randrange(self.pos, len(items))
            items[self.pos], items[j] = items[j], items[self.pos]
            self.pos += 1
            yield items[self.pos - 1]


class _Node:
    """A weighted tree of question kinds; leaves produce questions until they run dry."""

    def __init__(self, weight: float, children: list[_Node] | None = None, kind=None):
        self.weight, self.children, self.kind, self.alive = weight, children or [], kind, True

    def draw(self, rng: random.Random) -> dict | None:
        while self.alive:
            if self.kind is not None:
                out = self.kind.next()
                if out is None:
                    self.alive = False
                return out
            alive = [c for c in self.children if c.alive and c.weight > 0]
            if not alive:
                self.alive = False
                return None
            child = rng.choices(alive, [c.weight for c in alive])[0]
            out = child.draw(rng)
            if out is not None:
                return out
        return None


@dataclass
class _SetCtx:
    dataset: str
    split: str
    style: str
    rng: random.Random
    order_coin: _Coin
    yes_coin: _Coin


class _ChainKind:
    """Questions about one relation chain from one start type; subjects in a chosen order."""

    def __init__(self, qa: _QA, ctx: _SetCtx, start: str, chain: tuple[str, ...], qtype: str, order: str):
        self.qa, self.ctx, self.start, self.chain, self.qtype, self.order = qa, ctx, start, chain, qtype, order
        self.subjects: Iterator[int] | None = None

    def _ordered(self) -> Iterator[int]:
        pool = [i for i in self.qa.by_type[self.start] if self.chain[0] in self.qa.entities[i].attrs]
        r = self.ctx.rng
        if self.order == "popular":      # weighted shuffle (Efraimidis-Spirakis), weight = mentions + 1
            keys = [(-math.log(1.0 - r.random()) / (self.qa.entities[i].mentions + 1), i) for i in pool]
            return iter([i for _, i in sorted(keys)])
        if self.order == "long_tail":    # least mentioned first, ties at random
            keys = [(self.qa.entities[i].mentions, r.random(), i) for i in pool]
            return iter([i for *_, i in sorted(keys)])
        return iter(_LazyShuffle(pool, r))

    def next(self) -> dict | None:
        if self.subjects is None:
            self.subjects = self._ordered()
        for s in self.subjects:
            rec = self.qa.chain_question(self.ctx, s, self.chain, self.qtype)
            if rec is not None:
                return rec
        return None


@dataclass(frozen=True)
class _Cmp:
    type: str
    chain: tuple[str, ...]
    op: str                        # "min" (earlier), "max" (later) or "same" (yes/no)
    templates: tuple[str, ...]     # "{a}" and "{b}" are the two options


_HOTPOT_CMP = [
    _Cmp("person", ("birth_year",), "min", ("Who was born first, {a} or {b}?", "Which person is older, {a} or {b}?")),
    _Cmp("person", ("birth_year",), "max", ("Who was born later, {a} or {b}?", "Who is younger, {a} or {b}?")),
    _Cmp("company", ("founded",), "min", ("Which company was founded first, {a} or {b}?",)),
    _Cmp("university", ("founded",), "min", ("Which university is older, {a} or {b}?",
                                             "Which was established first, {a} or {b}?")),
    _Cmp("band", ("founded",), "min", ("Which band was formed earlier, {a} or {b}?",)),
    _Cmp("film", ("release_year",), "min", ("Which film came out first, {a} or {b}?",)),
    _Cmp("film", ("release_year",), "max", ("Which film was released more recently, {a} or {b}?",)),
    _Cmp("book", ("publication_year",), "min", ("Which book was published earlier, {a} or {b}?",)),
    _Cmp("city", ("founded",), "min", ("Which city was founded first, {a} or {b}?",)),
    _Cmp("person", ("nationality",), "same", ("Are {a} and {b} from the same country?",
                                              "Do {a} and {b} share the same nationality?")),
    _Cmp("city", ("country",), "same", ("Are {a} and {b} located in the same country?",)),
    _Cmp("person", ("sport",), "same", ("Do {a} and {b} compete in the same sport?",)),
    _Cmp("band", ("genre",), "same", ("Do {a} and {b} play the same genre of music?",)),
]
_WIKI2_CMP = [
    _Cmp("person", ("birth_year",), "min", ("Who was born first, {a} or {b}?",)),
    _Cmp("person", ("birth_year",), "max", ("Who was born later, {a} or {b}?",)),
    _Cmp("film", ("release_year",), "min", ("Which film came out first, {a} or {b}?",)),
    _Cmp("film", ("release_year",), "max", ("Which film came out later, {a} or {b}?",)),
    _Cmp("person", ("nationality",), "same", ("Are {a} and {b} of the same nationality?",
                                              "Are both {a} and {b} from the same country?")),
    _Cmp("film", ("genre",), "same", ("Are {a} and {b} films of the same genre?",)),
]
_WIKI2_BRIDGE_CMP = [
    _Cmp("film", ("director", "birth_year"), "min", ("Which film has the director born first, {a} or {b}?",
                                                     "Which film's director was born earlier, {a} or {b}?")),
    _Cmp("film", ("director", "birth_year"), "max", ("Which film has the director who was born later, {a} or {b}?",)),
    _Cmp("book", ("author", "birth_year"), "min", ("Which book's author was born first, {a} or {b}?",)),
    _Cmp("person", ("father", "birth_year"), "min", ("Whose father was born first, {a} or {b}?",)),
    _Cmp("album", ("performer", "founded"), "min", ("Which album's band was formed earlier, {a} or {b}?",)),
    _Cmp("film", ("director", "nationality"), "same", ("Are the directors of films {a} and {b} from the same country?",
                                                       "Do the directors of {a} and {b} share a nationality?")),
    _Cmp("book", ("author", "nationality"), "same", ("Are the authors of {a} and {b} from the same country?",)),
]


class _CmpKind:
    """Comparison questions of one spec: random pairs, answer order and yes/no balanced by coins."""

    ATTEMPTS = 200

    def __init__(self, qa: _QA, ctx: _SetCtx, spec: _Cmp, qtype: str):
        self.qa, self.ctx, self.spec, self.qtype = qa, ctx, spec, qtype
        self.values: dict[int, object] | None = None
        self.groups: dict[object, list[int]] = {}

    def _prepare(self) -> None:
        self.values = {}
        for i in self.qa.by_type[self.spec.type]:
            hops = self.qa.resolve(i, self.spec.chain)
            if hops is not None:
                self.values[i] = hops[-1][2]
                self.groups.setdefault(hops[-1][2], []).append(i)
        self.subjects = list(self.values)

    def next(self) -> dict | None:
        if self.values is None:
            self._prepare()
        r, spec, values = self.ctx.rng, self.spec, self.values
        if len(self.subjects) < 2:
            return None
        for _ in range(self.ATTEMPTS):
            a = r.choice(self.subjects)
            if spec.op == "same":
                want_yes = self.ctx.yes_coin.peek()
                if want_yes:
                    group = self.groups[values[a]]
                    if len(group) < 2:
                        continue
                    b = r.choice(group)
                else:
                    b = r.choice(self.subjects)
                    if values[b] == values[a]:
                        continue
                if a == b:
                    continue
                answer = "yes" if values[a] == values[b] else "no"
                first, second = a, b
            else:
                b = r.choice(self.subjects)
                if a == b or values[a] == values[b]:
                    continue
                win = min((a, b), key=values.get) if spec.op == "min" else max((a, b), key=values.get)
                lose = b if win == a else a
                first, second = (win, lose) if self.ctx.order_coin.peek() else (lose, win)
                answer = self.qa.entities[win].name
            rec = self.qa.compare_question(self.ctx, spec, first, second, answer, self.qtype)
            if rec is not None:
                (self.ctx.yes_coin if spec.op == "same" else self.ctx.order_coin).advance()
                return rec
        return None


def _paths(length: int) -> dict[str, list[tuple[str, ...]]]:
    """All relation chains of ``length`` hops over the schema, grouped by start type; every hop but the
    last goes to an entity. Chains that undo themselves or give the answer away are left out."""
    out: dict[str, list[tuple[str, ...]]] = {}

    def walk(etype: str, chain: tuple[str, ...], start: str) -> None:
        for (t, rel), spec in REL.items():
            if t != etype:
                continue
            if chain and ((chain[-1], rel) in _SILLY_PAIRS or (chain[-1] in _ROLE_RELS and rel == "occupation")):
                continue
            new = chain + (rel,)
            if len(new) == length:
                out.setdefault(start, []).append(new)
            elif spec.obj in _ENTITY_TYPES:
                walk(spec.obj, new, start)

    for t in _ENTITY_TYPES:
        walk(t, (), t)
    return out


class _QA:
    """Makes all question sets of a world, keeping them disjoint and non-guessable."""

    def __init__(self, cfg: WorldConfig, entities: list[Entity]):
        self.cfg, self.entities = cfg, entities
        self.by_type: dict[str, list[int]] = {t: [] for t in _ENTITY_TYPES}
        for e in entities:
            self.by_type[e.type].append(e.idx)
        self.used_keys: set = set()
        self.used_questions: set[str] = set()

    # -- facts
    def resolve(self, s: int, chain: tuple[str, ...]) -> list[tuple[int, str, object]] | None:
        """Follow ``chain`` from entity ``s``: ``[(subject, relation, value), ...]``, or None when a link
        is missing or the chain visits an entity twice."""
        hops, cur, seen = [], s, [s]
        for k, rel in enumerate(chain):
            e = self.entities[cur]
            if rel not in e.attrs:
                return None
            value = e.attrs[rel]
            hops.append((cur, rel, value))
            if REL[(e.type, rel)].obj in _ENTITY_TYPES:
                if value in seen:
                    return None
                seen.append(value)
                cur = value
            elif k != len(chain) - 1:
                return None
        return hops

    def surface(self, subject: int, rel: str, value) -> str:
        return self.entities[value].name if REL[(self.entities[subject].type, rel)].obj in _ENTITY_TYPES else str(value)

    def hop_dicts(self, hops) -> list[dict]:
        out = []
        for s, rel, value in hops:
            d = {"subject": self.entities[s].name, "relation": rel, "object": self.surface(s, rel, value),
                 "passage_id": self.entities[s].where[rel], "subject_id": self.entities[s].id}
            if REL[(self.entities[s].type, rel)].obj in _ENTITY_TYPES:
                d["object_id"] = self.entities[value].id
            out.append(d)
        return out

    # -- phrasing
    def base_np(self, s: int, style: str, r: random.Random) -> str:
        e = self.entities[s]
        forms = _BASE_NP.get(style, {}).get(e.type, ("{n}",))
        year = e.attrs.get("release_year", "")
        return r.choice(forms).format(n=e.name, occ=e.attrs.get("occupation", ""), year=year)

    def phrase(self, s: int, chain: tuple[str, ...], style: str, r: random.Random, qtype: str) -> str:
        if qtype == "inference":
            q = r.choice(_INFERENCE_ASK).format(rel=_INFERENCE[chain], x=self.base_np(s, style, r))
            return q[0].upper() + q[1:]
        x, etype = self.base_np(s, style, r), self.entities[s].type
        for rel in chain[:-1]:
            spec = REL[(etype, rel)]
            x, etype = r.choice(spec.np).format(x=x), spec.obj
        ask = REL[(etype, chain[-1])].ask
        q = r.choice(ask.get(style) or ask["multi"]).format(x=x)
        if style == "nq":
            return q.lower().rstrip("?")
        return q[0].upper() + q[1:]

    # -- acceptance
    def _fresh(self, question: str) -> bool:
        return _norm(question) not in self.used_questions

    def _register(self, key, question: str) -> None:
        self.used_keys.add(key)
        self.used_questions.add(_norm(question))

    def chain_question(self, ctx: _SetCtx, s: int, chain: tuple[str, ...], qtype: str) -> dict | None:
        key = (s, chain)
        if key in self.used_keys:
            return None
        hops = self.resolve(s, chain)
        if hops is None:
            return None
        last_s, last_rel, value = hops[-1]
        answer = self.surface(last_s, last_rel, value)
        answers = [answer] + _ALIASES.get(answer, [])
        if last_rel == "language":
            answers.append(f"{answer} language")
        for _ in range(4):  # a few phrasings, in case one happens to contain the answer
            question = self.phrase(s, chain, ctx.style, ctx.rng, qtype)
            if any(_norm(a) in _norm(question) for a in answers):
                continue
            if not self._fresh(question):
                continue
            self._register(key, question)
            meta = {"type": qtype, "relation_chain": list(chain), "hops": self.hop_dicts(hops),
                    "subject": self.entities[s].name, "subject_id": self.entities[s].id, "subject_type": self.entities[s].type,
                    "subject_mentions": self.entities[s].mentions,
                    "answer_type": REL[(self.entities[last_s].type, last_rel)].obj}
            if qtype == "inference":
                meta["inferred_relation"] = _INFERENCE[chain]
            if ctx.dataset == "popqa":
                meta["popqa_relation"] = REL[(self.entities[s].type, chain[0])].popqa
            return self._record(question, answers, meta)
        return None

    def compare_question(self, ctx: _SetCtx, spec: _Cmp, a: int, b: int, answer: str, qtype: str) -> dict | None:
        key = ("compare", spec.chain, min(a, b), max(a, b))
        if key in self.used_keys:
            return None
        question = ctx.rng.choice(spec.templates).format(a=self.entities[a].name, b=self.entities[b].name)
        if not self._fresh(question):
            return None
        self._register(key, question)
        hops = self.resolve(a, spec.chain) + self.resolve(b, spec.chain)
        meta = {"type": qtype, "relation_chain": list(spec.chain), "hops": self.hop_dicts(hops),
                "subject": [self.entities[a].name, self.entities[b].name], "subject_id": [self.entities[a].id, self.entities[b].id],
                "subject_type": spec.type, "subject_mentions": [self.entities[a].mentions, self.entities[b].mentions],
                "answer_type": "yes_no" if spec.op == "same" else "option",
                "comparison": {"options": [self.entities[a].name, self.entities[b].name], "operator": spec.op}}
        return self._record(question, [answer], meta)

    @staticmethod
    def _record(question: str, answers: list[str], meta: dict) -> dict:
        sup: list[str] = []
        for h in meta["hops"]:
            if h["passage_id"] not in sup:
                sup.append(h["passage_id"])
        meta["supporting_passage_ids"] = sup
        meta["n_hops"] = len(meta["relation_chain"])
        meta["source"] = "embedded-world"
        return {"id": "", "question": question, "golden_answers": answers, "metadata": meta}

    # -- the sets
    def _single(self, ctx: _SetCtx, order: str, popqa_only: bool = False) -> _Node:
        groups: dict[str, list[_Node]] = {}
        for (t, rel), spec in REL.items():
            if popqa_only and spec.popqa is None:
                continue
            group = spec.popqa if popqa_only else f"{t}.{rel}"
            groups.setdefault(group, []).append(_Node(1, kind=_ChainKind(self, ctx, t, (rel,), "single_hop", order)))
        return _Node(1, [_Node(1, kids) for kids in groups.values()])

    def _chains(self, ctx: _SetCtx, length: int, qtype: str, weight: float, exclude=()) -> _Node:
        groups = []
        for t, chains in _paths(length).items():   # start types weighted by sqrt(their chain count)
            kept = [c for c in chains if c not in exclude]
            if kept:
                groups.append(_Node(math.sqrt(len(kept)), [_Node(1, kind=_ChainKind(self, ctx, t, c, qtype, "uniform"))
                                                          for c in kept]))
        return _Node(weight, groups)

    def _compare(self, ctx: _SetCtx, specs: list[_Cmp], qtype: str, weight: float) -> _Node:
        return _Node(weight, [_Node(1, kind=_CmpKind(self, ctx, s, qtype)) for s in specs])

    def recipe(self, ctx: _SetCtx) -> _Node:
        c = self.cfg.comparison_share
        if ctx.dataset == "nq":
            return self._single(ctx, "popular")
        if ctx.dataset == "triviaqa":
            return self._single(ctx, "popular")
        if ctx.dataset == "popqa":
            return self._single(ctx, "long_tail", popqa_only=True)
        if ctx.dataset == "hotpotqa":
            return _Node(1, [self._chains(ctx, 2, "bridge", 1 - c), self._compare(ctx, _HOTPOT_CMP, "comparison", c)])
        if ctx.dataset == "2wikimultihopqa":
            inference = _Node(0.4 * (1 - c), [_Node(1, kind=_ChainKind(self, ctx, "person", chain, "inference", "uniform"))
                                              for chain in _INFERENCE])
            return _Node(1, [self._chains(ctx, 2, "compositional", 0.6 * (1 - c), exclude=tuple(_INFERENCE)),
                             inference, self._compare(ctx, _WIKI2_CMP, "comparison", c / 2),
                             self._compare(ctx, _WIKI2_BRIDGE_CMP, "bridge_comparison", c / 2)])
        if ctx.dataset == "musique":
            return _Node(1, [self._chains(ctx, k, f"{k}hop", share) for k, share in MUSIQUE_HOPS.items()])
        if ctx.dataset == "bamboogle":
            return self._chains(ctx, 2, "compositional", 1)
        raise AssertionError(ctx.dataset)

    def make_set(self, dataset: str, split: str, n: int) -> list[dict]:
        style = {"nq": "nq", "triviaqa": "trivia", "popqa": "popqa", "2wikimultihopqa": "wiki2"}.get(dataset, "multi")
        rng = random.Random(f"{self.cfg.seed}:qa:{dataset}:{split}")
        ctx = _SetCtx(dataset, split, style, rng, _Coin(rng), _Coin(rng))
        root = self.recipe(ctx)
        # the root's branches get exact quotas (largest remainder) in a shuffled schedule; a branch that
        # runs dry hands its remaining slots to whichever branches still can produce questions
        branches = [c for c in root.children if c.weight > 0]
        total = sum(c.weight for c in branches)
        exact = [n * c.weight / total for c in branches]
        quota = [math.floor(x) for x in exact]
        by_remainder = sorted(range(len(branches)), key=lambda i: (quota[i] - exact[i], i))
        for i in by_remainder[: n - sum(quota)]:
            quota[i] += 1
        schedule = [i for i, q in enumerate(quota) for _ in range(q)]
        rng.shuffle(schedule)
        records = []
        for slot in tqdm(schedule, desc=f"world: {dataset}/{split}", unit="q", mininterval=2, leave=False):
            rec = branches[slot].draw(rng) or root.draw(rng)
            if rec is None:
                raise ValueError(
                    f"world too small for the requested questions: set '{dataset}/{split}' needs {n} distinct "
                    f"questions but only {len(records)} could be made (n_entities={self.cfg.n_entities}, after "
                    f"the sets made before it); raise world.n_entities or lower the question counts")
            rec["id"] = f"{dataset}-{split}-{len(records)}"
            records.append(rec)
        return records


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------

def generate_world(cfg: WorldConfig) -> World:
    """Build the whole world in memory: entities, passages, then the eval sets and the train sets.

    Eval sets are made first (the order is fixed), so a world too small for everything fails on the
    train sets, with a ValueError that names the set and how many questions were possible.
    """
    entities = _Builder(cfg).make_entities()
    writer = _Writer(cfg, entities)
    writer.entity_passages()
    writer.mention_passages()
    qa = _QA(cfg, entities)
    sets: dict[str, dict[str, list[dict]]] = {}
    for dataset, split in PAPER_EVAL_SPLITS.items():
        n = cfg.bamboogle_questions if dataset == "bamboogle" else cfg.test_questions
        sets.setdefault(dataset, {})[split] = qa.make_set(dataset, split, n)
    n_nq = round(cfg.train_questions * NQ_TRAIN_SHARE)
    for dataset, n in zip(PAPER_TRAIN_SETS, (n_nq, cfg.train_questions - n_nq)):
        if n > 0:
            sets[dataset][TRAIN_SPLIT] = qa.make_set(dataset, TRAIN_SPLIT, n)
    return World(cfg, entities, writer.passages, sets)


def write_world(world: World, qa_dir: Path, corpus_path: Path) -> dict:
    """Write ``<qa_dir>/<dataset>/<split>.jsonl`` and the corpus jsonl, each atomically; return a
    manifest (sizes, question types, config) for the stage to save as JSON."""
    qa_dir, corpus_path = Path(qa_dir), Path(corpus_path)
    with atomic_file(corpus_path) as f:
        for p in tqdm(world.passages, desc="world: writing corpus", unit="passage", mininterval=2):
            f.write(passage_line(p.id, p.contents))
    qa_counts, qa_types = {}, {}
    with atomic_dir(qa_dir) as tmp:
        for dataset, split, records in world.qa_sets():
            write_qa_file(records, qa_path(tmp, dataset, split), f"world: writing {dataset}/{split}")
            qa_counts[f"{dataset}/{split}"] = len(records)
            qa_types[f"{dataset}/{split}"] = dict(sorted(Counter(r["metadata"]["type"] for r in records).items()))
    kinds = Counter(p.kind for p in world.passages)
    return {
        "n_entities": len(world.entities),
        "entities_by_type": dict(Counter(e.type for e in world.entities)),
        "n_passages": len(world.passages),
        "passages_by_kind": {k: kinds[k] for k in ("main", "section", "mention")},
        "passages_per_entity": round(len(world.passages) / len(world.entities), 3),
        "qa": qa_counts,
        "question_types": qa_types,
        "config": dataclasses.asdict(world.config),
    }
