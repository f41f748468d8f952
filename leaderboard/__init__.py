"""Result records -> leaderboard tables and a static site (`leaderboard.site`). Reads records only."""

from leaderboard.table import FORMATS, Leaderboard, build_leaderboard, render, sort_board

__all__ = ["FORMATS", "Leaderboard", "build_leaderboard", "render", "sort_board"]
