#!/usr/bin/env python3
"""The small training corpus the README's training example uses: `data/tinytales.txt`
(synthetic children's stories, one per line, from a seeded grammar — no copyright, no
download) and `data/tinytales-tokenizer.json` (a byte-level BPE of 512 tokens trained on
it with the `tokenizers` package, `<|endoftext|>` its first token).

Usage: python3 tools/make_tiny_corpus.py [--stories 4000]
Seeded: running it twice writes identical files.
"""

import argparse
import os
import random

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NAMES = ["Tom", "Lily", "Max", "Mia", "Ben", "Sue", "Sam", "Anna", "Tim", "Lucy", "Jack", "Emma"]
ANIMALS = ["cat", "dog", "bird", "fox", "rabbit", "duck", "mouse", "bear", "frog", "owl"]
ADJS = ["little", "big", "happy", "shy", "brave", "kind", "small", "funny", "sleepy", "curious"]
PLACES = ["park", "garden", "forest", "house", "river", "field", "yard", "town", "school", "hill"]
VERBS = ["play", "run", "jump", "sing", "read", "swim", "dance", "draw", "climb", "explore"]
THINGS = ["ball", "kite", "book", "hat", "box", "cake", "boat", "flower", "stone", "toy"]
COLORS = ["red", "blue", "green", "yellow", "pink", "white", "brown", "orange"]
FEELINGS = ["happy", "sad", "scared", "excited", "tired", "proud", "surprised"]


def story(r):
    name, friend = r.sample(NAMES, 2)
    a, b = r.sample(ANIMALS, 2)
    place = r.choice(PLACES)
    verb, verb2 = r.sample(VERBS, 2)
    thing, color = r.choice(THINGS), r.choice(COLORS)
    feel, feel2 = r.sample(FEELINGS, 2)
    s = [
        f"Once upon a time, there was a {r.choice(ADJS)} {a} named {name}.",
        f"{name} liked to {verb} in the {place}.",
    ]
    if r.random() < 0.5:
        s.append(f"One day, {name} found a {color} {thing}.")
        s.append(f"{name} was very {feel}.")
    s.append(f"Then {name} met a {r.choice(ADJS)} {b} named {friend}.")
    if r.random() < 0.5:
        s.append(f'"Do you want to {verb2} with me?" asked {name}.')
        s.append(f'"Yes!" said {friend}.')
    s.append(f"They {verb2} together in the {place} all day.")
    s.append(f"At the end of the day, {name} and {friend} were {feel2} and tired.")
    s.append("The end.")
    return " ".join(s)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--stories", type=int, default=1500)
    a = p.parse_args()
    r = random.Random(1234)
    lines = [story(r) for _ in range(a.stories)]
    os.makedirs(os.path.join(ROOT, "data"), exist_ok=True)
    text = os.path.join(ROOT, "data", "tinytales.txt")
    with open(text, "w") as f:
        f.write("\n".join(lines) + "\n")

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([text], trainer)
    tok.save(os.path.join(ROOT, "data", "tinytales-tokenizer.json"))
    print(f"{len(lines)} stories, {os.path.getsize(text)} bytes; vocab {tok.get_vocab_size()}")


if __name__ == "__main__":
    main()
