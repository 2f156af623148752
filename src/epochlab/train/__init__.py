"""The training loop, its state, its History, and the accounting they share."""
