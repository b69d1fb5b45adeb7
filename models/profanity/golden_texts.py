"""Input texts of models/profanity/golden.json: hand-written cases plus a
deterministic generator. Imported by export.py; nothing here touches the model.

Invisible or confusable characters are written as \\u escapes so that the
source says exactly which code point is meant.

The generator uses its own PRNG (splitmix64 on Python ints) rather than the
`random` module, so the texts depend on nothing but this file and the
vocabulary it is given.
"""

# (source tag, text). Tags only help a person reading golden.json.
HAND = [
    # --- clean English ---------------------------------------------------
    ("clean", "Hello there, how are you doing today?"),
    ("clean", "predict() takes an array and returns a 1 for each string if it is offensive, else 0."),
    ("clean", "predict_prob() takes an array and returns the probability each string is offensive"),
    ("clean", "Thanks for the quick reply, I appreciate your help with the article."),
    ("clean", "The meeting has been moved to Thursday at 3pm in room 204."),
    ("clean", "Please cite your sources when you edit the Wikipedia page."),
    ("clean", "I apologize for the confusion; the paper was published in early November."),
    ("clean", "The BBC reported extensive studies on the experiment."),
    ("clean", "Could you review my pull request when you have a minute?"),
    ("clean", "What a lovely garden, the roses are blooming beautifully."),
    ("clean", "The weather in Dallas is hot and humid during the summer."),
    ("clean", "Homo sapiens evolved in Africa according to most researchers."),
    ("clean", "I disagree with your edit, but let's discuss it on the talk page."),
    ("clean", "This article needs more references to reliable sources."),
    ("clean", "Welcome to Wikipedia! Here are some tips to get started."),
    ("clean", "The quick brown fox jumps over the lazy dog."),
    ("clean", "Happy birthday! Hope you have a wonderful day."),
    ("clean", "The cat sat on the mat and purred quietly."),
    ("clean", "We should schedule a follow-up call next week."),
    ("clean", "Saint Laurent is a fashion house founded in 1961."),
    # --- profane / offensive -----------------------------------------------
    ("profane", "fuck you"),
    ("profane", "go to hell, you scum"),
    ("profane", "You cocksucker"),
    ("profane", "this is bullshit"),
    ("profane", "shut up you stupid idiot"),
    ("profane", "what the fuck is wrong with you"),
    ("profane", "you are a complete asshole"),
    ("profane", "stop being such a bitch"),
    ("profane", "holy shit that was close"),
    ("profane", "this movie sucks ass"),
    ("profane", "you dumbass moron"),
    ("profane", "damn it, crap, piss off"),
    ("profane", "he is a jerk and a bastard"),
    ("profane", "fucking hell"),
    ("profane", "motherfucker"),
    ("profane", "son of a bitch"),
    ("profane", "kiss my ass"),
    ("profane", "you're such a dick"),
    ("profane", "eat shit and die"),
    ("profane", "what an idiotic, stupid comment"),
    # --- mixed case ----------------------------------------------------------
    ("case", "FUCK YOU"),
    ("case", "FuCk YoU"),
    ("case", "Shit Happens"),
    ("case", "HELLO THERE FRIEND"),
    ("case", "iDiOt"),
    ("case", "BULLSHIT!!!"),
    ("case", "You Are An IDIOT And A MORON"),
    ("case", "tHaNkS fOr ThE hElP"),
    # --- punctuation, separators, tokenization edges ---------------------------
    ("punct", "f.u.c.k y.o.u"),
    ("punct", "f*ck y0u"),
    ("punct", "sh!t"),
    ("punct", "fuck,shit;bitch:ass"),
    ("punct", "(fuck)[shit]{bitch}<ass>"),
    ("punct", "fuck-you shit-head"),
    ("punct", "don't won't can't you're it's"),
    ("punct", "don\u2019t you\u2019re it\u2019s"),
    ("punct", "\"quoted\" 'single' `back`"),
    ("punct", "email: someone@example.com, url: https://example.org/path?q=fuck&x=1"),
    ("punct", "#hashtag @mention $dollar %percent ^caret &amp *star"),
    ("punct", "...!!!???---"),
    ("punct", "a-b-c-d-e-f"),
    ("punct", "fuck\nyou\tshit\r\nbitch\x0bass\x0cdamn"),
    ("punct", "fuck\x00you"),
    ("punct", "idiot\u2028moron\u2029jerk\x85stupid"),
    ("punct", "idiot\u00a0moron\u2003jerk\u3000stupid"),
    ("punct", "==External links== [[User talk:Example|talk]] {{cite web}}"),
    ("punct", "__TOC__ __NOTOC__ ___"),
    ("punct", "<div style=\"width:0px\">fuck</div>"),
    # --- underscores (\w includes '_') ---------------------------------------
    ("underscore", "user_talk wikipedia_talk fair_use"),
    ("underscore", "fuck_you shit_head"),
    ("underscore", "_fuck_ __shit__"),
    ("underscore", "__"),
    ("underscore", "snake_case_identifier_name"),
    ("underscore", "articles_for_deletion"),
    ("underscore", "_noticeboard"),
    # --- numbers -------------------------------------------------------------
    ("numbers", "1000 100 10 1"),
    ("numbers", "3.14159 2.71828"),
    ("numbers", "call 555-1234 or 0800 000 000"),
    ("numbers", "0px 10px 100%"),
    ("numbers", "2024-01-15T10:30:00Z"),
    ("numbers", "f4ck y0u b1tch"),
    ("numbers", "sh1t 5hit $hit"),
    ("numbers", "123abc abc123 a1 1a"),
    ("numbers", "x\u00b2 x\u00b3 \u00bd \u2460\u2461 \u2474 \u2155"),
    ("numbers", "\u2160\u2161\u2162 \u216b \u217b \u2170\u2171"),
    ("numbers", "\u0661\u0662\u0663 \u0967\u0968 \uff11\uff10\uff10 \U0001d7ce\U0001d7cf"),
    ("numbers", "\u0661\u0660 10 \u0967\u0966"),
    # --- accents and composed/decomposed forms ---------------------------------
    ("accents", "Beyonc\u00e9 is a Pok\u00e9mon fan"),
    ("accents", "BEYONC\u00c9 POK\u00c9MON"),
    ("accents", "Beyonce\u0301 Poke\u0301mon"),
    ("accents", "Jos\u00e9 Jose\u0301 JOS\u00c9"),
    ("accents", "exp\u00e9rt tr\u00e1cht m\u00edkka"),
    ("accents", "EXP\u00c9RT TR\u00c1CHT M\u00cdKKA"),
    ("accents", "caf\u00e9 na\u00efve r\u00e9sum\u00e9 fa\u00e7ade"),
    ("accents", "na\u0131ve \u0131diot \u0130diot IDIOT"),
    ("accents", "Stra\u00dfe STRASSE \u1e9e"),
    ("accents", "\u00c5ngstr\u00f6m \u212bngstr\u00f6m"),
    # --- unicode tricks --------------------------------------------------------
    ("unicode", "FUC\u212a YOU"),
    ("unicode", "fuc\u212a"),
    ("unicode", "D\u0130CK SH\u0130T"),
    ("unicode", "\u0130\u0130 \u0130a a\u0130 \u0130\u0130\u0130"),
    ("unicode", "fu\u200bck"),
    ("unicode", "fu\u200cck fu\u200dck"),
    ("unicode", "fu\u00adck"),
    ("unicode", "f\u0336u\u0336c\u0336k\u0336"),
    ("unicode", "fu\u0301ck sh\u0308it"),
    ("unicode", "\uff46\uff55\uff43\uff4b \uff59\uff4f\uff55"),
    ("unicode", "\uff26\uff35\uff23\uff2b"),
    ("unicode", "\U0001d41f\U0001d42e\U0001d41c\U0001d424"),
    ("unicode", "\u0192uck"),
    ("unicode", "\u0455hit \u0430ss"),
    ("unicode", "fuck\u203fyou fuck\u2040you fuck\ufe4fyou"),
    ("unicode", "fuck\u00b7you fuck\u0387you"),
    ("unicode", "fuck\u02bcyou fuck\u02b0you"),
    ("unicode", "shit\u0345 shit\u0903x"),
    ("unicode", "\u0928\u092e\u0938\u094d\u0924\u0947 idiot"),
    ("unicode", "\ufeffidiot\ufeff"),
    ("unicode", "id\u2060iot mo\u180eron"),
    ("unicode", "\u2c6f\u2c6f snun\u2c6fw SNUN\u2c6fW snun\u0250w"),
    ("unicode", "\u00b5\u03b5\u03bb \u03bc\u03b5\u03bb \u039c\u0395\u039b"),
    ("unicode", "\u03b2command \u0392COMMAND \u03d0command"),
    # Greek final sigma: Python's str.lower() picks \u03c2 by context.
    ("sigma", "\u0395\u03a4\u0397\u03a4\u0397\u03a3"),
    ("sigma", "\u03b5\u03c4\u03b7\u03c4\u03b7\u03c2"),
    ("sigma", "\u03b5\u03c4\u03b7\u03c4\u03b7\u03c3"),
    ("sigma", "\u0395\u03a4\u0397\u03a4\u0397\u03a3.A"),
    ("sigma", "\u0395\u03a4\u0397\u03a4\u0397\u03a3. A"),
    ("sigma", "\u0395\u03a4\u0397\u03a4\u0397\u03a3'S"),
    ("sigma", "\u0395\u03a4\u0397\u03a4\u0397\u03a3\u0301"),
    ("sigma", "\u0395\u03a4\u0397\u03a4\u0397\u03a3\u0301 x"),
    ("sigma", "\u0395\u03a4\u0397\u03a4\u0397\u03a3:\u24b6"),
    ("sigma", "\u0395\u03a4\u0397\u03a4\u0397\u03a3 \u03a3 \u03a3\u03a3 x\u03a3"),
    ("sigma", "\u03b5\u03c4\u03b7\u03c4\u03b7\u03a3\u00ad"),
    ("sigma", ".\u0395\u03a4\u0397\u03a4\u0397\u03a3."),
    # --- emoji ---------------------------------------------------------------
    ("emoji", "\U0001f4a9shit\U0001f4a9"),
    ("emoji", "you \U0001f595 idiot"),
    ("emoji", "\U0001f600\U0001f601\U0001f602"),
    ("emoji", "fuck\U0001f3fbyou"),
    ("emoji", "1\ufe0f\u20e3 2\ufe0f\u20e3 10\ufe0f\u20e3"),
    ("emoji", "\U0001f1fa\U0001f1f8 \U0001f1ec\U0001f1e7 flags"),
    ("emoji", "\U0001f468\u200d\U0001f469\u200d\U0001f467 family"),
    ("emoji", "love \u2764\ufe0f you"),
    ("emoji", "\u24b6\u24b7\u24b8 \U0001f170\U0001f171 \U0001f130"),
    # --- non-Latin scripts -----------------------------------------------------
    ("script", "\u8fd9\u662f\u4e00\u4e2a\u6d4b\u8bd5"),
    ("script", "\u7adc\u9f99"),
    ("script", "\u7adc\u9f99\u306f"),
    ("script", "\u7adc\u9f99 \u8ff7\u60d1 \u9023\u7d61 \u898b\u5b66"),
    ("script", "\u8056\u3084\u3084"),
    ("script", "\u3054\u8ff7\u60d1\u3092\u304a\u304b\u3051\u3057\u307e\u3057\u305f"),
    ("script", "\u30d0\u30ab\u91ce\u90ce"),
    ("script", "\u12cd\u12ed\u12ed\u1275"),
    ("script", "\u12cd\u12ed\u12ed\u1275 \u12cd\u12ed\u12ed\u1275"),
    ("script", "\u041f\u0440\u0438\u0432\u0435\u0442, \u043a\u0430\u043a \u0434\u0435\u043b\u0430?"),
    ("script", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645"),
    ("script", "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd"),
    ("script", "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8"),
    ("script", "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a"),
    ("script", "\u0939\u093f\u0928\u094d\u0926\u0940 \u092e\u0947\u0902 \u0932\u093f\u0916\u093e"),
    ("script", "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u03ba\u03cc\u03c3\u03bc\u03b5"),
    ("script", "\u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0"),
    ("script", "\u0540\u0561\u0575\u0565\u0580\u0565\u0576"),
    ("script", "Schei\u00dfe, du Idiot! Arschloch!"),
    ("script", "Putain de merde, connard!"),
    ("script", "\u00a1Vete a la mierda, pendejo!"),
    ("script", "Vaffanculo, stronzo"),
    ("script", "mixed \u0444\u0443\u043a shit \u5c4e"),
    # --- empty after tokenization ------------------------------------------------
    ("empty", ""),
    ("empty", " "),
    ("empty", "a"),
    ("empty", "I"),
    ("empty", "a b c d e f g"),
    ("empty", "!!!"),
    ("empty", "\U0001f600"),
    ("empty", "\n\t\r "),
    ("empty", "the and of to is it that this"),
    ("empty", "i am a"),
    ("empty", "\u0301\u0302\u0303"),
    ("empty", "\u200b\u200c\u200d"),
    ("empty", "zzqxj qqqzzv"),
    ("empty", "\u0130"),
    ("empty", "x\u0130"),
    # --- repetition (term frequency > 1) ----------------------------------------
    ("repeat", "fuck fuck fuck"),
    ("repeat", "idiot " * 50),
    ("repeat", "thanks " * 7 + "fuck"),
    ("repeat", "fuck " + "thanks " * 40),
    ("repeat", ("shit " * 3 + "please " * 5) * 4),
]


def _long_texts():
    """Very long inputs (the API allows 20,000 characters per text)."""
    para = (
        "The committee reviewed the proposal and agreed to publish the results "
        "after a further round of peer review. "
    )
    out = [
        ("long", (para * 200)[:20000]),
        ("long", (para * 150)[:19990] + " fuck you"),
        ("long", "fuck " * 4000),
        ("long", ("idiot moron " * 900) + ("thank you kindly " * 300)),
        ("long", "a" * 20000),
        ("long", "ab" * 10000),
        ("long", ("\u7adc\u9f99 " * 6000)[:20000]),
        ("long", "x" + "_" * 19998 + "y"),
    ]
    return out


def _splitmix64(seed):
    state = seed & 0xFFFFFFFFFFFFFFFF

    def nxt():
        nonlocal state
        state = (state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        return z ^ (z >> 31)

    return nxt


class _Rng:
    def __init__(self, seed):
        self._next = _splitmix64(seed)

    def below(self, n):
        # Modulo bias is irrelevant here; determinism is what matters.
        return self._next() % n

    def choice(self, seq):
        return seq[self.below(len(seq))]

    def chance(self, num, den):
        return self.below(den) < num


# Profane words for the generator (no slurs), chosen by hand.
PROFANE = [
    "fuck", "fucking", "fucked", "fucker", "shit", "shitty", "bullshit",
    "bitch", "bitches", "ass", "asshole", "assholes", "dumbass", "idiot",
    "idiots", "idiotic", "stupid", "moron", "dick", "cock", "pussy", "crap",
    "suck", "sucks", "bastard", "jerk", "motherfucker", "damn", "hell", "piss",
]

SEPARATORS = [
    " ", " ", " ", "  ", ", ", ". ", "! ", "? ", "\n", "\t", " - ", "; ",
    ": ", "/", "|", "...", " (", ") ", "\u00a0", "\u3000", "\u2014", "\U0001f600",
    "\u200b", "'", "\u2019", "\"", "*", "#", "@",
]

# Characters that glue onto a word or split it, for the "tricky" family.
GLUE = [
    "_", "0", "7", "\u0301", "\u0308", "\u200d", "\u00ad", "\u0130", "\u212a",
    "\u00e9", "\u03a3", "\u0131", "\u02b0", "\u00b2", "\u0663", "\u2160",
    "\uff41", "\u0903", "\u203f", "-", ".", "'", "\U0001f3fb", "\u4e00",
]

# Code point ranges for the "soup" family: many scripts, marks and symbols.
SOUP_RANGES = [
    (0x20, 0x7E), (0xA0, 0x24F), (0x250, 0x2FF), (0x300, 0x36F),
    (0x370, 0x3FF), (0x400, 0x4FF), (0x530, 0x58F), (0x590, 0x5FF),
    (0x600, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x10A0, 0x10FF),
    (0x1200, 0x137F), (0x1E00, 0x1EFF), (0x1F00, 0x1FFF), (0x2000, 0x206F),
    (0x2100, 0x218F), (0x2460, 0x24FF), (0x2C60, 0x2C7F), (0x3000, 0x30FF),
    (0x4E00, 0x4FFF), (0x9F00, 0x9FFF), (0xAC00, 0xAD00), (0xFB00, 0xFB4F),
    (0xFE00, 0xFE6F), (0xFF00, 0xFFEF), (0x10400, 0x1044F),
    (0x1D400, 0x1D7FF), (0x1F100, 0x1F1FF), (0x1F300, 0x1F6FF),
    (0x20000, 0x2000F), (0xE0000, 0xE007F),
]


def _case(rng, word):
    k = rng.below(6)
    if k == 0:
        return word.upper()
    if k == 1:
        return word.title()
    if k == 2:
        return "".join(c.upper() if i % 2 else c for i, c in enumerate(word))
    return word


def generate(terms):
    """Deterministic texts built from the vocabulary `terms` (column order).

    Returns (source tag, text) pairs.
    """
    rng = _Rng(0x70726F66616E6974)  # "profanit"
    # Sampling pool: every term, minus slur-like substrings.
    pool = [t for t in terms if "nig" not in t and "fag" not in t]
    non_ascii = [t for t in terms if not t.isascii()]
    out = []

    # 1. Random vocabulary sentences with random casing and separators.
    for _ in range(90):
        n = 1 + rng.below(12)
        words = []
        for _ in range(n):
            src = PROFANE if rng.chance(1, 4) else pool
            words.append(_case(rng, rng.choice(src)))
        text = ""
        for i, w in enumerate(words):
            if i:
                text += rng.choice(SEPARATORS)
            text += w
        out.append(("gen-words", text))

    # 2. Profane words glued to or split by tricky characters.
    for _ in range(60):
        w = rng.choice(PROFANE)
        pos = rng.below(len(w) + 1)
        g = rng.choice(GLUE)
        glued = w[:pos] + g + w[pos:]
        other = _case(rng, rng.choice(pool))
        out.append(("gen-glue", f"{_case(rng, glued)} {other}{rng.choice(GLUE)}"))

    # 3. Term frequencies > 1, mixing clean and profane terms.
    for _ in range(30):
        parts = []
        for _ in range(1 + rng.below(4)):
            src = PROFANE if rng.chance(1, 3) else pool
            parts.extend([rng.choice(src)] * (1 + rng.below(9)))
        # Deterministic shuffle (Fisher-Yates).
        for i in range(len(parts) - 1, 0, -1):
            j = rng.below(i + 1)
            parts[i], parts[j] = parts[j], parts[i]
        out.append(("gen-repeat", " ".join(parts)))

    # 4. Code point soup from many blocks, sometimes with vocabulary terms.
    for _ in range(40):
        chars = []
        for _ in range(1 + rng.below(40)):
            lo, hi = rng.choice(SOUP_RANGES)
            chars.append(chr(lo + rng.below(hi - lo + 1)))
        text = "".join(chars)
        if rng.chance(1, 2):
            text += " " + rng.choice(non_ascii + PROFANE) + " " + "".join(chars[:3])
        out.append(("gen-soup", text))

    # 5. Many distinct columns per text, so that the golden set covers a
    #    large part of the vocabulary (a wrong column order shows up here).
    for _ in range(12):
        picked = {}
        while len(picked) < 250:
            t = rng.choice(pool)
            picked.setdefault(t, _case(rng, t))
        out.append(("gen-bulk", " ".join(picked.values())))

    # 6. The non-ASCII terms themselves, upper-cased, and glued.
    for t in non_ascii:
        out.append(("gen-nonascii", f"{t} {t.upper()} {t}{rng.choice(GLUE)} {rng.choice(pool)}"))

    return out


def all_texts(terms):
    """Every golden input, in golden.json order: (source tag, text)."""
    return HAND + _long_texts() + generate(terms)
