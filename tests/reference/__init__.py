"""Reference implementations of the official attention formulas, written for the tests.

Each follows its paper and its authors' code (not the seed blog posts, whose bugs are
listed in shared/seeds/NOTES.md and fixed here). They are deliberately plain: explicit
permutes and pooling functions, no einops, nothing shared with dynattn.
"""
