"""Evaluation suites: cases + scorers, runs through the gateway, paired comparisons, and gates on rollouts."""
