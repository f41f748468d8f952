"""Result records -> leaderboard tables and a static site (`harness.leaderboard.site`). Reads records only."""

from harness.leaderboard.table import FORMATS, Leaderboard, build_leaderboard, render, sort_board

__all__ = ["FORMATS", "Leaderboard", "build_leaderboard", "render", "sort_board"]
