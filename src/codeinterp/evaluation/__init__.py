"""`codeinterp eval`: measure how often the loop solves tasks."""
