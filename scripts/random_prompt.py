#!/usr/bin/env python3
"""Prints N token ids (1000 to 29 999, seed 0): the prompt that every benchmark
script gives both programs, ours and mlx-lm, so that they run the same one.

    python3 scripts/random_prompt.py N > prompt
"""
import random
import sys

if len(sys.argv) != 2 or not sys.argv[1].isdigit():
    sys.exit("usage: random_prompt.py N (how many token ids)")
random.seed(0)
print(" ".join(str(random.randrange(1000, 30000)) for _ in range(int(sys.argv[1]))))
