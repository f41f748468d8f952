"""Result records -> leaderboard tables (and, later, comparisons and a static site). Reads records only."""

from leaderboard.table import FORMATS, Leaderboard, build_leaderboard, render

__all__ = ["FORMATS", "Leaderboard", "build_leaderboard", "render"]
