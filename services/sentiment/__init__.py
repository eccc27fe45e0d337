"""Sentiment: scores each comment (label, score, confidence, language, model) and flags charter violations."""
